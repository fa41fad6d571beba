"""Peak memory of scripts/convert_hf_checkpoint.py on a synthetic sharded Llama-style checkpoint.

    .venv/bin/python bench/convert_memory.py [--layers 12] [--shard_mb 300]

Writes random bf16 weights as sharded safetensors (shape of a ~0.75B Llama), converts them in a child process
and reports the child's peak resident memory next to the checkpoint size: the conversion is lazy when the peak is
about one copy of the weights plus the interpreter.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(out: Path, layers: int, shard_mb: int) -> int:
    hidden, inter, vocab, heads, kv = 2048, 5632, 32000, 32, 8
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

    for k, shape in shapes.items():
        t = torch.randn(shape, dtype=torch.bfloat16)
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
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--shard_mb", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        ckpt = Path(d) / "bench-llama"
        ckpt.mkdir()
        total = write_checkpoint(ckpt, args.layers, args.shard_mb)
        baseline = subprocess.run([sys.executable, "-c", "import resource, torch, scripts.convert_hf_checkpoint;"
                                   "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                                  cwd=ROOT, capture_output=True, text=True, check=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "scripts/convert_hf_checkpoint.py", "--checkpoint_dir", str(ckpt)],
                       cwd=ROOT, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(f"checkpoint {total / 2**30:.2f} GiB in {len(list(ckpt.glob('*.safetensors')))} shards; "
              f"conversion peak RSS {peak / 2**30:.2f} GiB (interpreter + imports alone: "
              f"{int(baseline.stdout) * 1024 / 2**30:.2f} GiB); {seconds:.1f} s")


if __name__ == "__main__":
    main()
