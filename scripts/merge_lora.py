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

import torch
import yaml

wd = Path(__file__).parent.parent.resolve()
sys.path.append(str(wd))

from lit_gpt.config import Config  # noqa: E402
from lit_gpt.lora import LoRAConfig, inject_lora, load_lora_state_dict, merge_lora, merged_state_dict  # noqa: E402
from lit_gpt.quantize import build_model  # noqa: E402
from lit_gpt.utils import (  # noqa: E402
    CHECKPOINT_FILENAME,
    UserError,
    atomic_save,
    check_valid_checkpoint_dir,
    cli,
    lazy_load,
)

HPARAMS_FILENAME = "hparams.yaml"
# Everything of a checkpoint dir besides the weights and the config travels along (tokenizer, generation config).
COPY_FILES = ("tokenizer.json", "tokenizer.model", "qwen.tiktoken", "tokenizer_config.json",
              "generation_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def find_hparams(lora_path: Path) -> Path:
    for candidate in (lora_path.parent / HPARAMS_FILENAME, lora_path.parent.parent / HPARAMS_FILENAME):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"{lora_path}: no {HPARAMS_FILENAME} beside it or in {lora_path.parent.parent} "
        "(merge needs the run's LoRA settings; point --lora_path into a finetune/lora.py out_dir)"
    )


def read_lora_run(lora_path: Path) -> tuple[LoRAConfig, dict, Path]:
    """(LoRA config, the run's hparams, the hparams file) of a finetune/lora.py LoRA weights file."""
    lora_path = Path(lora_path)
    if not lora_path.is_file():
        raise UserError(f"--lora_path {str(lora_path)!r}: no such file")
    hparams_path = find_hparams(lora_path)
    hparams = yaml.safe_load(hparams_path.read_text())
    if not isinstance(hparams, dict) or not isinstance(hparams.get("lora"), dict):
        raise UserError(f"{hparams_path}: no `lora` section (not written by finetune/lora.py?)")
    return LoRAConfig.from_dict(hparams["lora"]), hparams, hparams_path


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
    lora, hparams, hparams_path = read_lora_run(lora_path)
    trained_on = hparams.get("checkpoint_dir")
    if trained_on and Path(trained_on).resolve() != Path(checkpoint_dir).resolve():
        print(f"note: the run trained on {trained_on}, merging into {checkpoint_dir}", file=sys.stderr)
    if Path(out_dir).resolve() == Path(checkpoint_dir).resolve():
        raise UserError("--out_dir must differ from --checkpoint_dir (the base stays untouched)")

    model = merged_model(checkpoint_dir, lora_path, precision)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(merged_state_dict(model), out_dir / CHECKPOINT_FILENAME)
    model.config.save(out_dir)
    for name in COPY_FILES:
        if (Path(checkpoint_dir) / name).is_file():
            shutil.copyfile(Path(checkpoint_dir) / name, out_dir / name)
    print(f"merged {lora_path} ({hparams_path.name}: r={lora.r}, alpha={lora.alpha}) into {out_dir}")
    return out_dir


def merged_model(checkpoint_dir: Path, lora_path: Path, precision: Optional[str] = None) -> torch.nn.Module:
    """The base model (in `precision`, default the base's dtype) with the run's LoRA weights merged in."""
    lora, _, _ = read_lora_run(lora_path)
    config = Config.from_checkpoint(checkpoint_dir)
    base_path = Path(checkpoint_dir) / CHECKPOINT_FILENAME
    if precision is None:
        first = next(v for v in lazy_load(base_path).values() if torch.is_tensor(v) and v.is_floating_point())
        dtype = first.dtype
    else:
        from lit_gpt.utils import PRECISION_TO_DTYPE

        if precision not in PRECISION_TO_DTYPE:
            raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISION_TO_DTYPE)}")
        dtype = PRECISION_TO_DTYPE[precision]

    model = build_model(config, base_path, "cpu", dtype)
    inject_lora(model, lora)
    lora_weights = lazy_load(lora_path)
    try:
        load_lora_state_dict(model, lora_weights.get("model", lora_weights), str(lora_path))
    except ValueError as e:
        raise UserError(str(e)) from e
    merge_lora(model)  # unties a LoRA head from tied embeddings (config.tie_embeddings becomes False)
    return model


if __name__ == "__main__":
    cli(setup, as_positional=False)
