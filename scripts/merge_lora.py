"""Merge LoRA weights into their base model, giving an ordinary checkpoint dir.

    python scripts/merge_lora.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        --lora_path out/lora/smollm2/final/lit_model.pth.lora --out_dir checkpoints/smollm2-gsm8k

The LoRA configuration comes from the run's `hparams.yaml` (beside the LoRA file, else in the run dir above it), so
nothing has to be repeated. The base is loaded in full precision (also for QLoRA runs, whose 4-bit base cannot
hold a merged update), the merge is done in fp32 and the result keeps the base checkpoint's dtype.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Optional


from lit_gpt.lora import LoRAConfig, load_merged_model, merged_state_dict, read_lora_run
from lit_gpt.utils import (
    CHECKPOINT_FILENAME,
    UserError,
    atomic_save,
    check_valid_checkpoint_dir,
    cli,
)

# Everything of a checkpoint dir besides the weights and the config travels along (tokenizer, generation config).
COPY_FILES = ("tokenizer.json", "tokenizer.model", "qwen.tiktoken", "tokenizer_config.json",
              "generation_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def setup(
    checkpoint_dir: Path,
    lora_path: Path,
    out_dir: Path,
    precision: Optional[str] = None,
) -> Path:
    """Merges a LoRA run into its base model.

    Args:
        checkpoint_dir: the base checkpoint dir the LoRA run trained on.
        lora_path: the run's LoRA weights (OUT/final/lit_model.pth.lora or OUT/step-NNNNNN/lit_model.pth.lora).
        out_dir: where the merged checkpoint dir is written (lit_model.pth, model_config.yaml, tokenizer files).
        precision: dtype of the merged weights ("32-true", "bf16-true", "16-true"); default: the base's dtype.
    """
    check_valid_checkpoint_dir(checkpoint_dir)
    lora_path = Path(lora_path)
    hparams, hparams_path = read_lora_run(lora_path)
    trained_on = hparams.get("checkpoint_dir")
    if trained_on and Path(trained_on).resolve() != Path(checkpoint_dir).resolve():
        print(f"note: the run trained on {trained_on}, merging into {checkpoint_dir}", file=sys.stderr)
    if Path(out_dir).resolve() == Path(checkpoint_dir).resolve():
        raise UserError("--out_dir must differ from --checkpoint_dir (the base stays untouched)")

    lora = LoRAConfig.from_dict(hparams["lora"])
    model = load_merged_model(checkpoint_dir, lora_path, precision, hparams)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(merged_state_dict(model), out_dir / CHECKPOINT_FILENAME)
    model.config.save(out_dir)
    for name in COPY_FILES:
        if (Path(checkpoint_dir) / name).is_file():
            shutil.copyfile(Path(checkpoint_dir) / name, out_dir / name)
    print(f"merged {lora_path} ({hparams_path.name}: r={lora.r}, alpha={lora.alpha}) into {out_dir}")
    return out_dir


if __name__ == "__main__":
    cli(setup, as_positional=False)
