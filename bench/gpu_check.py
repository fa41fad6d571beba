"""One prepared accelerator check: the CUDA path's correctness on tiny models, then speed and memory at real shapes.

    bash bench/gpu_wheels.sh                              # here: the wheels in .whl/, the inputs in .gpu_check/
    python bench/gpu_check.py --out_dir out/gpu_check     # on the GPU machine (README, "GPU check")
    python bench/gpu_check.py --dry_run                   # every stage's code on CPU, tiny shapes, in seconds

Stages, in order, each timed and each in its own try block (one failing does not stop the rest; `--stages` reruns
some): hf_logits (tiny random HF models of every family: HF's logits in fp32, and in bf16 within 2x HF's own bf16
error), kv_cache (cached decoding = the full forward), qlora (nf4 and nf4-dq LoRA steps lower the loss),
paged_adamw, engine (the server engine's greedy tokens alone = batched), lora_speed (bench/finetune.py, LoRA bf16
ours against transformers + peft, alternating; tokens/s, MFU, peak memory), qlora_memory (bench/finetune.py's QLoRA
mode at the 7B and 14B shapes), decode_speed (single-stream KV-cached decoding of a 7B bf16 model against the
memory-bandwidth ceiling) and server (bench/server.py at 1 and 4 clients on the HELM-like mix, random 7B weights
behind a real tokenizer). Results go to OUT/gpu_check.json (rewritten after every stage) and OUT/gpu_check.md.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

import bench.finetune as bench_finetune
from lit_gpt import training
from lit_gpt.trainer import make_optimizer
from lit_gpt.config import Config
from lit_gpt.lora import LoRAConfig, inject_lora, mark_only_lora_as_trainable
from lit_gpt.model import GPT
from lit_gpt.quantize import build_model
from lit_gpt.utils import UserError, num_parameters, write_json

from bench.gpu_inputs import prepare_inputs, random_checkpoint, write_tiny_mix


wd = Path(__file__).parent.parent.resolve()

def repo_module(path: str):
    """A module of the repo that is not in a package (tests/tiny_hf.py, the tests' tiny reference models;
    tests/test_submission_engine.py's helpers), loaded from its file once."""
    name = Path(path).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, wd / path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


STAGES = ("hf_logits", "kv_cache", "qlora", "paged_adamw", "engine", "lora_speed", "qlora_memory", "decode_speed",
          "server")
# What each stage's entry in gpu_check.json holds, beside ok, seconds, error and peak_gpu_memory_bytes.
FIELDS = {
    "hf_logits": ("families", "bf16_tolerance"),
    "kv_cache": ("families",),
    "qlora": ("modes",),
    "paged_adamw": ("optimizer", "losses"),
    "engine": ("prompts", "alone_equals_batched", "max_rows_seen"),
    "lora_speed": ("shape", "seq_len", "ours_tokens_per_s", "hf_tokens_per_s", "speedup", "ours_mfu", "hf_mfu",
                   "ours_peak_memory_bytes", "hf_peak_memory_bytes"),
    "qlora_memory": ("shapes",),
    "decode_speed": ("shape", "tokens", "tokens_per_s", "bytes_per_token", "bandwidth_bytes_per_s",
                     "ceiling_tokens_per_s", "fraction_of_ceiling"),
    "server": ("shape", "levels", "throughput_ratio"),
}
INPUTS = wd / ".gpu_check"  # written by --prepare (bench/gpu_wheels.sh): tokenizer/ and mix.json


@dataclass
class Run:
    device: torch.device
    dtype: torch.dtype  # the low-precision dtype of the speed stages (bf16 on a GPU, fp32 on CPU)
    dry_run: bool
    work: Path
    inputs: Path
    speed_shape: str = "mistral-7b"
    qlora_shapes: tuple[str, ...] = ("mistral-7b", "qwen-14b")
    seq_len: int = 2048
    server_seconds: float = 30.0
    _ckpts: dict = field(default_factory=dict)

    def tiny_hf(self, family: str):
        """(lit checkpoint dir, HF model) of a tiny random model of `family`, converted by the real script."""
        if family not in self._ckpts:
            tiny_hf = repo_module("tests/tiny_hf.py")
            from lit_gpt.convert_hf import convert_hf_checkpoint

            hf = tiny_hf.make_hf_model(family)
            ckpt = self.work / "hf" / family
            tiny_hf.save_hf(hf, ckpt, "safetensors")
            convert_hf_checkpoint(checkpoint_dir=ckpt)
            self._ckpts[family] = (ckpt, hf)
        return self._ckpts[family]


# ----------------------------------------------------------------------------- correctness (tiny models)
def stage_hf_logits(run: Run, r: dict) -> None:
    FAMILIES, SEQ_LEN = repo_module("tests/tiny_hf.py").FAMILIES, repo_module("tests/tiny_hf.py").SEQ_LEN

    r["bf16_tolerance"] = "ours in bf16 vs HF fp32: max abs error <= 2 x HF-in-bf16's own + 0.01"
    r["families"] = fams = {}
    idx = torch.randint(0, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(1)).to(run.device)
    for family in FAMILIES:
        ckpt, hf = run.tiny_hf(family)
        config = Config.from_checkpoint(ckpt)
        out = {}
        with torch.no_grad():
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                ref = copy.deepcopy(hf).to(device=run.device, dtype=dtype)(idx).logits.float()  # hf stays fp32
                ours = build_model(config, ckpt / "lit_model.pth", run.device, dtype).eval()(idx).float()
                out[name] = (ours, ref)
        (ours32, ref32), (ours16, ref16) = out["fp32"], out["bf16"]
        f = fams[family] = {"fp32_max_abs": float((ours32 - ref32).abs().max()),
                            "bf16_max_abs": float((ours16 - ref32).abs().max()),
                            "hf_bf16_max_abs": float((ref16 - ref32).abs().max())}
        f["ok"] = f["fp32_max_abs"] <= 1e-4 * (1 + float(ref32.abs().max())) and \
            f["bf16_max_abs"] <= 2 * f["hf_bf16_max_abs"] + 0.01
    bad = [k for k, v in fams.items() if not v["ok"]]
    assert not bad, f"logits differ from HF's for {bad}"


def stage_kv_cache(run: Run, r: dict) -> None:
    FAMILIES, SEQ_LEN = repo_module("tests/tiny_hf.py").FAMILIES, repo_module("tests/tiny_hf.py").SEQ_LEN

    r["families"] = fams = {}
    idx = torch.randint(0, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(2)).to(run.device)
    prefill = 5
    for family in FAMILIES:
        ckpt, _ = run.tiny_hf(family)
        model = build_model(Config.from_checkpoint(ckpt), ckpt / "lit_model.pth", run.device).eval()
        with torch.no_grad():
            full = model(idx)
            model.set_kv_cache(batch_size=2, max_seq_length=SEQ_LEN)
            steps = [model(idx[:, :prefill], torch.arange(prefill, device=run.device))]
            for t in range(prefill, SEQ_LEN):
                steps.append(model(idx[:, t : t + 1], torch.tensor([t], device=run.device)))
        fams[family] = float((torch.cat(steps, dim=1) - full).abs().max())
    bad = [k for k, v in fams.items() if v > 1e-4]
    assert not bad, f"the KV-cache path differs from the full forward for {bad}: {fams}"


def _qlora_losses(run: Run, mode: str, optimizer: str) -> list[float]:
    """LoRA steps on a tiny random 4-bit model learning 'the next token is this one + 1'; the losses (25 steps on
    the GPU; 6 in the dry run, where bitsandbytes' CPU path is slow)."""
    steps = 6 if run.dry_run else 25
    torch.manual_seed(0)
    model = build_model(Config.from_name("tiny-llama"), None, run.device, run.dtype, quantize=mode)
    inject_lora(model, LoRAConfig(r=8, alpha=16, dropout=0.0, query=True, value=True, mlp=True))
    mark_only_lora_as_trainable(model)
    model.to(run.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, 1e-2, 0.0, run.device)
    seq = (torch.randint(0, 255, (4, 1)) + torch.arange(0, 17).unsqueeze(0)) % 256
    batch = {"input_ids": seq[:, :-1], "targets": seq[:, 1:]}
    losses = []
    for _ in range(steps):
        loss = bench_finetune.loss_sum(model, batch, run.device) / batch["targets"].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 4))
    return losses


