"""Convert a Hugging Face checkpoint directory into ours: `lit_model.pth` and `model_config.yaml` beside it.

    python scripts/convert_hf_checkpoint.py --checkpoint_dir checkpoints/Qwen/Qwen2.5-7B

The model config comes from --model_name, else from the directory name when it is a named config, else from the
directory's config.json. The weights are read shard by shard, so the conversion needs about one copy of the
weights in memory.
"""

import sys
from pathlib import Path
from typing import Optional

import torch


from lit_gpt.config import Config, config_fields_differ, name_to_config
from lit_gpt.families import can_hold, config_from_hf, family_of, hf_architecture, hf_family
from lit_gpt.hf_weights import check_state_dict, convert_hf_to_lit, hf_weight_files, iter_hf_weights
from lit_gpt.utils import CHECKPOINT_FILENAME, UserError, atomic_save, read_json_object

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_config(checkpoint_dir: Path, model_name: Optional[str], hf: Optional[dict]) -> Config:
    repo = {"org": checkpoint_dir.parent.name, "name": checkpoint_dir.name}
    name = model_name or (checkpoint_dir.name if checkpoint_dir.name in name_to_config else None)
    if name is not None:
        config = Config.from_name(name)  # ValueError with close names if unknown
        if hf is not None:
            derived = config_from_hf(hf, name=config.name)
            # The named config's vocab_size is the tokenizer's; config.json only knows the embedding rows.
            # The architecture is checked against config.json's on its own (convert_hf_checkpoint).
            diff = config_fields_differ(config, derived, ignore=("name", "hf_config", "architecture", "vocab_size",
                                                                 "padding_multiple"))
            if diff and model_name is None:
                # Only the directory's name says which model it is; config.json describes the weights it holds.
                print(f"warning: {checkpoint_dir / 'config.json'} differs from the named config {name!r} in "
                      f"{sorted(diff)}; using config.json", file=sys.stderr)
                return config_from_hf(hf, name=checkpoint_dir.name, hf_repo=repo)
            if diff:
                print(f"warning: the named config {name!r} differs from {checkpoint_dir / 'config.json'} in "
                      f"{diff}; using the named config", file=sys.stderr)
        return config
    if hf is None:
        raise UserError(f"{checkpoint_dir}: no config.json and {checkpoint_dir.name!r} is not a known model name; "
                        "pass --model_name")
    return config_from_hf(hf, name=checkpoint_dir.name, hf_repo=repo)


def convert_hf_checkpoint(
    *,
    checkpoint_dir: Path,
    model_name: Optional[str] = None,
    dtype: Optional[str] = None,
) -> Path:
    """Convert a downloaded Hugging Face checkpoint to lit_gpt's format, in place.

    Args:
        checkpoint_dir: The directory holding config.json and the *.safetensors or pytorch_model*.bin weights.
        model_name: A named config (lit_gpt/config.py) to use instead of the one derived from config.json.
        dtype: Store the weights as float32, bfloat16 or float16 (default: as in the checkpoint).
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise UserError(f"checkpoint dir {str(checkpoint_dir)!r} does not exist: run scripts/download.py first")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    hf = read_json_object(checkpoint_dir / "config.json")
    config = resolve_config(checkpoint_dir, model_name, hf)
    files = hf_weight_files(checkpoint_dir)
    if hf is not None:
        source = hf_family(hf)
        described = hf_architecture(config)
        if not can_hold(source, described):
            raise UserError(f"{config.name} is a {described} model, but {checkpoint_dir / 'config.json'} holds a "
                            f"{source.name}: pick a matching --model_name")
    else:
        source = family_of(config)  # without config.json the named config says how the weights are named
    arch = source.name
    config.architecture = arch  # saved in model_config.yaml: how this checkpoint's weights were named

    state_dict = convert_hf_to_lit(iter_hf_weights(files, progress=True), config, arch, DTYPES.get(dtype))
    check_state_dict(state_dict, config, str(checkpoint_dir))
    atomic_save(state_dict, checkpoint_dir / CHECKPOINT_FILENAME)
    config.save(checkpoint_dir)
    print(f"wrote {checkpoint_dir / CHECKPOINT_FILENAME} and model_config.yaml ({config.name or arch})",
          file=sys.stderr)
    return checkpoint_dir / CHECKPOINT_FILENAME

