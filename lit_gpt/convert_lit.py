"""Convert one of our checkpoints (lit_model.pth + model_config.yaml) to the Hugging Face format, a PEFT adapter or GGUF.

    python scripts/convert_lit_checkpoint.py --checkpoint_dir out/merged --output_dir out/hf
    python scripts/convert_lit_checkpoint.py --checkpoint_dir BASE --lora_path RUN/final/lit_model.pth.lora \
        --format peft --output_dir out/adapter
    python scripts/convert_lit_checkpoint.py --checkpoint_dir out/merged --format gguf --dtype q8_0 --output_dir out/gguf

`--format hf` writes config.json (so `transformers.AutoModelForCausalLM.from_pretrained(output_dir)` builds the
same model), model.safetensors (sharded with an index when larger than --max_shard_size) and copies the tokenizer
files. Qwen-1 checkpoints are written as Qwen2ForCausalLM, which computes the same function without
trust_remote_code. `--format peft` writes adapter_config.json + adapter_model.safetensors for the `--format hf`
export of the base: `peft.PeftModel.from_pretrained(hf_model, output_dir)`. `--format gguf` writes
output_dir/model.gguf for llama.cpp / Ollama (Llama-family layouts); with --lora_path, hf and gguf export the
merged model.
"""

import json
import shutil
import sys
from pathlib import Path
from typing import Literal, Optional

import torch


from lit_gpt.config import Config
from lit_gpt.families import hf_architecture, hf_config_from
from lit_gpt.hf_weights import convert_lit_to_hf
from lit_gpt.lora import LoRAConfig, load_merged_model, merged_state_dict, read_lora_run
from lit_gpt.utils import (
    CHECKPOINT_FILENAME, UserError, atomic_path, check_valid_checkpoint_dir, lazy_load, write_json,
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
    format: Literal["hf", "peft", "gguf"] = "hf",
    lora_path: Optional[Path] = None,
    dtype: Literal["f32", "f16", "q8_0"] = "f16",
    max_shard_size: str = "5GB",
    architecture: Optional[str] = None,
) -> Path:
    """Write a lit_gpt checkpoint in the Hugging Face format, its LoRA run as a PEFT adapter, or as GGUF.

    Args:
        checkpoint_dir: The directory with lit_model.pth and model_config.yaml (plus tokenizer files).
        output_dir: Where the export goes (config.json + *.safetensors + tokenizer files; adapter_config.json +
            adapter_model.safetensors; model.gguf).
        format: "hf" (transformers), "peft" (the LoRA weights of --lora_path as a PEFT adapter) or "gguf" (llama.cpp).
        lora_path: A finetune/lora.py LoRA file (OUT/final/lit_model.pth.lora, its hparams.yaml beside it or one
            level up): required for peft; with hf or gguf the LoRA weights are merged into the export.
        dtype: GGUF weight type: f32, f16 or q8_0 (norms stay f32).
        max_shard_size: Largest safetensors file before the weights are sharded, e.g. "5GB" or "500MB".
        architecture: Force a transformers architecture (default: the one the config describes).
    """
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    check_valid_checkpoint_dir(checkpoint_dir)
    if output_dir.resolve() == checkpoint_dir.resolve():
        raise UserError("--output_dir must differ from --checkpoint_dir (the tokenizer files are copied over)")
    if format not in ("hf", "peft", "gguf"):
        raise UserError(f"--format {format!r}: choose hf, peft or gguf")
    if format == "peft" and lora_path is None:
        raise UserError("--format peft needs --lora_path (a finetune/lora.py OUT/final/lit_model.pth.lora)")
    config = Config.from_checkpoint(checkpoint_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if format == "peft":
        from lit_gpt.peft_export import ADAPTER_CONFIG_FILENAME, ADAPTER_WEIGHTS_FILENAME, convert_lora_to_peft
        from safetensors.torch import save_file

        org, name = config.hf_config.get("org"), config.hf_config.get("name")
        base = f"{org}/{name}" if org and name else str(checkpoint_dir)
        lora = LoRAConfig.from_dict(read_lora_run(Path(lora_path))[0]["lora"])
        lora_weights = lazy_load(lora_path)
        weights, adapter_config = convert_lora_to_peft(lora_weights.get("model", lora_weights), config, lora,
                                                       architecture, base)
        with atomic_path(output_dir / ADAPTER_WEIGHTS_FILENAME) as tmp:
            save_file(weights, str(tmp), metadata={"format": "pt"})
        write_json(adapter_config, output_dir / ADAPTER_CONFIG_FILENAME)
        print(f"wrote a PEFT LoRA adapter ({len(weights) // 2} modules) to {output_dir}", file=sys.stderr)
        return output_dir

    if lora_path is not None:
        model = load_merged_model(checkpoint_dir, Path(lora_path))
        state_dict, config = merged_state_dict(model), model.config
    else:
        state_dict = lazy_load(checkpoint_dir / CHECKPOINT_FILENAME)
        state_dict = state_dict.get("model", state_dict)
    if format == "gguf":
        from lit_gpt.gguf_export import write_gguf

        path = write_gguf(state_dict, config, checkpoint_dir, output_dir / "model.gguf", dtype)
        print(f"wrote {path} ({dtype})", file=sys.stderr)
        return path

    arch = architecture or hf_architecture(config)
    hf_config = hf_config_from(config, arch)
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

    save_safetensors(weights, output_dir, max_shard_size)
    write_json(hf_config, output_dir / "config.json")
    for name in TOKENIZER_FILES:
        if (checkpoint_dir / name).is_file():
            shutil.copyfile(checkpoint_dir / name, output_dir / name)
    print(f"wrote {arch} checkpoint to {output_dir}", file=sys.stderr)
    return output_dir