def _falls(run: Run) -> float:
    """The last loss must be below this fraction of the first (25 steps fall ~20%, 6 steps ~10%)."""
    return 0.95 if run.dry_run else 0.8


def stage_qlora(run: Run, r: dict) -> None:
    r["modes"] = modes = {}
    for mode in ("bnb.nf4", "bnb.nf4-dq"):
        losses = _qlora_losses(run, mode, "adamw")
        modes[mode] = {"loss_first": losses[0], "loss_last": losses[-1], "ok": losses[-1] < _falls(run) * losses[0]}
    assert all(m["ok"] for m in modes.values()), f"QLoRA loss did not fall: {modes}"


def stage_paged_adamw(run: Run, r: dict) -> None:
    import bitsandbytes as bnb

    paged = " (CPU: not paged)" if run.device.type == "cpu" else ""
    r["optimizer"] = f"bitsandbytes {bnb.__version__} PagedAdamW{paged}"
    r["losses"] = losses = _qlora_losses(run, "bnb.nf4", "paged_adamw")
    assert losses[-1] < _falls(run) * losses[0], f"paged AdamW did not lower the loss: {losses}"


def stage_engine(run: Run, r: dict) -> None:
    engine_tests = repo_module("tests/test_submission_engine.py")
    PROMPTS, make_tiny_checkpoint = engine_tests.PROMPTS, engine_tests.make_tiny_checkpoint
    reference_greedy, run_engine = engine_tests.reference_greedy, engine_tests.run_engine

    from lit_gpt.generation import load_model
    from submission.engine import Engine, SamplingParams

    model, tokenizer = load_model(make_tiny_checkpoint(run.work / "engine"), str(run.device), "32-true")
    ids = [tokenizer.encode(p).tolist() for p in PROMPTS]
    lengths = [7, 20, 3, 12]
    expected = [reference_greedy(model, i, n, tokenizer.stop_ids) for i, n in zip(ids, lengths)]
    engine = Engine(model, tokenizer, max_batch_size=8)
    futures = [engine.submit(i, SamplingParams(max_new_tokens=n)) for i, n in zip(ids, lengths)]  # one batch
    engine.start()
    try:
        batched = [f.result(timeout=120).new_ids for f in futures]
        alone = [run_engine(engine, [(i, SamplingParams(max_new_tokens=n))])[0].new_ids for i, n in zip(ids, lengths)]
    finally:
        engine.stop()
    r.update(prompts=len(ids), max_rows_seen=engine.max_rows_seen, alone_equals_batched=alone == batched)
    assert alone == batched == expected, f"engine tokens differ: alone {alone}, batched {batched}, generate {expected}"


