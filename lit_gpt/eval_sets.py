"""One reader per evaluation set, shared by the evaluation (eval/<family>.py builds its HELM instances from the
records) and by decontamination (lit_gpt/eval_loaders.py derives the texts it indexes from the same records), so
that what is decontaminated is read exactly as what is scored (../shared/data/MANIFEST.md gives the schemas).

Each reader returns plain records: dicts with the file's fields and an `item_id` ("<file>:<line>" or
"<task>#<n>") that names the item in decontamination reports. CSVs are opened with universal newlines, as HELM
and its fork open theirs (SAMSum's, whose dialogues end lines in \r\n, as they are, then normalised to \n). A file that breaks its layout raises `EvalSetError`, naming the file and line: a
`UserError` for the prepare scripts and a `ValueError` for eval/run.py, which skips a run on one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Optional

from lit_gpt.utils import UserError


class EvalSetError(UserError, ValueError):
    """An evaluation file that does not follow its published layout."""


def files(path: Path, patterns: tuple[str, ...]) -> list[Path]:
    """`path` itself if it is a file, else the files under it matching any of `patterns`, sorted."""
    if not path.exists():
        raise UserError(f"evaluation set path {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    found = sorted({p for pat in patterns for p in path.rglob(pat)})
    if not found:
        raise UserError(f"{path}: no {' or '.join(patterns)} files")
    return found


def jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed line) for each non-blank line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise EvalSetError(f"{path}:{n}: not valid JSON ({e.msg})") from e


def json_file(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalSetError(f"{path}: not valid JSON ({e.msg})") from e


def csv_rows(path: Path, encoding: str = "utf-8", newline: Optional[str] = None) -> Iterator[tuple[int, list[str]]]:
    """Rows with the line number each starts on (fields may hold line breaks); blank lines are skipped."""
    with open(path, encoding=encoding, newline=newline) as fh:
        reader = csv.reader(fh)
        line = 1
        try:
            for row in reader:
                if row:
                    yield line, row
                line = reader.line_num + 1
        except csv.Error as e:
            raise EvalSetError(f"{path}:{reader.line_num}: not valid CSV ({e})") from e


def _columns(path: Path, header: list[str], need: tuple[str, ...]) -> dict[str, int]:
    col = {c.strip(): i for i, c in enumerate(header)}
    missing = sorted(set(need) - set(col))
    if missing:
        need_, got = ", ".join(need), ",".join(header)
        raise EvalSetError(f"{path}:1: missing column(s) {missing} (need {need_}; header: {got})")
    return col


def _check_width(path: Path, n: int, row: list[str], width: int) -> None:
    if len(row) != width:
        raise EvalSetError(f"{path}:{n}: expected {width} columns, got {len(row)}")


# --- MMLU ---------------------------------------------------------------------------------------------------------

MMLU_MLILAB_HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]


def read_mmlu(path: Path) -> list[dict]:
    """An MMLU CSV in either layout: hendrycks' (no header; question, options, answer letter) or MLILAB's (the header
    question,choice0..3,answer and a 0-3 answer, as in mmlu/dev_mlilab/). Records: question, choices, answer
    (a letter)."""
    rows = list(csv_rows(path))
    numeric = bool(rows) and rows[0][0] == 1 and [c.strip().lower() for c in rows[0][1]] == MMLU_MLILAB_HEADER
    records = []
    for n, row in rows[1:] if numeric else rows:
        if len(row) < 3:
            raise EvalSetError(f"{path}:{n}: expected question, options and an answer, got {len(row)} columns")
        letters = "ABCDE"[: len(row) - 2]
        answer = row[-1].strip()
        if numeric and answer in [str(i) for i in range(len(letters))]:
            answer = letters[int(answer)]
        elif numeric or answer not in letters:
            want = f"0-{len(letters) - 1}" if numeric else f"{letters[0]}-{letters[-1]}"
            noun = "an answer" if numeric else "an answer letter"
            raise EvalSetError(
                f"{path}:{n}: answer {row[-1]!r} is not {want} (expected question, options and {noun} {want})")
        records.append(
            {"item_id": f"{path.name}:{n}", "question": row[0], "choices": tuple(row[1:-1]), "answer": answer})
    return records


# --- JSONL sets: GSM8K, CNN/DailyMail, BBQ -------------------------------------------------------------------------


def read_jsonl_records(path: Path, need: tuple[str, ...], what: str) -> list[dict]:
    """A JSONL file's records, each holding the fields `need` (GSM8K: question, answer; CNN/DM: article,
    highlights; BBQ: its full schema)."""
    records = []
    for n, r in jsonl(path):
        if not isinstance(r, dict) or any(k not in r for k in need):
            raise EvalSetError(f"{path}:{n}: expected {what} JSON with {', '.join(map(repr, need))}")
        records.append({"item_id": f"{path.name}:{n}", **r})
    return records


def read_gsm8k(path: Path) -> list[dict]:
    return read_jsonl_records(path, ("question", "answer"), "GSM8K")


def read_cnn_dailymail(path: Path) -> list[dict]:
    return read_jsonl_records(path, ("article", "highlights"), "CNN/DailyMail")


def read_bbq(path: Path) -> list[dict]:
    return read_jsonl_records(path, ("context", "question"), "BBQ")


# --- TruthfulQA ----------------------------------------------------------------------------------------------------


def read_truthfulqa(path: Path) -> list[dict]:
    """TruthfulQA.csv (Type, Category, Question, Best Answer, Correct Answers, Incorrect Answers, Source; read by
    name) or mc_task.json (question, mc1/mc2 targets). Records: question, best_answer and incorrect_answers (None
    where the file has no such column)."""
    if path.suffix == ".json":
        return [{"item_id": f"{path.name}#{n}", "question": r.get("question", ""), "best_answer": "",
                 "incorrect_answers": None} for n, r in enumerate(json_file(path))]
    rows = csv_rows(path, encoding="utf-8-sig")  # HELM reads the header (with its BOM) only to skip it
    _, header = next(rows, (1, []))
    col = _columns(path, header, ("Question", "Best Answer"))
    records = []
    for n, row in rows:
        _check_width(path, n, row, len(header))
        records.append({"item_id": f"{path.name}:{n}", "question": row[col["Question"]],
                        "best_answer": row[col["Best Answer"]],
                        "incorrect_answers": row[col["Incorrect Answers"]] if "Incorrect Answers" in col else None})
    return records


# --- BIG-bench -----------------------------------------------------------------------------------------------------


def read_bigbench(path: Path, name: str) -> tuple[dict, list[dict]]:
    """A BIG-bench task.json: (the task, its examples as records named "<name>#<n>"). A parent task's task.json
    holds only metadata (no examples); its subtasks' files hold them."""
    task = json_file(path)
    if not isinstance(task, dict) or not isinstance(task.get("examples", []), list):
        raise EvalSetError(f"{path}: not a BIG-bench JSON task")
    return task, [{"item_id": f"{name}#{n}", **ex} for n, ex in enumerate(task.get("examples", []))]


