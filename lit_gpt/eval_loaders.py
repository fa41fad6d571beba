"""What decontamination indexes of each evaluation set: each loader yields (item id, [texts]) from the files in
../shared/data, derived from the records of lit_gpt/eval_sets.py, the readers the evaluation builds its prompts
from.

An item's first text is the item itself as an evaluation prompt shows it (a question, a scenario, a dialogue): it is
matched however short it is. The other texts (answers, the item with its options, parts of it) are matched only when
they are at least `min_words` long, since short answers ("No", "Paris") are ordinary phrases.

`DEFAULT_EVAL_SETS` lists every family the challenge's final ranking scores, with their paths under the shared data
dir: what prepare_mix checks a mix against when its config names no sets.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

from lit_gpt import eval_sets as sets

Items = Iterator[tuple[str, list[str]]]

# name: (kind, path under the shared data dir). Open: MMLU (57 subjects), TruthfulQA, BBQ, CNN/DM, GSM8K, BIG-bench;
# closed: SAMSum, corr2cause, ETHICS (five subsets), MATH.
DEFAULT_EVAL_SETS = {
    "mmlu": ("mmlu", "mmlu/test"),
    "gsm8k": ("gsm8k", "gsm8k/test.jsonl"),
    "truthfulqa": ("truthfulqa", "truthfulqa/TruthfulQA.csv"),
    "bbq": ("bbq", "bbq"),
    "cnn_dailymail": ("cnn_dailymail", "cnn_dailymail/test_first574.jsonl"),
    "bigbench": ("bigbench", "bigbench"),
    "samsum": ("samsum", "samsum"),
    "ethics": ("ethics", "ethics"),
    "math": ("math", "math/test.jsonl"),
    "corr2cause": ("corr2cause", "corr2cause"),
}


def load_mmlu(path: Path) -> Items:
    """MMLU CSVs (either layout). Texts: the question with its options (the item: some questions are a word or two,
    "Inflation", and only the options make them an item), the same with the options lettered as in HELM's prompt
    ("A. ..."), and the question alone."""
    for f in sets.files(path, ("*.csv",)):
        for r in sets.read_mmlu(f):
            lettered = "\n".join([r["question"]] + [f"{'ABCDE'[i]}. {o}" for i, o in enumerate(r["choices"])])
            yield r["item_id"], ["\n".join([r["question"], *r["choices"]]), lettered, r["question"]]


def load_gsm8k(path: Path) -> Items:
    for f in sets.files(path, ("*.jsonl",)):
        for r in sets.read_gsm8k(f):
            yield r["item_id"], [r["question"], r["answer"]]


def load_cnn_dailymail(path: Path) -> Items:
    for f in sets.files(path, ("*.jsonl",)):
        for r in sets.read_cnn_dailymail(f):
            yield r["item_id"], [r["article"], r["highlights"]]


def load_bbq(path: Path) -> Items:
    for f in sets.files(path, ("*.jsonl",)):
        for r in sets.read_bbq(f):
            yield r["item_id"], [f"{r['context']} {r['question']}"]


def load_truthfulqa(path: Path) -> Items:
    """TruthfulQA.csv (the question, the best answer) or mc_task.json (the question)."""
    for f in sets.files(path, ("*.csv", "*.json")):
        for r in sets.read_truthfulqa(f):
            yield r["item_id"], [r["question"]] + ([r["best_answer"]] if f.suffix == ".csv" else [])


def load_bigbench(path: Path) -> Items:
    """BIG-bench task.json files: each example's input (and target text where it has one)."""
    for f in sets.files(path, ("task.json",)):
        name = f.parent.relative_to(path).as_posix() if path.is_dir() and f.parent != path else f.parent.name
        for ex in sets.read_bigbench(f, name)[1]:
            target = ex.get("target")
            yield ex["item_id"], [ex.get("input", "")] + ([target] if isinstance(target, str) else [])


def load_samsum(path: Path) -> Items:
    """SAMSum CSVs: the dialogue, then the summary."""
    for f in sets.files(path, ("*.csv",)):
        for r in sets.read_samsum(f):
            yield r["item_id"], [r["dialogue"], r["summary"]]


def load_ethics(path: Path) -> Items:
    """ETHICS CSVs, each subset in its own layout (lit_gpt.eval_sets.read_ethics). A directory gives its test and
    test_hard files (the splits HELM's ETHICS runs are drawn from; train is left to training); a file is read
    whatever its name."""
    for f in sets.files(path, ("*_test.csv", "*_test_hard.csv")):
        layout, records = sets.read_ethics(f)
        for r in records:
            yield r["item_id"], _ethics_texts(layout, r["row"])

def _ethics_texts(layout: str, row: list[str]) -> list[str]:
    if layout == "commonsense":
        return [row[1]]
    if layout == "deontology":  # HELM's prompt puts "Excuse:" between the two
        return [f"{row[1]} {row[2]}", f"{row[1]}\nExcuse: {row[2]}"]
    if layout == "utilitarianism":
        return [f"{row[0]}\n{row[1]}", row[0], row[1]]
    # justice; virtue's "<sentence> [SEP] <trait>" also gives the sentence alone (five traits share it)
    return [row[1]] + ([row[1].split("[SEP]")[0]] if "[SEP]" in row[1] else [])


# The challenge's MATH runs: math:subject=<each of the 7>,level=1|5 (the HELM fork's run_specs_*_budget.conf).
MATH_LEVELS = ("Level 1", "Level 5")


def load_math(path: Path) -> Items:
    """MATH: test.jsonl, or a folder of the original one-problem JSON files. The problems of the levels the
    challenge evaluates (MATH_LEVELS; a record without a level is kept), the problem only: on a real mix of MATH
    train, half of what solutions matched was shared solution phrasing and [asy] drawings of other problems
    (bench/RESULTS.md)."""
    for f in sets.files(path, ("*.jsonl", "*.json")):
        for r in sets.read_math(f):
            if r.get("level", MATH_LEVELS[0]) in MATH_LEVELS:
                yield r["item_id"], [r["problem"]]


def load_corr2cause(path: Path) -> Items:
    """corr2cause on its published schema (`input`, `label`): a JSON list, JSONL, or CSV with a header."""
    for f in sets.files(path, ("*.csv", "*.jsonl", "*.json")):
        for r in sets.read_corr2cause(f):
            yield r["item_id"], [r["input"]]


EVAL_LOADERS = {
    "mmlu": load_mmlu,
    "gsm8k": load_gsm8k,
    "cnn_dailymail": load_cnn_dailymail,
    "bbq": load_bbq,
    "truthfulqa": load_truthfulqa,
    "bigbench": load_bigbench,
    "samsum": load_samsum,
    "ethics": load_ethics,
    "math": load_math,
    "corr2cause": load_corr2cause,
}


def default_eval_sets(shared_data: Path) -> tuple[dict[str, dict], list[str]]:
    """DEFAULT_EVAL_SETS under `shared_data` as prepare_mix's {name: {"kind", "paths"}}, leaving out (and listing)
    those whose files are absent."""
    found, missing = {}, []
    for name, (kind, rel) in DEFAULT_EVAL_SETS.items():
        p = Path(shared_data) / rel
        if p.exists():
            found[name] = {"kind": kind, "paths": [p]}
        else:
            print(f"warning: evaluation set {name!r} not found at {p}: not checked", file=sys.stderr)
            missing.append(name)
    return found, missing
