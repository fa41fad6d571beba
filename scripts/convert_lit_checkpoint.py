"""Convert one of our checkpoints (lit_model.pth + model_config.yaml) to the Hugging Face format, a PEFT adapter or GGUF.

    python scripts/convert_lit_checkpoint.py --checkpoint_dir out/merged --output_dir out/hf
    python scripts/convert_lit_checkpoint.py --checkpoint_dir BASE --lora_path RUN/final/lit_model.pth.lora \
        --format peft --output_dir out/adapter
    python scripts/convert_lit_checkpoint.py --checkpoint_dir out/merged --format gguf --dtype q8_0 --output_dir out/gguf

The conversion, and what each flag does: lit_gpt/convert_lit.py.
"""

from lit_gpt.convert_lit import convert_lit_checkpoint
from lit_gpt.utils import cli

__all__ = ["convert_lit_checkpoint"]

if __name__ == "__main__":
    cli(convert_lit_checkpoint)
