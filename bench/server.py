"""Load test of the submission server with a HELM-like request mix: requests/s and latency percentiles per number of
concurrent clients.

    python bench/server.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct --clients 1,4
    python bench/server.py --backends ours,vllm --rounds 3 --requests 40 --clients 4   # our engine against vLLM

The server runs as a uvicorn child process on a free 127.0.0.1 port (or pass --url of a running one). The mix, built
from the real prompts in ../shared/data, in HELM's shapes:
- MMLU (5-shot, one-token answer: max_new_tokens 1, stop "\n"),
- GSM8K (4-shot chain of thought, max_new_tokens --gsm8k_max_new_tokens, stop "\n\n"),
- CNN/DailyMail (summarize an article, max_new_tokens --cnn_max_new_tokens, stop "###").
(`--profile gsm8k`: only the GSM8K requests; `--profile decode`: zero-shot GSM8K questions, each generating a fixed
budget with no stop sequence: decode-bound.)
Every level runs the same request sequence (`--mmlu_share` of them MMLU, the rest split between the other two),
greedy (temperature 1e-7 as HELM sends it), for --duration seconds or --max_requests requests.

`--backends ours,vllm` compares the submission's backends (BACKEND=vllm runs in the venv of `make vllm-venv`) on one
fixed workload (--requests, at the first --clients level): each round starts a fresh server of each backend in
turn, the order alternating between rounds so that other load on the machine falls on both, and the report is the
median wall time of each and their ratio.
"""

import csv
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from lit_gpt.utils import UserError, cli


wd = Path(__file__).parent.parent.resolve()
SHARED = wd.parent / "shared" / "data"
MMLU_SUBJECTS = ["high_school_biology", "high_school_geography", "high_school_macroeconomics", "philosophy",
                 "high_school_psychology", "moral_disputes"]


def mmlu_requests(shared: Path, n: int, rng: random.Random) -> list[dict]:
    def rows(path: Path) -> list[list[str]]:
        with open(path, newline="", encoding="utf-8") as f:
            return [r for r in csv.reader(f) if len(r) == 6]

    def block(r: list[str], answer: bool) -> str:
        choices = "".join(f"\n{letter}. {text}" for letter, text in zip("ABCD", r[1:5]))
        return f"{r[0]}{choices}\nAnswer:" + (f" {r[5]}\n\n" if answer else "")

    out = []
    for subject in MMLU_SUBJECTS:
        dev = rows(shared / "mmlu" / "dev" / f"{subject}_dev.csv")
        test = rows(shared / "mmlu" / "test" / f"{subject}_test.csv")
        head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        shots = "".join(block(r, True) for r in dev)
        out += [{"task": "mmlu", "prompt": head + shots + block(r, False), "max_new_tokens": 1, "stop_sequences": ["\n"]}
                for r in test]
    rng.shuffle(out)
    return out[:n]


