"""What bench/gpu_check.py needs that a lent GPU machine cannot reach or should not be sent: a tokenizer and the
HELM-like request mix (written ahead by `--prepare`), and a random-weight checkpoint for the server stage (written
there)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lit_gpt.config import Config
from lit_gpt.quantize import build_model
from lit_gpt.utils import UserError, atomic_save, write_json


def prepare_inputs(inputs: Path, tokenizer_dir: Path, shared: Path) -> None:
    """Writes what the lent machine cannot reach: a tokenizer and the HELM-like request mix (from the shared data)."""
    import bench.server as bench_server

    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise UserError(f"--tokenizer_dir {tokenizer_dir}: no tokenizer.json")
    if not shared.is_dir():
        raise UserError(f"--shared_data {shared} is absent: the request mix is built from the shared data")
    (inputs / "tokenizer").mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, inputs / "tokenizer" / name)
    mix = bench_server.build_mix(shared, 1200, 0.7, 100, 64)  # bench/server.py's defaults
    write_json(mix, inputs / "mix.json")
    print(f"wrote {inputs}: tokenizer from {tokenizer_dir}, {len(mix)} requests in mix.json")


def random_checkpoint(out: Path, shape: str, tokenizer_dir: Path, device: torch.device, dtype: torch.dtype) -> Path:
    """A checkpoint dir of random weights of a named shape, with the vocabulary of the tokenizer copied beside it."""
    from lit_gpt.tokenizer import Tokenizer

    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise UserError(f"{tokenizer_dir}: no tokenizer.json (run bench/gpu_wheels.sh first)")
    out.mkdir(parents=True, exist_ok=True)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, out / f.name)
    vocab = Tokenizer(out).vocab_size
    config = Config.from_name(shape, vocab_size=vocab, padded_vocab_size=vocab)
    model = build_model(config, None, device, dtype)
    atomic_save({k: v.cpu() for k, v in model.state_dict().items()}, out / "lit_model.pth")
    config.save(out)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def write_tiny_mix(path: Path) -> Path:
    """Requests in the shapes of the HELM-like mix (one-token answers, short generations), for the dry run."""
    shapes = [("mmlu", "Question: what is 12 plus 30?\nAnswer:", 1, ["\n"]),
              ("gsm8k", "Q: The quick brown fox jumps over the lazy dog.\nA:", 12, ["\n\n"]),
              ("cnn_dailymail", "###\nArticle: The city council met on Tuesday.\n\nSummarize", 8, ["###"])]
    mix = [{"task": t, "prompt": p, "max_new_tokens": n, "stop_sequences": s} for t, p, n, s in shapes * 6]
    path.write_text(json.dumps(mix))
    return path
