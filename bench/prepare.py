"""Times scripts/prepare_mix.py on a 10k-record mix of the real data in ../shared/data against the bare batch-encode
time of the same text (the goal: the whole mix step within 1.5x of just tokenizing it).

    python bench/prepare.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct

The mix: GSM8K train (7,473) + CNN/DM validation (668) + OASST trees (100) + Dolly (12) + MMLU dev (85) + GSM8K
train again in the "clean" answer format (to 10,000 records), decontaminated against all six evaluation sets and
deduplicated (exact + MinHash LSH). The baseline renders the kept records with the same template and tokenizes
them with one `Tokenizer.encode_batch` call (the HF tokenizers batch path, parallel in Rust).
"""

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from lit_gpt.data import Encoder, check_turns
from lit_gpt.utils import cli
from lit_gpt.prepare import DEFAULT_CHECKPOINT


wd = Path(__file__).parent.parent.resolve()

def mix_config(shared: Path, decontaminate: bool = True, all_sets: bool = False) -> dict:
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
    cfg["decontaminate"] = {"eval_sets": {}}  # none: without a list prepare_mix would check the default sets
    if decontaminate:
        cfg["decontaminate"] = {"ngram": 13, "eval_sets": {
            "mmlu": str(shared / "mmlu/test"), "gsm8k": str(shared / "gsm8k/test.jsonl"),
            "truthfulqa": str(shared / "truthfulqa/TruthfulQA.csv"), "bbq": str(shared / "bbq"),
            "cnn_dailymail": str(shared / "cnn_dailymail/test_first574.jsonl"), "bigbench": str(shared / "bigbench"),
        }}
        if all_sets:  # prepare_mix's defaults: every family the final ranking scores
            cfg["decontaminate"] = {"ngram": 13, "eval_data_dir": str(shared)}
    return cfg


def main(
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    shared_data: Path = wd.parent / "shared" / "data",
    num_workers: int = 0,
    repeats: int = 3,
    all_sets: bool = False,
) -> None:
    """Benchmark prepare_mix against a bare batch encode.

    Args:
        checkpoint_dir: The checkpoint whose tokenizer formats the records.
        shared_data: The ../shared/data dir with the real datasets.
        num_workers: prepare_mix's tokenizer processes (0: one per CPU).
        repeats: Alternating rounds of (bare encode, mix with decontamination, mix without); medians are reported.
            A first run before them builds the evaluation index (reported on its own); the rounds read it from the
            cache.
        all_sets: Decontaminate against prepare_mix's default sets (every family the final ranking scores: ten with
            the closed ones) instead of the six open ones.
    """
    from lit_gpt.mix import setup as prepare_mix

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")  # a cold evaluation-index cache for the first run
        configs = {}
        for decon in (True, False):
            configs[decon] = tmp / f"mix_{decon}.yaml"
            configs[decon].write_text(yaml.safe_dump(mix_config(shared_data, decon, all_sets)))

        cpu = {"bare": [], "mix": []}  # process CPU seconds per call: how many cores each kept busy

        def run(decon: bool) -> tuple[float, dict]:
            t, c = time.perf_counter(), time.process_time()
            manifest = prepare_mix(configs[decon], checkpoint_dir, tmp / f"out_{decon}", num_workers)
            if decon:
                cpu["mix"].append((time.perf_counter() - t, time.process_time() - c))
            return time.perf_counter() - t, manifest

        first = run(True)  # builds and caches the evaluation index
        records = [json.loads(line) for line in open(tmp / "out_True" / "records.jsonl", encoding="utf-8")]
        enc = Encoder(checkpoint_dir)
        texts = ["".join(t for t, _ in enc.segments(check_turns(r["turns"]))) for r in records]

        def bare() -> float:
            t, c = time.perf_counter(), time.process_time()
            enc.tokenizer.encode_batch(texts)
            cpu["bare"].append((time.perf_counter() - t, time.process_time() - c))
            return time.perf_counter() - t

        # Rounds alternate the contenders, so a machine whose speed drifts (a shared VM) hits them alike; the
        # ratio is taken per round and the median reported.
        rounds = []
        for _ in range(repeats):
            encode = bare()
            full, manifest = run(True)
            plain, _ = run(False)
            rounds.append((encode, full, plain))
        n_tokens = sum(len(x) for x in enc.tokenizer.encode_batch(texts))

    totals = manifest["totals"]
    med = statistics.median
    encode = med(r[0] for r in rounds)
    print(f"records in: {totals['records_in']}, out: {totals['records_out']}, tokens: {n_tokens:,} ({enc.template} template)")
    print(f"{repeats} alternating rounds, medians:")
    print(f"bare encode_batch of the kept records' rendered text: {encode:.2f} s")
    print(f"prepare_mix, dedup + decontamination ({'default' if all_sets else '6'} eval sets), index cached: {med(r[1] for r in rounds):.2f} s = "
          f"{med(r[1] / r[0] for r in rounds):.2f}x bare")
    print(f"prepare_mix, dedup only:                                        {med(r[2] for r in rounds):.2f} s = "
          f"{med(r[2] / r[0] for r in rounds):.2f}x bare")
    print(f"first run (evaluation index built, then cached): {first[0]:.2f} s = {first[0] / encode:.2f}x bare")
    for name, runs in (("bare encode", cpu["bare"]), ("prepare_mix with decontamination", cpu["mix"][1:])):
        print(f"{name}: CPU {med(c for _, c in runs):.2f} s in {med(w for w, _ in runs):.2f} s wall "
              f"({med(c / w for w, c in runs):.2f} cores busy)")
    print("stages of the first run (s): " + ", ".join(f"{k} {v:.2f}" for k, v in first[1]["timings_s"].items()))
    print("stages of the last cached run (s): " + ", ".join(f"{k} {v:.2f}" for k, v in manifest["timings_s"].items()))


if __name__ == "__main__":
    cli(main)