# --- SAMSum --------------------------------------------------------------------------------------------------------


def read_samsum(path: Path) -> list[dict]:
    """A SAMSum CSV (header id,summary,dialogue; dialogue lines end in \\r\\n, normalised to \\n): records
    dialogue, summary, named by their id."""
    rows = csv_rows(path, newline="")
    _, header = next(rows, (1, []))
    if "dialogue" not in header and "summary" in header:
        raise EvalSetError(f"{path}:1: a SAMSum CSV needs a 'dialogue' column (header: {','.join(header)})")
    col = _columns(path, header, ("dialogue", "summary"))
    records = []
    for n, row in rows:
        _check_width(path, n, row, len(header))
        ident = row[col["id"]] if "id" in col else str(n)
        records.append({"item_id": f"{path.name}:{ident}", "dialogue": row[col["dialogue"]].replace("\r\n", "\n"),
                        "summary": row[col["summary"]].replace("\r\n", "\n")})
    return records


# --- ETHICS --------------------------------------------------------------------------------------------------------

# The release's header of each layout (utilitarianism has none: two scenarios a row, the more pleasant first; the
# challenge's HELM fork reads a third `label` column).
ETHICS_HEADERS = {
    "commonsense": ("label", "input", "is_short", "edited"),
    "deontology": ("label", "scenario", "excuse"),
    "justice": ("label", "scenario"),
    "virtue": ("label", "scenario"),
    "utilitarianism": (),
}


