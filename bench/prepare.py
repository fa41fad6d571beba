"""Times scripts/prepare_mix.py on a 10k-record mix of the real data in ../shared/data against the bare batch-encode
time of the same text (the goal: the whole mix step within 1.5x of just tokenizing it).

    python bench/prepare.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct

The mix: GSM8K train (7,473) + CNN/DM validation (668) + OASST trees (100) + Dolly (12) + MMLU dev (85) + GSM8K
train again in the "clean" answer format (to 10,000 records), decontaminated against all six evaluation sets and
deduplicated (exact + MinHash LSH). The baseline renders the kept records with the same template and tokenizes
them with one `Tokenizer.encode_batch` call (the HF tokenizers batch path, parallel in Rust).
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

wd = Path(__file__).parent.parent.resolve()
sys.path.append(str(wd))

from lit_gpt.data import Encoder, check_turns  # noqa: E402
from lit_gpt.utils import cli  # noqa: E402
from scripts.prepare_common import DEFAULT_CHECKPOINT  # noqa: E402


def mix_config(shared: Path, decontaminate: bool = True) -> dict:
    cfg = {
        "seed": 42,
        "val_fraction": 0.02,
        "sources": [
            {"name": "gsm8k", "prepare": "gsm8k", "source": str(shared / "gsm8k/train.jsonl")},
            {"name": "cnn_dailymail", "prepare": "cnn_dailymail", "source": str(shared / "cnn_dailymail/validation_first668.jsonl")},
            {"name": "oasst", "prepare": "oasst", "source": str(shared / "oasst/en_100_tree.jsonl")},
            {"name": "dolly", "prepare": "dolly", "source": str(shared / "dolly/dolly_sample12_litgpt_fixture.json")},
            {"name": "mmlu_dev", "prepare": "mmlu_style", "source": str(shared / "mmlu/dev")},
            {"name": "gsm8k_clean", "prepare": "gsm8k", "source": str(shared / "gsm8k/train.jsonl"),
             "args": {"answer_format": "clean", "max_records": 10_000 - 7473 - 668 - 100 - 12 - 85}},
        ],
        "dedup": {"exact": True, "near": True, "threshold": 0.8},
    }
    if decontaminate:
        cfg["decontaminate"] = {"ngram": 13, "eval_sets": {
            "mmlu": str(shared / "mmlu/test"), "gsm8k": str(shared / "gsm8k/test.jsonl"),
            "truthfulqa": str(shared / "truthfulqa/TruthfulQA.csv"), "bbq": str(shared / "bbq"),
            "cnn_dailymail": str(shared / "cnn_dailymail/test_first574.jsonl"), "bigbench": str(shared / "bigbench"),
        }}
    return cfg


def main(
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    shared_data: Path = wd.parent / "shared" / "data",
    num_workers: int = 0,
    repeats: int = 3,
) -> None:
    """Benchmark prepare_mix against a bare batch encode.

    Args:
        checkpoint_dir: The checkpoint whose tokenizer formats the records.
        shared_data: The ../shared/data dir with the real datasets.
        num_workers: prepare_mix's tokenizer processes (0: one per CPU).
        repeats: Timed runs of each; the best is reported.
    """
    from scripts.prepare_mix import setup as prepare_mix

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for decon in (False, True):  # the decontaminated run last: its records.jsonl is the baseline's text
            cfg_path = tmp / f"mix_{decon}.yaml"
            cfg_path.write_text(yaml.safe_dump(mix_config(shared_data, decon)))
            best, manifest = float("inf"), None
            for _ in range(repeats):
                t = time.perf_counter()
                manifest = prepare_mix(cfg_path, checkpoint_dir, tmp / "out", num_workers)
                best = min(best, time.perf_counter() - t)
            results[decon] = (best, manifest)

        records = [json.loads(line) for line in open(tmp / "out" / "records.jsonl", encoding="utf-8")]
        enc = Encoder(checkpoint_dir)
        texts = ["".join(t for t, _ in enc.segments(check_turns(r["turns"]))) for r in records]
        best_encode = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            ids = enc.tokenizer.encode_batch(texts)
            best_encode = min(best_encode, time.perf_counter() - t)
        n_tokens = sum(len(x) for x in ids)

    full, manifest = results[True]
    plain, _ = results[False]
    totals = manifest["totals"]
    print(f"records in: {totals['records_in']}, out: {totals['records_out']}, tokens: {n_tokens:,} ({enc.template} template)")
    print(f"bare encode_batch of the kept records' rendered text: {best_encode:.2f} s")
    print(f"prepare_mix, dedup + decontamination (6 eval sets): {full:.2f} s = {full / best_encode:.2f}x")
    print(f"prepare_mix, dedup only:                            {plain:.2f} s = {plain / best_encode:.2f}x")
    print("prepare_mix stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in manifest["timings_s"].items()))


if __name__ == "__main__":
    cli(main)
