"""Loads LIMA (GAIR/lima): each record's "conversations" list alternates user and assistant turns."""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import Loaded, RecordError, load_json_records

REPO_ID = "GAIR/lima"  # gated: accept its terms on the Hub and log in (huggingface-cli login) before downloading
PATTERNS = ["train.jsonl"]


def to_turns(obj) -> list[dict]:
    if not isinstance(obj, dict) or "conversations" not in obj:
        raise RecordError("missing field 'conversations'")
    conv = obj["conversations"]
    if not isinstance(conv, list) or not all(isinstance(c, str) for c in conv):
        raise RecordError("field 'conversations' is not a list of strings")
    if len(conv) < 2:
        raise RecordError("no assistant turn", f"{len(conv)} message(s)")
    if len(conv) % 2:  # a trailing user message has no answer to learn from
        conv = conv[:-1]
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(conv)]


def load(files: list[Path], max_records: Optional[int] = None, name: str = "lima") -> Loaded:
    return load_json_records(files, name, to_turns, max_records)
