"""Convert one of our checkpoints (lit_model.pth + model_config.yaml) back to the Hugging Face format.

    python scripts/convert_lit_checkpoint.py --checkpoint_dir out/merged --output_dir out/hf

Writes config.json (so `transformers.AutoModelForCausalLM.from_pretrained(output_dir)` builds the same model),
model.safetensors (sharded with an index when larger than --max_shard_size) and copies the tokenizer files.
Qwen-1 checkpoints are written as Qwen2ForCausalLM, which computes the same function without trust_remote_code.
"""

import json
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch

wd = Path(__file__).parent.parent.resolve()
sys.path.append(str(wd))

from lit_gpt.config import Config  # noqa: E402
from lit_gpt.hf_weights import convert_lit_to_hf, hf_architecture, hf_config_from  # noqa: E402
from lit_gpt.utils import (  # noqa: E402
    CHECKPOINT_FILENAME, UserError, atomic_path, check_valid_checkpoint_dir, cli, lazy_load, write_json,
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "qwen.tiktoken")
# Fields of the original config.json worth keeping (they are about the tokenizer, not the architecture).
KEPT_HF_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def save_safetensors(weights: dict[str, torch.Tensor], output_dir: Path, max_shard_size: str) -> list[Path]:
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(weights, max_shard_size=max_shard_size)
    written = []
    for filename, names in split.filename_to_tensors.items():
        with atomic_path(output_dir / filename) as tmp:
            save_file({n: weights[n] for n in names}, str(tmp), metadata={"format": "pt"})
        written.append(output_dir / filename)
    stale = output_dir / "model.safetensors.index.json"
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in weights.values())},
                 "weight_map": split.tensor_to_filename}
        write_json(index, stale)
    else:
        stale.unlink(missing_ok=True)  # an index from an earlier sharded export would shadow the new file
    return written


def convert_lit_checkpoint(
    *,
    checkpoint_dir: Path,
    output_dir: Path,
    max_shard_size: str = "5GB",
    architecture: Optional[str] = None,
) -> Path:
    """Write a lit_gpt checkpoint in the Hugging Face format.

    Args:
        checkpoint_dir: The directory with lit_model.pth and model_config.yaml (plus tokenizer files).
        output_dir: Where config.json, the *.safetensors weights and the tokenizer files go.
        max_shard_size: Largest safetensors file before the weights are sharded, e.g. "5GB" or "500MB".
        architecture: Force a transformers architecture (default: the one the config describes).
    """
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    check_valid_checkpoint_dir(checkpoint_dir)
    if output_dir.resolve() == checkpoint_dir.resolve():
        raise UserError("--output_dir must differ from --checkpoint_dir (the tokenizer files are copied over)")
    config = Config.from_checkpoint(checkpoint_dir)
    arch = architecture or hf_architecture(config)
    hf_config = hf_config_from(config, arch)

    state_dict = lazy_load(checkpoint_dir / CHECKPOINT_FILENAME)
    state_dict = state_dict.get("model", state_dict)
    weights = convert_lit_to_hf(state_dict, config, arch)
    dtypes = {t.dtype for t in weights.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        hf_config["torch_dtype"] = str(dtypes.pop()).removeprefix("torch.")

    original = checkpoint_dir / "config.json"
    if original.is_file():
        try:
            old = json.loads(original.read_text(encoding="utf-8"))
            hf_config.update({k: old[k] for k in KEPT_HF_FIELDS if k in old})
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            pass  # the token ids are a courtesy; the tokenizer files carry them too

    output_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors(weights, output_dir, max_shard_size)
    write_json(hf_config, output_dir / "config.json")
    for name in TOKENIZER_FILES:
        if (checkpoint_dir / name).is_file():
            shutil.copyfile(checkpoint_dir / name, output_dir / name)
    print(f"wrote {arch} checkpoint to {output_dir}", file=sys.stderr)
    return output_dir


if __name__ == "__main__":
    cli(convert_lit_checkpoint)
