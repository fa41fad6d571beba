"""Loads databricks-dolly-15k (instruction, context, response) as single-turn chat records."""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import Loaded, get_str, load_json_records

REPO_ID = "databricks/databricks-dolly-15k"
PATTERNS = ["*.jsonl", "*.json", "*.jsonl.gz"]


def to_turns(obj) -> list[dict]:
    """User turn: the instruction, then the context (when there is one) after a blank line; assistant: the response."""
    instruction = get_str(obj, "instruction")
    context = get_str(obj, "context", required=False)
    response = get_str(obj, "response")
    prompt = f"{instruction.strip()}\n\n{context.strip()}" if context.strip() else instruction
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def load(files: list[Path], max_records: Optional[int] = None, name: str = "dolly") -> Loaded:
    return load_json_records(files, name, to_turns, max_records)
