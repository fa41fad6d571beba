"""Prepares any JSON/JSONL instruction data: pick the instruction, optional input and response fields by name, or a
field holding a whole conversation (a list of {"role", "content"} messages)."""

import sys
from pathlib import Path
from typing import Optional

wd = Path(__file__).parent.parent.resolve()
sys.path.append(str(wd))

from scripts.prepare_common import DEFAULT_CHECKPOINT, Loaded, RecordError, get_str, load_json_records, run_prepare, source_files, prepare_cli  # noqa: E402
from lit_gpt.utils import UserError  # noqa: E402

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


def setup(
    source: Optional[Path] = None,
    repo_id: Optional[str] = None,
    instruction_key: str = "instruction",
    response_key: str = "response",
    input_key: Optional[str] = None,
    system_key: Optional[str] = None,
    messages_key: Optional[str] = None,
    name: str = "jsonl",
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    out_dir: Path = Path("data/jsonl"),
    val_fraction: float = 0.05,
    seed: int = 42,
    max_seq_length: int = 2048,
    max_records: Optional[int] = None,
    template: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Prepare a generic JSONL/JSON instruction dataset for finetuning.

    Args:
        source: A local .jsonl/.json file (or a dir of them); if unset, `repo_id` is downloaded.
        repo_id: A Hugging Face dataset to download when no `source` is given.
        instruction_key: The field holding the instruction (the user turn).
        response_key: The field holding the response (the assistant turn).
        input_key: An optional field with extra input (e.g. Alpaca's "input"), appended to the instruction.
        system_key: An optional field with a system prompt.
        messages_key: Instead of instruction/response: a field holding the conversation as a list of
            {"role": "system"|"user"|"assistant", "content": ...} (ShareGPT's {"from", "value"} works too).
        name: The source name recorded in records.jsonl and stats.json.
        checkpoint_dir: The checkpoint whose tokenizer (and chat template, if any) formats the records.
        out_dir: Where train-*.pt, val-*.pt, records.jsonl and stats.json go.
            The starter guide's --destination_path is the same flag.
        val_fraction: Fraction of records held out for validation.
        seed: Seed of the train/val shuffle.
        max_seq_length: Examples longer than this many tokens are truncated (and counted).
        max_records: Read at most this many source records (for quick runs).
        template: "auto" (chat template if the tokenizer has one, else Alpaca), "chat" or "alpaca".
        num_workers: Tokenizer processes (0: one per CPU, 1: no subprocesses).
    """
    if not source and not repo_id:
        raise UserError("pass --source PATH (a local .jsonl/.json) or --repo_id (a Hugging Face dataset)")
    loaded = load(source_files(source, repo_id, PATTERNS), instruction_key, response_key, input_key, system_key,
                  messages_key, max_records, name)
    return run_prepare(name, loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
