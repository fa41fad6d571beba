"""Loads GSM8K: the math word problem as the user turn, the worked solution as the assistant turn."""

import re
from pathlib import Path
from typing import Optional

from lit_gpt.prepare import Loaded, get_str, load_json_records
from lit_gpt.utils import UserError

REPO_ID = "openai/gsm8k"
PATTERNS = ["train.jsonl", "main/train-*.parquet"]
_CALC = re.compile(r"<<[^>]*>>")
_FINAL = re.compile(r"\n?#### *(.+)\s*$")


def format_answer(answer: str, answer_format: str) -> str:
    """"raw": the solution as published (calculator annotations `<<48/2=24>>` and the final `#### 72`);
    "clean": annotations removed and the last line written as "The answer is 72." (HELM's GSM8K answer shape)."""
    if answer_format == "raw":
        return answer
    text = _CALC.sub("", answer)
    return _FINAL.sub(lambda m: f"\nThe answer is {m.group(1).strip()}.", text).strip()


def load(files: list[Path], max_records: Optional[int] = None, answer_format: str = "raw", name: str = "gsm8k") -> Loaded:
    if answer_format not in ("raw", "clean"):
        raise UserError(f"answer_format must be 'raw' or 'clean', got {answer_format!r}")

    def to_turns(obj) -> list[dict]:
        question, answer = get_str(obj, "question"), get_str(obj, "answer")
        return [{"role": "user", "content": question}, {"role": "assistant", "content": format_answer(answer, answer_format)}]

    return load_json_records(files, name, to_turns, max_records)
