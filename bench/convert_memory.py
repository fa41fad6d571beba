"""Peak memory of scripts/convert_hf_checkpoint.py on a synthetic sharded Llama-style checkpoint.

    .venv/bin/python bench/convert_memory.py [--layers 12] [--shard_mb 300]
    .venv/bin/python bench/convert_memory.py --shape Mistral-7B-v0.1 --shard_mb 4800 --dir /tmp/scratch --keep

Writes random bf16 weights as sharded safetensors (by default the shape of a ~0.75B Llama; `--shape` takes a named
Llama-style config such as Mistral-7B-v0.1, all its layers), converts them in a child process and reports the
child's peak resident memory next to the checkpoint size: the conversion is lazy when the peak is about one copy of
the weights plus the interpreter.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from lit_gpt.config import Config

ROOT = Path(__file__).resolve().parents[1]

# the default: a ~0.75B Llama (hidden, intermediate, vocab, heads, query groups)
SMALL = dict(n_embd=2048, intermediate_size=5632, padded_vocab_size=32000, n_head=32, n_query_groups=8)


def write_checkpoint(out: Path, layers: int, shard_mb: int, shape: dict = SMALL) -> int:
    hidden, inter, vocab = shape["n_embd"], shape["intermediate_size"], shape["padded_vocab_size"]
    heads, kv = shape["n_head"], shape["n_query_groups"]
    hs = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv * hs, hidden),
            p + "self_attn.v_proj.weight": (kv * hs, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        })
    weight_map, shard, size, n, total = {}, {}, 0, 0, 0

    def flush():
        nonlocal shard, size, n
        name = f"model-{n:05d}.safetensors"
        save_file(shard, str(out / name))
        weight_map.update({k: name for k in shard})
        shard, size, n = {}, 0, n + 1

    for k, shape_ in shapes.items():
        t = torch.empty(shape_, dtype=torch.bfloat16).normal_(0, 0.02)
        shard[k] = t
        size += t.nbytes
        total += t.nbytes
        if size > shard_mb * 2**20:
            flush()
    if shard:
        flush()
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "intermediate_size": inter,
        "num_attention_heads": heads, "num_key_value_heads": kv, "num_hidden_layers": layers, "vocab_size": vocab,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}))
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12, help="layers of the default shape (ignored with --shape)")
    ap.add_argument("--shape", default=None, help="a named Llama-style config (lit_gpt/config.py), all its layers")
    ap.add_argument("--shard_mb", type=int, default=300)
    ap.add_argument("--dir", type=Path, default=None, help="write the checkpoint here (default: a temporary dir)")
    ap.add_argument("--keep", action="store_true", help="keep the converted checkpoint (and delete the HF shards)")
    args = ap.parse_args()
    shape, layers = SMALL, args.layers
    if args.shape:
        config = Config.from_name(args.shape)
        shape, layers = {k: getattr(config, k) for k in SMALL}, config.n_layer
    parent = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        ckpt = parent / "bench-llama"
        ckpt.mkdir()
        # before writing: a child's ru_maxrss starts from its parent's RSS at the fork, which the shards inflate
        baseline = subprocess.run([sys.executable, "-c", "import resource, torch, lit_gpt.convert_hf;"
                                   "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                                  cwd=ROOT, capture_output=True, text=True, check=True)
        total = write_checkpoint(ckpt, layers, args.shard_mb, shape)
        start = time.perf_counter()
        subprocess.run([sys.executable, "scripts/convert_hf_checkpoint.py", "--checkpoint_dir", str(ckpt)],
                       cwd=ROOT, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(f"checkpoint {total / 2**30:.2f} GiB in {len(list(ckpt.glob('*.safetensors')))} shards; "
              f"conversion peak RSS {peak / 2**30:.2f} GiB ({peak / total:.2f}x the checkpoint; interpreter + "
              f"imports alone: {int(baseline.stdout) * 1024 / 2**30:.2f} GiB); {seconds:.1f} s")
        if args.keep:
            for f in ckpt.glob("model*.safetensors*"):
                f.unlink()
            print(f"kept the converted checkpoint: {ckpt / 'lit_model.pth'}")
    finally:
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
