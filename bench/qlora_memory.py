"""Peak CPU memory of QLoRA at real shapes (random weights): loading into 4-bit layers, then one LoRA training step.

    python bench/qlora_memory.py --shape Mistral-7B-v0.1
    python bench/qlora_memory.py --shape Qwen-14B --quantize bnb.nf4-dq
    python bench/qlora_memory.py --shape Mistral-7B-v0.1 --checkpoint path/to/lit_model.pth   # memory-mapped file

Run it as a fresh process, one at a time: it reports its own peak RSS (VmHWM), which covers its whole life. Without
--checkpoint the weights are a lazily generated random state dict: each bf16 tensor is made when
`lit_gpt.quantize.build_model` asks for it by name (as a memory-mapped checkpoint hands them out) and goes through
the same tensor-by-tensor path (shape check, copy in the compute dtype, quantize), so a 14B checkpoint need not be
written to disk. The bound it is compared with: the 4-bit block linears as stored (packed 4-bit codes plus their
quantization statistics) plus the full-precision embeddings, head and norms. RssAnon is also sampled every 20 ms:
with --checkpoint, the file's pages that the loader has read count in RSS (they are clean page cache the kernel
can drop), in RssAnon not.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import torch


import bench.finetune as bench_finetune
from lit_gpt.config import Config
from lit_gpt.hf_weights import expected_shapes
from lit_gpt.lora import LoRAConfig, inject_lora, mark_only_lora_as_trainable
from lit_gpt.quantize import build_model
from lit_gpt.training import peak_rss_bytes


class RandomStateDict(Mapping):
    """name -> a fresh random bf16 tensor of the config's shape (ones for norms, zeros for biases), made on access."""

    def __init__(self, config: Config) -> None:
        self.shapes = expected_shapes(config)

    def __getitem__(self, name: str) -> torch.Tensor:
        shape = self.shapes[name]
        if name.endswith("bias"):
            return torch.zeros(shape, dtype=torch.bfloat16)
        if len(shape) == 1:
            return torch.ones(shape, dtype=torch.bfloat16)
        return torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, 0.02)

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def __repr__(self) -> str:
        return "random state dict"


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 1 << 40


def storage_bytes(model: torch.nn.Module) -> tuple[int, int, int]:
    """(4-bit block linears as stored: codes + statistics; the 4-bit codes alone; everything else in full precision)."""
    quantized = codes = other = 0
    seen = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.__class__.__name__ == "Params4bit":
            qs = p.quant_state
            stats = qs.absmax.nbytes + qs.code.nbytes
            if qs.nested:
                stats += qs.state2.absmax.nbytes + qs.state2.code.nbytes
            codes += p.data.nbytes
            quantized += p.data.nbytes + stats
        else:
            other += p.nbytes
    return quantized, codes, other


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="Mistral-7B-v0.1", help="a named config (lit_gpt/config.py)")
    ap.add_argument("--quantize", default="bnb.nf4")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a lit_model.pth of that shape (default: random)")
    ap.add_argument("--seq_len", type=int, default=32, help="tokens of the one training step")
    ap.add_argument("--n_layer", type=int, default=None, help="fewer layers than the shape has (quick experiments)")
    ap.add_argument("--min_available_gib", type=float, default=0.75,
                    help="stop if the machine's MemAvailable falls below this (shared machines)")
    args = ap.parse_args()

    # On a shared machine: be the process the kernel's OOM killer picks, and stop before memory runs out.
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    peak_anon = [status_kib("RssAnon")]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak_anon[0] = max(peak_anon[0], status_kib("RssAnon"))
            if available_kib() < args.min_available_gib * 2**20:
                print(f"error: the machine has under {args.min_available_gib} GiB available; stopped", flush=True)
                os._exit(3)

    threading.Thread(target=sample, daemon=True).start()
    import bitsandbytes  # noqa: F401  (imported by the first quantized layer: part of the baseline, not the model)

    baseline = peak_rss_bytes()
    config = Config.from_name(args.shape, **({"n_layer": args.n_layer} if args.n_layer else {}))
    t0 = time.perf_counter()
    source = RandomStateDict(config) if args.checkpoint is None else args.checkpoint
    model = build_model(config, source, "cpu", torch.float32, quantize=args.quantize)
    load_s = time.perf_counter() - t0
    quantized, codes, other = storage_bytes(model)
    after_load, rss_loaded = peak_rss_bytes(), status_kib("VmRSS") * 1024
    inject_lora(model, LoRAConfig(**bench_finetune.LORA, query=True, value=True))
    mark_only_lora_as_trainable(model)
    model.train()
    batch = torch.randint(0, config.vocab_size, (1, args.seq_len + 1))
    step = bench_finetune.make_step("ours", model, batch)
    t0 = time.perf_counter()
    step()
    step_s = time.perf_counter() - t0
    done.set()
    peak = peak_rss_bytes()
    bound = quantized + other
    gib = 2**30
    result = {
        "shape": args.shape, "quantize": args.quantize, "source": str(source), "seq_len": args.seq_len,
        "quantized_blocks_gib": quantized / gib, "codes_only_gib": codes / gib, "full_precision_rest_gib": other / gib,
        "bound_gib": bound / gib, "baseline_rss_gib": baseline / gib, "peak_rss_after_load_gib": after_load / gib,
        "rss_after_load_gib": rss_loaded / gib, "n_layer": config.n_layer,
        "peak_rss_gib": peak / gib, "peak_anon_gib": peak_anon[0] * 1024 / gib, "ratio": peak / bound,
        "anon_ratio": peak_anon[0] * 1024 / bound, "load_s": load_s, "step_s": step_s,
    }
    print(f"{args.shape} {args.quantize} from the {source}: 4-bit blocks {quantized / gib:.2f} GiB (codes "
          f"{codes / gib:.2f}) + fp32 embeddings/head/norms {other / gib:.2f} GiB = {bound / gib:.2f} GiB; peak RSS "
          f"{peak / gib:.2f} GiB ({peak / bound:.2f}x; peak after loading {after_load / gib:.2f}, resident then "
          f"{rss_loaded / gib:.2f}; interpreter + imports "
          f"{baseline / gib:.2f}), peak RssAnon {peak_anon[0] * 1024 / gib:.2f} GiB; load {load_s:.0f} s, one step "
          f"of {args.seq_len} tokens {step_s:.0f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