def ethics_layout(path: Path, first: list[str]) -> str:
    header = tuple(c.strip().lower() for c in first)
    if header[:2] == ("label", "input"):
        return "commonsense"
    if header == ETHICS_HEADERS["deontology"]:
        return "deontology"
    if header == ETHICS_HEADERS["justice"]:
        return "justice"  # or virtue: the same header
    if len(first) in (2, 3) and "label" not in header[:2]:
        return "utilitarianism"
    raise EvalSetError(f"{path}:1: not an ETHICS CSV layout (header: {','.join(first)})")


def read_ethics(path: Path, layout: Optional[str] = None) -> tuple[str, list[dict]]:
    """An ETHICS CSV in `layout` (one of ETHICS_HEADERS; told apart by the header when None): (layout, records
    holding the row's fields, `row`, as strings). Labelled layouts need a 0/1 label first."""
    rows = csv_rows(path)
    n1, first = next(rows, (1, []))
    if not first and layout is not None:
        return layout, []  # an empty file (without a layout, ethics_layout names it)
    if layout is None:
        layout = ethics_layout(path, first)
    elif ETHICS_HEADERS[layout] and tuple(first) != ETHICS_HEADERS[layout]:
        raise EvalSetError(f"{path}:1: expected the header {','.join(ETHICS_HEADERS[layout])}")
    if layout == "utilitarianism" and first[-1].strip().lower() != "label":  # the fork's util.csv has a header
        rows = iter([(n1, first), *rows])  # the release's has none: the first row is data
    width = len(first)
    records = []
    for n, row in rows:
        _check_width(path, n, row, width)
        if ETHICS_HEADERS[layout] and row[0] not in ("0", "1"):
            raise EvalSetError(f"{path}:{n}: expected {width} columns with a 0/1 label first, got {row!r}")
        records.append({"item_id": f"{path.parent.name}/{path.name}:{n}", "line": n, "row": row})
    return layout, records


# --- MATH ----------------------------------------------------------------------------------------------------------


def read_math(path: Path, need: tuple[str, ...] = ("problem",)) -> list[dict]:
    """MATH: a JSONL file (test.jsonl) or one of the original one-problem JSON files (train/<subject>/<n>.json),
    with fields problem, level ("Level 1".."Level 5"), type ("Algebra", ...) and solution, those in `need` strings."""
    if path.suffix == ".jsonl":
        records = [(f"{path}:{n}", f"{path.name}:{n}", r) for n, r in jsonl(path)]
    else:
        records = [(str(path), f"{path.parent.name}/{path.name}", json_file(path))]
    for where, _, r in records:
        if not isinstance(r, dict) or any(not isinstance(r.get(k), str) for k in need):
            raise EvalSetError(f"{where}: expected a JSON object with string fields {', '.join(need)}")
    return [{"item_id": item_id, **r} for _, item_id, r in records]


# --- corr2cause ----------------------------------------------------------------------------------------------------


def read_corr2cause(path: Path) -> list[dict]:
    """corr2cause on its published schema (`input`, `label`): a CSV with a header (columns read by name, others
    ignored), JSONL, or a JSON list. Records: input, label (an int 0/1; a JSON record may leave it out)."""
    if path.suffix == ".csv":
        rows = csv_rows(path)
        _, header = next(rows, (1, []))
        col = _columns(path, header, ("input", "label"))
        out = []
        for n, row in rows:
            _check_width(path, n, row, len(header))
            if row[col["label"]].strip() not in ("0", "1"):
                raise EvalSetError(f"{path}:{n}: label must be 0 or 1, got {row[col['label']]!r}")
            out.append({"item_id": f"{path.name}:{n}", "input": row[col["input"]], "label": int(row[col["label"]])})
        return out
    records = list(jsonl(path)) if path.suffix == ".jsonl" else list(enumerate(json_file(path), 1))
    for n, r in records:
        if not isinstance(r, dict) or not isinstance(r.get("input"), str):
            raise EvalSetError(f"{path}:{n}: a corr2cause record needs a string 'input'")
    return [{"item_id": f"{path.name}:{n}", "input": r["input"], "label": r.get("label")} for n, r in records]