def gsm8k_requests(shared: Path, n: int, max_new_tokens: int, rng: random.Random) -> list[dict]:
    lines = (shared / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    shots = "".join(f"Q: {r['question']}\nA: {r['answer'].split('####')[0].strip()} The answer is "
                    f"{r['answer'].split('####')[1].strip()}.\n\n" for r in records[:4])
    rest = records[4:]
    rng.shuffle(rest)
    return [{"task": "gsm8k", "prompt": shots + f"Q: {r['question']}\nA:", "max_new_tokens": max_new_tokens,
             "stop_sequences": ["\n\n"]} for r in rest[:n]]


def cnn_requests(shared: Path, n: int, max_new_tokens: int, rng: random.Random) -> list[dict]:
    lines = (shared / "cnn_dailymail" / "test_first574.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    rng.shuffle(records)
    return [{"task": "cnn_dailymail", "prompt": f"###\nArticle: {r['article']}\n\nSummarize the above article in 3 "
             "sentences.\n", "max_new_tokens": max_new_tokens, "stop_sequences": ["###"]} for r in records[:n]]


def decode_requests(shared: Path, n: int, max_new_tokens: int, rng: random.Random) -> list[dict]:
    """Zero-shot GSM8K questions with a fixed generation budget and no stop sequence: decode-bound requests."""
    lines = (shared / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    rng.shuffle(records)
    return [{"task": "generate", "prompt": f"Q: {r['question']}\nA:", "max_new_tokens": max_new_tokens,
             "stop_sequences": []} for r in records[:n]]


def build_mix(shared: Path, total: int, mmlu_share: float, gsm8k_max_new_tokens: int, cnn_max_new_tokens: int,
              seed: int = 0, profile: str = "helm") -> list[dict]:
    rng = random.Random(seed)
    if profile == "decode":
        return decode_requests(shared, total, gsm8k_max_new_tokens, rng)
    if profile == "gsm8k":
        return gsm8k_requests(shared, total, gsm8k_max_new_tokens, rng)
    n_mmlu = round(total * mmlu_share)
    n_gsm = (total - n_mmlu) // 2
    mix = (mmlu_requests(shared, n_mmlu, rng) + gsm8k_requests(shared, n_gsm, gsm8k_max_new_tokens, rng)
           + cnn_requests(shared, total - n_mmlu - n_gsm, cnn_max_new_tokens, rng))
    rng.shuffle(mix)
    return mix


def start_server(checkpoint_dir: Path, log_path: Path, env: dict, backend: str = "ours") -> tuple[subprocess.Popen, str]:
    from submission.launch import start_server as launch, vllm_python

    python = sys.executable
    if backend == "vllm":
        python = vllm_python()
        if python is None:
            raise UserError("--backends vllm: no vLLM venv (run `make vllm-venv`, or set VLLM_VENV)")
    # Both backends get every core (vLLM would otherwise drop to one torch thread).
    env = {"CHECKPOINT_DIR": checkpoint_dir, "BACKEND": backend, "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", str(os.cpu_count())), **env}
    return launch(env, log_path, python=python, timeout=900)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def run_level(url: str, mix: list[dict], clients: int, duration: float, max_requests: int) -> dict:
    """`clients` threads take requests from the shared sequence in order until time or requests run out."""
    import httpx

    lock = threading.Lock()
    next_index = [0]
    results: list[dict] = []
    stop_at = time.monotonic() + duration

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            while time.monotonic() < stop_at:
                with lock:
                    i = next_index[0]
                    if i >= max_requests:
                        return
                    next_index[0] += 1
                req = mix[i % len(mix)]
                body = {"prompt": req["prompt"], "temperature": 1e-7, "num_return_sequences": 1,
                        "max_new_tokens": req["max_new_tokens"], "top_p": 1, "echo_prompt": False,
                        "top_k_per_token": 1, "stop_sequences": req["stop_sequences"]}
                t0 = time.perf_counter()
                try:
                    r = client.post("/process", json=body)
                    ok, n = r.status_code == 200, len(r.json()["tokens"]) if r.status_code == 200 else 0
                    status = r.status_code
                except (httpx.HTTPError, ValueError) as e:
                    ok, n, status = False, 0, type(e).__name__
                with lock:
                    results.append({"task": req["task"], "ok": ok, "status": status, "tokens": n,
                                    "latency": time.perf_counter() - t0})

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 900)
    wall = time.perf_counter() - t0
    done = [r for r in results if r["ok"]]
    summary = {
        "clients": clients, "requests": len(done), "errors": len(results) - len(done),
        "error_statuses": sorted({str(r["status"]) for r in results if not r["ok"]}),
        "wall_s": wall, "requests_per_s": len(done) / wall, "tokens_per_s": sum(r["tokens"] for r in done) / wall,
        "latency_s": {f"p{int(q * 100)}": percentile([r["latency"] for r in done], q) for q in (0.5, 0.9, 0.99)},
        "per_task": {},
    }
    for task in sorted({r["task"] for r in done}):
        lat = [r["latency"] for r in done if r["task"] == task]
        summary["per_task"][task] = {"requests": len(lat), "p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9)}
    return summary


def main(
    checkpoint_dir: Path = Path("checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct"),
    url: Optional[str] = None,
    clients: str = "1,4",
    duration: float = 120.0,
    max_requests: int = 10_000,
    mmlu_share: float = 0.7,
    gsm8k_max_new_tokens: int = 100,
    cnn_max_new_tokens: int = 64,
    warmup_requests: int = 4,
    profile: str = "helm",
    prefix_cache_mb: Optional[float] = None,
    prefill_chunk: Optional[int] = None,
    requests: Optional[int] = None,
    out: Optional[Path] = None,
    mix_file: Optional[Path] = None,
    backends: str = "ours",
    rounds: int = 1,
) -> list[dict]:
    """Measures requests/s, generated tokens/s and latency percentiles at each number of concurrent clients.

    Args:
        checkpoint_dir: The checkpoint the server loads (ignored with --url).
        url: A running server to test instead of starting one (only 127.0.0.1/localhost).
        clients: Comma-separated numbers of concurrent clients, one level each, e.g. "1,4" or "8".
        duration: Seconds per level.
        max_requests: The most requests per level.
        mmlu_share: Fraction of MMLU requests in the mix (HELM's runs are dominated by one-token answers).
        gsm8k_max_new_tokens: Generation budget of the GSM8K requests (HELM: 400; less keeps CPU runs short).
        cnn_max_new_tokens: Generation budget of the CNN/DM requests (HELM: 128).
        warmup_requests: Requests sent (one at a time) before measuring.
        profile: "helm" (the MMLU/GSM8K/CNN-DM mix), "gsm8k" (only the GSM8K requests, as HELM sends its gsm run;
            HELM's budget is --gsm8k_max_new_tokens 400) or "decode" (zero-shot GSM8K questions, each generating
            --gsm8k_max_new_tokens tokens with no stop sequence: where batching pays on a CPU, whose prefill is
            compute-bound).
        prefix_cache_mb: The server's PREFIX_CACHE_MB (0: no prefix cache; default: the server's default).
        prefill_chunk: The server's PREFILL_CHUNK (0: a prompt joining running rows is prefilled in one pass that
            stalls them; default: the server's default).
        requests: Fixed-workload mode, as HELM runs a fixed set of requests: every level drains the same first
            `requests` requests of the mix on a fresh server (a cold prefix cache, the same warmup), and throughput is
            requests / wall time. Without it, each level runs --duration seconds on its own slice of the mix.
        out: Also write the results as JSON here.
        mix_file: Read the request mix from this JSON list (as `build_mix` returns it; `bench/gpu_check.py
            --prepare` writes one) instead of building it from ../shared/data, for machines without the data.
        backends: The server's BACKEND: "ours", "vllm", or "ours,vllm" to compare the two (needs --requests).
        rounds: With two backends: fresh servers of each per round, alternating which goes first.
    """
    names = [b.strip() for b in backends.split(",") if b.strip()]
    if not names or any(b not in ("ours", "vllm") for b in names):
        raise UserError(f"--backends {backends!r}: expected ours, vllm or ours,vllm")
    if mix_file is None and not SHARED.is_dir():
        raise UserError(f"{SHARED} is absent: the benchmark prompts come from the shared data (or pass --mix_file)")
    if url is not None and not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise UserError("--url must be a local server (http://127.0.0.1:PORT)")
    levels = [int(c) for c in clients.split(",") if c.strip()]
    if not levels or min(levels) < 1:
        raise UserError("--clients must list positive integers, e.g. 1,4")
    if profile not in ("helm", "gsm8k", "decode"):
        raise UserError(f"--profile {profile!r}: expected helm, gsm8k or decode")
    if mix_file is not None:
        try:
            mix = json.loads(Path(mix_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"--mix_file {mix_file}: not a readable JSON list of requests ({e})") from e
        if not isinstance(mix, list) or len(mix) <= warmup_requests + len(levels):
            raise UserError(f"--mix_file {mix_file}: expected a JSON list of more than "
                            f"{warmup_requests + len(levels)} requests")
    else:
        mix = build_mix(SHARED, 1200, mmlu_share, gsm8k_max_new_tokens, cnn_max_new_tokens, profile=profile)
    # Each level (and the warmup) gets its own requests: the server's prefix cache keeps whole prompts, so a replayed
    # sequence would find them all cached. What the levels share is what HELM's requests share (few-shot prefixes).
    # With --requests, the levels instead replay the same requests, each on a fresh server.
    chunk = (len(mix) - warmup_requests) // len(levels)
    import httpx

    if requests is not None and url is not None:
        raise UserError("--requests starts a fresh server per level: leave out --url")
    if len(names) > 1:
        if requests is None or url is not None:
            raise UserError("--backends with two backends needs --requests (a fixed workload) and no --url")
        return compare_backends(checkpoint_dir, names, rounds, mix, requests, levels[0], warmup_requests, out)
    env = {} if prefix_cache_mb is None else {"PREFIX_CACHE_MB": str(prefix_cache_mb)}
    env |= {} if prefill_chunk is None else {"PREFILL_CHUNK": str(prefill_chunk)}
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_server.{os.getpid()}.log"
    proc = None

    def serve() -> str:
        nonlocal proc
        stop(proc)
        proc, server_url = start_server(checkpoint_dir, log, env, names[0])
        print(f"server at {server_url} (log: {log})", file=sys.stderr)
        run_level(server_url, mix[len(mix) - warmup_requests:], 1, 600, warmup_requests)
        return server_url

    try:
        if url is None and requests is None:
            url = serve()
        elif url is not None:
            run_level(url, mix[len(mix) - warmup_requests:], 1, 600, warmup_requests)
        results = []
        for level, n in enumerate(levels):
            if requests is not None:
                url, batch, limit, seconds = serve(), mix[:requests], requests, 3600.0
            else:
                batch, limit, seconds = mix[level * chunk : (level + 1) * chunk], max_requests, duration
            before = httpx.get(url + "/health", timeout=10).json()
            r = run_level(url, batch, n, seconds, limit)
            after = httpx.get(url + "/health", timeout=10).json()
            if after.get("prefix_cache") is not None:
                r["prompt_tokens_computed"] = after["prefill_tokens"] - before["prefill_tokens"]
                r["prompt_tokens_from_prefix_cache"] = after["prefix_cache"]["hit_tokens"] - before["prefix_cache"]["hit_tokens"]
            if "busy_s" in after:  # where the engine's time went, and how much it sat idle
                r["engine_busy_s"] = {k: round(v - before["busy_s"].get(k, 0.0), 1) for k, v in after["busy_s"].items()}
            results.append(r)
            lat = r["latency_s"]
            print(f"clients={n}: {r['requests']} requests ({r['errors']} errors) in {r['wall_s']:.0f}s: "
                  f"{r['requests_per_s']:.2f} req/s, {r['tokens_per_s']:.1f} generated tokens/s, latency "
                  f"p50 {lat['p50']:.2f}s p90 {lat['p90']:.2f}s p99 {lat['p99']:.2f}s; per task "
                  + ", ".join(f"{t} n={v['requests']} p50 {v['p50']:.2f}s" for t, v in r["per_task"].items())
                  + (f"; prompt tokens computed {r['prompt_tokens_computed']}, from the prefix cache "
                     f"{r['prompt_tokens_from_prefix_cache']}" if "prompt_tokens_computed" in r else "")
                  + (f"; engine seconds {r['engine_busy_s']}" if "engine_busy_s" in r else ""))
        if len(results) > 1:
            base = results[0]["requests_per_s"]
            for r in results[1:]:
                print(f"throughput x{r['requests_per_s'] / base:.2f} at {r['clients']} clients vs "
                      f"{results[0]['clients']}")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2))
        return results
    finally:
        stop(proc)


def compare_backends(checkpoint_dir: Path, names: list[str], rounds: int, mix: list[dict], requests: int,
                     clients: int, warmup_requests: int, out: Optional[Path]) -> list[dict]:
    """The same `requests` requests drained by a fresh server of each backend per round; the order alternates."""
    results = []
    for r in range(rounds):
        for backend in names if r % 2 == 0 else names[::-1]:
            log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_server.{os.getpid()}.{backend}.log"
            proc, url = start_server(checkpoint_dir, log, {}, backend)
            try:
                run_level(url, mix[len(mix) - warmup_requests:], 1, 600, warmup_requests)
                res = run_level(url, mix[:requests], clients, 3600, requests)
            finally:
                stop(proc)
            results.append({"backend": backend, "round": r, **res})
            print(f"round {r} {backend}: {res['requests']} requests ({res['errors']} errors) at {clients} clients in "
                  f"{res['wall_s']:.1f}s, {res['tokens_per_s']:.1f} generated tokens/s (log: {log})", flush=True)
    median = {b: statistics.median(x["wall_s"] for x in results if x["backend"] == b) for b in names}
    print("median wall s: " + ", ".join(f"{b} {t:.1f}" for b, t in median.items())
          + f"; {names[0]} / {names[1]} = {median[names[0]] / median[names[1]]:.2f}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"median_wall_s": median, "rounds": results}, indent=2))
    return results


def stop(proc: Optional[subprocess.Popen]) -> None:
    from submission.launch import stop_server

    stop_server(proc)


if __name__ == "__main__":
    cli(main, as_positional=False)
