"""Readers of the evaluation sets' published formats, for decontamination: each yields (item id, [texts]) from the
files in ../shared/data (its MANIFEST.md gives the schemas).

An item's first text is the item itself as an evaluation prompt shows it (a question, a scenario, a dialogue): it is
matched however short it is. The other texts (answers, the item with its options, parts of it) are matched only when
they are at least `min_words` long, since short answers ("No", "Paris") are ordinary phrases.

`DEFAULT_EVAL_SETS` lists every family the challenge's final ranking scores, with their paths under the shared data
dir: what prepare_mix checks a mix against when its config names no sets.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterator

from lit_gpt.utils import UserError

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


def _files(path: Path, patterns: tuple[str, ...]) -> list[Path]:
    if not path.exists():
        raise UserError(f"evaluation set path {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    files = sorted({p for pat in patterns for p in path.rglob(pat)})
    if not files:
        raise UserError(f"{path}: no {' or '.join(patterns)} files")
    return files


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from e


def _csv_rows(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, list[str]]]:
    """Rows with the line number each starts on (fields may hold line breaks)."""
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.reader(fh)
        line = 1
        try:
            for row in reader:
                yield line, row
                line = reader.line_num + 1
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: not valid CSV ({e})") from e


_MMLU_HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]


def load_mmlu(path: Path) -> Items:
    """MMLU CSVs in either layout: hendrycks' (no header; question, A, B, C, D, answer letter) or MLILAB's (the header
    question,choice0..3,answer and a 0-3 answer, as in mmlu/dev_mlilab/). Texts: the question with its options (the
    item: some questions are a word or two, "Inflation", and only the options make them an item), the same with the
    options lettered as in HELM's prompt ("A. ..."), and the question alone."""
    for f in _files(path, ("*.csv",)):
        header = False
        for n, row in _csv_rows(f):
            if n == 1 and [c.strip().lower() for c in row] == _MMLU_HEADER:
                header = True
                continue
            if len(row) != 6:
                raise UserError(f"{f}:{n}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
            if row[5].strip() not in (("0", "1", "2", "3") if header else ("A", "B", "C", "D")):
                raise UserError(f"{f}:{n}: answer {row[5]!r} is not {'0-3' if header else 'A-D'}")
            lettered = "\n".join([row[0]] + [f"{'ABCD'[i]}. {o}" for i, o in enumerate(row[1:5])])
            yield f"{f.name}:{n}", ["\n".join(row[:5]), lettered, row[0]]


def load_gsm8k(path: Path) -> Items:
    for f in _files(path, ("*.jsonl",)):
        for n, r in _jsonl(f):
            yield f"{f.name}:{n}", [r.get("question", ""), r.get("answer", "")]


def load_cnn_dailymail(path: Path) -> Items:
    for f in _files(path, ("*.jsonl",)):
        for n, r in _jsonl(f):
            yield f"{f.name}:{n}", [r.get("article", ""), r.get("highlights", "")]


def load_bbq(path: Path) -> Items:
    for f in _files(path, ("*.jsonl",)):
        for n, r in _jsonl(f):
            yield f"{f.name}:{n}", [f"{r.get('context', '')} {r.get('question', '')}"]


def load_truthfulqa(path: Path) -> Items:
    """TruthfulQA.csv (Question, Best Answer, ...) or mc_task.json (question, mc1/mc2 targets)."""
    for f in _files(path, ("*.csv", "*.json")):
        if f.suffix == ".csv":
            with open(f, encoding="utf-8-sig", newline="") as fh:
                for n, row in enumerate(csv.DictReader(fh), 2):
                    yield f"{f.name}:{n}", [row.get("Question", ""), row.get("Best Answer", "")]
        else:
            data = json.loads(f.read_text(encoding="utf-8"))
            for n, r in enumerate(data):
                yield f"{f.name}#{n}", [r.get("question", "")]


def load_bigbench(path: Path) -> Items:
    """BIG-bench task.json files: each example's input (and target text where it has one). A parent task's
    task.json holds only metadata; its subtasks' files hold the examples."""
    for f in _files(path, ("task.json",)):
        task = json.loads(f.read_text(encoding="utf-8"))
        name = f.parent.relative_to(path).as_posix() if path.is_dir() and f.parent != path else f.parent.name
        for n, ex in enumerate(task.get("examples", [])):
            target = ex.get("target")
            texts = [ex.get("input", "")] + ([target] if isinstance(target, str) else [])
            yield f"{name}#{n}", texts


def load_samsum(path: Path) -> Items:
    """SAMSum CSVs (header id,summary,dialogue; dialogue lines end in \\r\\n): the dialogue, then the summary."""
    for f in _files(path, ("*.csv",)):
        rows = _csv_rows(f)
        _, header = next(rows, (1, []))
        col = {c.strip(): i for i, c in enumerate(header)}
        if "dialogue" not in col:
            raise UserError(f"{f}:1: a SAMSum CSV needs a 'dialogue' column (header: {','.join(header)})")
        for n, row in rows:
            if len(row) != len(header):
                raise UserError(f"{f}:{n}: expected {len(header)} columns, got {len(row)}")
            ident = row[col["id"]] if "id" in col else str(n)
            summary = row[col["summary"]].replace("\r\n", "\n") if "summary" in col else ""
            yield f"{f.name}:{ident}", [row[col["dialogue"]].replace("\r\n", "\n"), summary]


def load_ethics(path: Path) -> Items:
    """ETHICS CSVs, each subset in its own layout (told apart by the header): commonsense `label,input,...`;
    deontology `label,scenario,excuse`; justice `label,scenario`; virtue `label,scenario` with "<sentence> [SEP]
    <trait>"; utilitarianism has no header, two scenarios a row (the challenge's HELM fork reads a third `label`
    column). A directory gives its test and test_hard files (the splits HELM's ETHICS runs are drawn from; train is
    left to training); a file is read whatever its name."""
    for f in _files(path, ("*_test.csv", "*_test_hard.csv")):
        rows = _csv_rows(f)
        _, first = next(rows, (1, []))
        header = [c.strip().lower() for c in first]
        if header[:2] == ["label", "input"]:
            layout = "commonsense"
        elif header == ["label", "scenario", "excuse"]:
            layout = "deontology"
        elif header == ["label", "scenario"]:
            layout = "justice/virtue"
        elif len(first) in (2, 3) and "label" not in header[:2]:
            layout = "utilitarianism"
            if header[-1] != "label":  # no header: the first row is data
                rows = iter([(1, first), *rows])
        else:
            raise UserError(f"{f}:1: not an ETHICS CSV layout (header: {','.join(first)})")
        for n, row in rows:
            if len(row) != len(first):
                raise UserError(f"{f}:{n}: expected {len(first)} columns, got {len(row)}")
            yield f"{f.parent.name}/{f.name}:{n}", _ethics_texts(layout, row)


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
    """MATH: test.jsonl (problem, solution, level, type), or a folder of the original one-problem JSON files. The
    problems of the levels the challenge evaluates (MATH_LEVELS; a record without a level is kept), the problem only:
    on a real mix of MATH train, half of what solutions matched was shared solution phrasing and [asy] drawings of
    other problems (bench/RESULTS.md)."""
    for f in _files(path, ("*.jsonl", "*.json")):
        if f.suffix == ".jsonl":
            records = [(f"{f.name}:{n}", r) for n, r in _jsonl(f)]
        else:
            try:
                records = [(f"{f.parent.name}/{f.name}", json.loads(f.read_text(encoding="utf-8")))]
            except json.JSONDecodeError as e:
                raise UserError(f"{f}: not valid JSON ({e.msg})") from e
        for item_id, r in records:
            if r.get("level", MATH_LEVELS[0]) in MATH_LEVELS:
                yield item_id, [r.get("problem", "")]


def load_corr2cause(path: Path) -> Items:
    """corr2cause on its published schema (`input`, `label`): a JSON list, JSONL, or CSV with a header."""
    for f in _files(path, ("*.csv", "*.jsonl", "*.json")):
        if f.suffix == ".csv":
            rows = _csv_rows(f)
            _, header = next(rows, (1, []))
            if "input" not in header:
                raise UserError(f"{f}:1: a corr2cause CSV needs an 'input' column (header: {','.join(header)})")
            col = header.index("input")
            for n, row in rows:
                if len(row) != len(header):
                    raise UserError(f"{f}:{n}: expected {len(header)} columns, got {len(row)}")
                yield f"{f.name}:{n}", [row[col]]
            continue
        if f.suffix == ".jsonl":
            records = list(_jsonl(f))
        else:
            try:
                records = list(enumerate(json.loads(f.read_text(encoding="utf-8")), 1))
            except json.JSONDecodeError as e:
                raise UserError(f"{f}: not valid JSON ({e.msg})") from e
        for n, r in records:
            if not isinstance(r, dict) or not isinstance(r.get("input"), str):
                raise UserError(f"{f}:{n}: a corr2cause record needs a string 'input'")
            yield f"{f.name}:{n}", [r["input"]]


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
