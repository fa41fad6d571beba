"""Wall time and peak memory of scripts/prepare_mix.py on mixes of 100k, 500k and 1M records built from the real text
in ../shared/data, for each engine (stream, datatrove's local executor, and memory where it fits); and whether the
engines keep and drop the same records.

    python bench/prepare_scale.py --sizes 100000,500000,1000000 --engines stream,datatrove --compare memory

A record is a GSM8K / MATH / MMLU-dev / Dolly question, then an ETHICS training scenario or a CNN/DM highlight,
and as its answer a GSM8K or MATH solution or an OASST-style short reply, drawn at random (seeded) from the training
splits: ~110k real texts recombined, so a million records are distinct while made of real text. Every 97th record
repeats an earlier one (an exact duplicate) and every 101st changes one word of one (a near duplicate). Each run is
a fresh `python scripts/prepare_mix.py` under /usr/bin/time -v (peak RSS of the whole process), checked against the
six open evaluation sets with a warm evaluation-index cache.
"""

import csv
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from lit_gpt.prepare import DEFAULT_CHECKPOINT
from lit_gpt.utils import cli

ROOT = Path(__file__).resolve().parents[1]


def pools(shared: Path) -> tuple[list[str], list[str], list[str]]:
    """Questions, contexts and answers: real training-split text from ../shared/data."""
    questions, contexts, answers = [], [], []
    for line in open(shared / "gsm8k/train.jsonl", encoding="utf-8"):
        r = json.loads(line)
        questions.append(r["question"])
        answers.append(r["answer"])
    for f in sorted((shared / "math/train").glob("*/*.json")):
        r = json.loads(f.read_text(encoding="utf-8"))
        questions.append(r["problem"])
        answers.append(r["solution"])
    for f in sorted((shared / "mmlu/dev").glob("*.csv")):
        questions += [row[0] for row in csv.reader(open(f, encoding="utf-8", newline=""))]
    for r in json.loads((shared / "dolly/dolly_sample12_litgpt_fixture.json").read_text(encoding="utf-8")):
        questions.append(r["instruction"])
        answers.append(r["response"])
    for subset, file, col in (("deontology", "deontology_train.csv", 1), ("justice", "justice_train.csv", 1),
                              ("virtue", "virtue_train.csv", 1), ("utilitarianism", "util_train.csv", 0)):
        rows = list(csv.reader(open(shared / "ethics" / subset / file, encoding="utf-8", newline="")))[1:]
        contexts += [row[col] for row in rows if len(row) > col and row[col].strip()]
    for line in open(shared / "cnn_dailymail/validation_first668.jsonl", encoding="utf-8"):
        contexts.append(json.loads(line)["highlights"])
    return questions, contexts, answers


def write_mix_source(path: Path, n: int, shared: Path, seed: int = 0) -> None:
    questions, contexts, answers = pools(shared)
    rng = random.Random(seed)
    recent: list[dict] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            if i % 97 == 96:
                rec = rng.choice(recent)
            elif i % 101 == 100:
                src = rng.choice(recent)
                words = src["instruction"].split()
                words[rng.randrange(len(words))] = "indeed"
                rec = {**src, "instruction": " ".join(words)}
            else:
                rec = {"instruction": rng.choice(questions), "input": rng.choice(contexts),
                       "output": rng.choice(answers)}
                recent = (recent + [rec])[-1000:]
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def mix_config(source: Path, shared: Path) -> dict:
    return {"seed": 42, "val_fraction": 0.01,
            "sources": [{"name": "real_text", "prepare": "jsonl", "source": str(source),
                         "args": {"instruction_key": "instruction", "input_key": "input", "response_key": "output"}}],
            "dedup": {"exact": True, "near": True, "threshold": 0.8},
            "decontaminate": {"ngram": 13, "eval_sets": {
                "mmlu": str(shared / "mmlu/test"), "gsm8k": str(shared / "gsm8k/test.jsonl"),
                "truthfulqa": str(shared / "truthfulqa/TruthfulQA.csv"), "bbq": str(shared / "bbq"),
                "cnn_dailymail": str(shared / "cnn_dailymail/test_first574.jsonl"), "bigbench": str(shared / "bigbench")}}}


def run(config: Path, out: Path, engine: str, checkpoint_dir: Path, tasks: int) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, "scripts/prepare_mix.py", "--config", str(config),
           "--checkpoint_dir", str(checkpoint_dir), "--out_dir", str(out), "--engine", engine, "--tasks", str(tasks),
           "--num_workers", "1"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time.*: ([\d:.]+)", p.stderr).group(1).split(":")
    seconds = sum(float(x) * 60 ** k for k, x in enumerate(reversed(wall)))
    m = json.loads((out / "manifest.json").read_text())["totals"]
    return {"wall_s": round(seconds, 1), "peak_rss_gb": round(rss_kb / 2**20, 2), "records_out": m["records_out"],
            "contaminated": m["contaminated"], "exact": m["exact_duplicates"], "near": m["near_duplicates"]}


def same_records(a: Path, b: Path) -> bool:
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in ("records.jsonl", "dropped.jsonl", "stats.json"))


def main(
    sizes: str = "100000,500000,1000000",
    engines: str = "stream,datatrove",
    compare: str = "memory",
    compare_size: int = 100_000,
    tasks: int = 2,
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    shared_data: Path = ROOT.parent / "shared" / "data",
    work_dir: Path = None,
) -> None:
    """Time each engine on each mix size.

    Args:
        sizes: Mix sizes in records, comma-separated.
        engines: prepare_mix engines to time on every size.
        compare: Engines run on `compare_size` only (memory grows with the mix), their records checked against the
            first of `engines`.
        compare_size: The size the `compare` engines run at.
        tasks: datatrove tasks (local processes).
        checkpoint_dir: The checkpoint whose tokenizer formats the records.
        shared_data: The ../shared/data dir with the real datasets.
        work_dir: Where the sources and mixes go (a temporary dir by default; a 1M mix takes ~2 GB).
    """
    from lit_gpt.decontaminate import Vocab
    from lit_gpt.mix import eval_index, options

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        eval_index(options(mix_config(tmp, shared_data))["decontaminate"], tmp, Vocab())  # a warm index cache
        for n in map(int, sizes.split(",")):
            source, config = tmp / f"src_{n}.jsonl", tmp / f"mix_{n}.yaml"
            write_mix_source(source, n, shared_data)
            config.write_text(yaml.safe_dump(mix_config(source, shared_data)))
            todo = engines.split(",") + ([e for e in compare.split(",") if e] if n == compare_size else [])
            for engine in todo:
                r = run(config, tmp / f"out_{n}_{engine}", engine, checkpoint_dir, tasks)
                if engine != todo[0]:
                    r["same_as_" + todo[0]] = same_records(tmp / f"out_{n}_{todo[0]}", tmp / f"out_{n}_{engine}")
                print(json.dumps({"records": n, "engine": engine, **r}), flush=True)
            for engine in todo:
                subprocess.run(["rm", "-rf", str(tmp / f"out_{n}_{engine}")])
            source.unlink()


if __name__ == "__main__":
    cli(main)
