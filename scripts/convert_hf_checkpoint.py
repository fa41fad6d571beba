"""Convert a Hugging Face checkpoint directory into ours: `lit_model.pth` and `model_config.yaml` beside it.

    python scripts/convert_hf_checkpoint.py --checkpoint_dir checkpoints/Qwen/Qwen2.5-7B

The conversion, and what each flag does: lit_gpt/convert_hf.py.
"""

from lit_gpt.convert_hf import convert_hf_checkpoint
from lit_gpt.utils import cli

__all__ = ["convert_hf_checkpoint"]

if __name__ == "__main__":
    cli(convert_hf_checkpoint)
