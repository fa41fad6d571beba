"""Loads multiple-choice questions in MMLU's CSV form (question, option A, B, C, D, ..., answer letter; no header)
as HELM's multiple_choice_joint prompt with the answer letter as the response."""

import csv
import re
from pathlib import Path
from typing import Optional

from lit_gpt.prepare import Loaded, RecordError

PATTERNS = ["*.csv"]
LETTERS = "ABCDEFGHIJ"


def subject_of(path: Path) -> str:
    """"high_school_biology_test.csv" -> "high school biology" (HELM: the file's subject, underscores as spaces)."""
    return re.sub(r"_(test|dev|val|train|auxiliary_train)$", "", path.stem).replace("_", " ")


def multiple_choice_prompt(question: str, options: list[str], subject: Optional[str] = None) -> str:
    """HELM's multiple_choice_joint shape: instructions, "Question: ...", lettered options, "Answer:"."""
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n" if subject else ""
    lines = [f"Question: {question.strip()}"] + [f"{LETTERS[i]}. {o.strip()}" for i, o in enumerate(options)]
    return head + "\n".join(lines) + "\nAnswer:"


def parse_row(row: list[str]) -> tuple[str, list[str], str]:
    if len(row) < 4:
        raise RecordError("wrong number of columns", f"expected question, 2+ options and an answer letter, got {len(row)} columns")
    question, options, answer = row[0], row[1:-1], row[-1].strip().upper()
    if len(options) > len(LETTERS):
        raise RecordError("wrong number of columns", f"{len(options)} options (at most {len(LETTERS)})")
    if not question.strip():
        raise RecordError("empty 'question'")
    if any(not o.strip() for o in options):
        raise RecordError("empty option")
    if answer not in LETTERS[: len(options)]:
        raise RecordError("bad answer letter", f"{row[-1]!r} is not one of {LETTERS[:len(options)]}")
    return question, options, answer


def load(files: list[Path], max_records: Optional[int] = None, with_subject: bool = True, name: str = "mmlu_style") -> Loaded:
    out = Loaded()
    for f in files:
        subject = subject_of(f) if with_subject else None
        with open(f, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            line = 1
            for row in reader:
                where, line = f"{f}:{line}", reader.line_num + 1
                if not row:
                    continue
                if max_records is not None and out.read >= max_records:
                    return out
                out.read += 1
                try:
                    question, options, answer = parse_row(row)
                except RecordError as e:
                    out.skip(where, e)
                    continue
                prompt = multiple_choice_prompt(question, options, subject)
                out.add(where, name, [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
    return out