# ----------------------------------------------------------------------------- speed and memory (real shapes)
def _finetune_flags(run: Run, shape: str, modes: str, rounds: int, steps: int) -> list[str]:
    flags = ["--device", run.device.type, "--shape", shape, "--seq_len", str(run.seq_len), "--batch_size", "1",
             "--modes", modes, "--rounds", str(rounds), "--steps", str(steps)]
    return flags + (["--no_memory_probe"] if run.device.type == "cpu" else [])


def _lora_flops_per_token(shape: str, seq_len: int) -> float:
    """finetune/lora.py's MFU arithmetic for bench/finetune.py's LoRA (r=8 on q and v)."""
    config = Config.from_name(bench_finetune.SHAPES[shape])
    with torch.device("meta"):
        model = GPT(config)
        inject_lora(model, LoRAConfig(**bench_finetune.LORA, query=True, value=True))
    mark_only_lora_as_trainable(model)
    n_trainable = num_parameters(model, requires_grad=True)
    n_frozen = num_parameters(model, requires_grad=False)
    return training.lora_flops_per_token(n_frozen, n_trainable, config.n_layer, config.n_embd, seq_len)


def stage_lora_speed(run: Run, r: dict) -> None:
    rows = {row["contender"]: row for row in bench_finetune.main(_finetune_flags(run, run.speed_shape, "lora", 3, 2))}
    peak = training.peak_flops(run.device)
    fpt = _lora_flops_per_token(run.speed_shape, run.seq_len)
    r.update(shape=run.speed_shape, seq_len=run.seq_len, flops_per_token=fpt, gpu_peak_flops=peak)
    for key, name in (("ours", "ours"), ("hf", "hf+peft")):
        tps = rows[name]["tokens_per_s"]
        r[f"{key}_tokens_per_s"] = tps
        r[f"{key}_mfu"] = tps * fpt / peak if peak else None
        r[f"{key}_peak_memory_bytes"] = rows[name]["peak_memory_bytes"]
    r["speedup"] = r["ours_tokens_per_s"] / r["hf_tokens_per_s"]


