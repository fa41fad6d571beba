"""Loads any JSON/JSONL instruction data: pick the instruction, optional input and response fields by name, or a
field holding a whole conversation (a list of {"role", "content"} messages)."""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import Loaded, RecordError, get_str, load_json_records

PATTERNS = ["*.jsonl", "*.json", "*.jsonl.gz", "*.parquet"]
ROLE_ALIASES = {"human": "user", "prompter": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


def messages_to_turns(messages: object) -> list[dict]:
    if not isinstance(messages, list):
        raise RecordError("messages field is not a list", f"got {type(messages).__name__}")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RecordError("message is not an object", f"message {i}")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        turns.append({"role": ROLE_ALIASES.get(role, role), "content": content})
    return turns


def load(
    files: list[Path],
    instruction_key: str = "instruction",
    response_key: str = "response",
    input_key: Optional[str] = None,
    system_key: Optional[str] = None,
    messages_key: Optional[str] = None,
    max_records: Optional[int] = None,
    name: str = "jsonl",
) -> Loaded:
    def to_turns(obj) -> list[dict]:
        if messages_key:
            if not isinstance(obj, dict) or messages_key not in obj:
                raise RecordError(f"missing field '{messages_key}'")
            turns = messages_to_turns(obj[messages_key])
        else:
            prompt = get_str(obj, instruction_key)
            extra = get_str(obj, input_key, required=False) if input_key else ""
            if extra.strip():
                prompt = f"{prompt.strip()}\n\n{extra.strip()}"
            turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": get_str(obj, response_key)}]
        if system_key:
            system = get_str(obj, system_key, required=False)
            if system.strip():
                turns = [{"role": "system", "content": system}] + turns
        return turns

    return load_json_records(files, name, to_turns, max_records)