def stage_qlora_memory(run: Run, r: dict) -> None:
    r["shapes"] = shapes = {}
    for shape in run.qlora_shapes:
        rows = {row["contender"]: row for row in bench_finetune.main(_finetune_flags(run, shape, "qlora", 1, 1))}
        shapes[shape] = {f"{k}_{m}": rows[n][m] for k, n in (("ours", "ours"), ("hf", "hf+peft"))
                         for m in ("tokens_per_s", "peak_memory_bytes")}
        shapes[shape]["seq_len"] = run.seq_len
        gc.collect()
        _empty_cache(run.device)


def _copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes read + written per second by a device-to-device copy (the decode ceiling's bandwidth)."""
    x = torch.empty(nbytes, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    _sync(device)
    t0, n = time.perf_counter(), 5
    for _ in range(n):
        y.copy_(x)
    _sync(device)
    return 2 * nbytes * n / (time.perf_counter() - t0)


def stage_decode_speed(run: Run, r: dict) -> None:
    from lit_gpt.generation import generate

    shape = bench_finetune.SHAPES[run.speed_shape]
    config = Config.from_name(shape)
    model = build_model(config, None, run.device, run.dtype).eval()
    prompt, new = torch.randint(0, config.vocab_size, (16,)), (16 if run.dry_run else 256)
    list(generate(model, prompt, 8))  # warm-up: kernels, allocator
    _sync(run.device)
    t0 = time.perf_counter()
    n = sum(1 for _ in generate(model, prompt, new))
    _sync(run.device)
    tps = n / (time.perf_counter() - t0)
    # Each step reads every weight once except the embedding table (one row); the KV cache adds little at 16-272.
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_token = weights - model.transformer.wte.weight.nbytes * (not config.tie_embeddings)
    bandwidth = _copy_bandwidth(run.device, 2**22 if run.dry_run else 2**32)
    r.update(shape=shape, tokens=n, tokens_per_s=tps, bytes_per_token=per_token, bandwidth_bytes_per_s=bandwidth,
             ceiling_tokens_per_s=bandwidth / per_token, fraction_of_ceiling=tps * per_token / bandwidth)


def stage_server(run: Run, r: dict) -> None:
    import bench.server as bench_server

    if run.dry_run:
        make_tiny_checkpoint = repo_module("tests/test_submission_engine.py").make_tiny_checkpoint

        ckpt, shape = make_tiny_checkpoint(run.work / "server", block_size=512), "tiny"
    else:
        shape = bench_finetune.SHAPES[run.speed_shape]
        ckpt = random_checkpoint(run.work / "server" / shape, shape, run.inputs / "tokenizer", run.device, run.dtype)
    mix = run.inputs / "mix.json" if (run.inputs / "mix.json").is_file() else write_tiny_mix(run.work / "mix.json")
    env = {"DEVICE": run.device.type, "MAX_SEQ_LENGTH": "4096" if not run.dry_run else "512"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        levels = bench_server.main(checkpoint_dir=ckpt, clients="1,4", duration=run.server_seconds,
                                   max_requests=6 if run.dry_run else 10_000, warmup_requests=2, mix_file=mix)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    r.update(shape=shape, levels=levels, throughput_ratio=levels[1]["requests_per_s"] / levels[0]["requests_per_s"])
    errors = sum(level["errors"] for level in levels)
    assert errors == 0, f"{errors} server requests failed"


# ----------------------------------------------------------------------------- running and reporting
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_stage(run: Run, name: str, fn: Callable[[Run, dict], None]) -> dict:
    r: dict = {}
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        fn(run, r)
        r["ok"] = True
    except BaseException as e:  # a stage's failure (an OOM too) is recorded; the next stage runs
        if isinstance(e, KeyboardInterrupt):
            raise
        r["ok"], r["error"] = False, f"{type(e).__name__}: {e}"[:2000]
        r["traceback"] = traceback.format_exc()[-4000:]
    r["seconds"] = round(time.perf_counter() - t0, 2)
    r["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated() if run.device.type == "cuda" else None
    gc.collect()
    _empty_cache(run.device)
    return r


def environment(device: torch.device) -> dict:
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "cuda": torch.version.cuda, "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    try:
        import bitsandbytes as bnb

        env["bitsandbytes"] = bnb.__version__
    except ImportError as e:
        env["bitsandbytes"] = f"missing ({e})"
    return env


def _brief(r: dict) -> str:
    """The stage's scalar numbers, for the summary table."""
    parts = []
    for k, v in r.items():
        if k in ("ok", "seconds", "error", "traceback", "peak_gpu_memory_bytes") or isinstance(v, (dict, list)):
            continue
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    if r.get("error"):
        parts.append(f"error: {r['error'].splitlines()[0][:200]}")
    return "; ".join(parts)


def summary_markdown(report: dict) -> str:
    lines = [f"# GPU check ({'dry run' if report['dry_run'] else 'accelerator'})", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in report["environment"].items()), "",
             "| stage | ok | seconds | peak GPU memory | numbers |", "|---|---|---:|---:|---|"]
    for name, r in report["stages"].items():
        mem = r.get("peak_gpu_memory_bytes")
        mem_s = f"{mem / 2**30:.1f} GiB" if mem else "-"
        lines.append(f"| {name} | {'yes' if r['ok'] else '**no**'} | {r['seconds']} | {mem_s} | {_brief(r)} |")
    lines += ["", "Per-family, per-mode and per-level numbers: gpu_check.json."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict:
    """Runs the stages and writes OUT/gpu_check.json and OUT/gpu_check.md; returns the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out_dir", type=Path, default=Path("out/gpu_check"), help="where the results go")
    ap.add_argument("--dry_run", action="store_true",
                    help="every stage's code on CPU with tiny shapes (seconds), instead of the GPU at real shapes")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run, e.g. those that failed")
    ap.add_argument("--inputs", type=Path, default=INPUTS, help="the tokenizer and request mix --prepare writes")
    ap.add_argument("--prepare", action="store_true",
                    help="only write --inputs (on a machine with ../shared/data and a tokenizer), then exit")
    ap.add_argument("--tokenizer_dir", type=Path, default=Path("checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct"),
                    help="with --prepare: the checkpoint dir whose tokenizer the server stage uses")
    ap.add_argument("--shared_data", type=Path, default=wd.parent / "shared" / "data",
                    help="with --prepare: the data dir the request mix is built from")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare_inputs(args.inputs, args.tokenizer_dir, args.shared_data)
        return {}
    names = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise UserError(f"--stages: unknown {unknown}; choose from {', '.join(STAGES)}")
    if not args.dry_run and not torch.cuda.is_available():
        raise UserError("torch sees no GPU: run on the GPU machine, or pass --dry_run")
    device = torch.device("cpu" if args.dry_run else "cuda")
    torch.set_float32_matmul_precision("highest")  # the fp32 comparisons with HF must not run in TF32
    work = Path(tempfile.mkdtemp(prefix="gpu_check."))
    run = Run(device=device, dtype=torch.float32 if args.dry_run else torch.bfloat16, dry_run=args.dry_run,
              work=work, inputs=args.inputs)
    if args.dry_run:
        run.speed_shape, run.qlora_shapes, run.seq_len, run.server_seconds = "tiny-llama", ("tiny-llama",), 32, 10.0
    out_dir = args.out_dir
    report = {"dry_run": args.dry_run, "environment": environment(device), "stages": {}}
    try:
        for name in names:
            print(f"== {name}", flush=True)
            r = report["stages"][name] = run_stage(run, name, globals()[f"stage_{name}"])
            print(f"   {'ok' if r['ok'] else 'FAILED'} in {r['seconds']} s; {_brief(r)}", flush=True)
            write_json(report, out_dir / "gpu_check.json")  # after every stage: a killed run keeps what it did
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out_dir / "gpu_check.md").write_text(summary_markdown(report), encoding="utf-8")
    failed = [n for n, r in report["stages"].items() if not r["ok"]]
    print(f"{len(names) - len(failed)}/{len(names)} stages ok" + (f"; failed: {', '.join(failed)}" if failed else "")
          + f"; results in {out_dir}/gpu_check.json and gpu_check.md")
    if failed:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # bad input: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
