"""Prepares any JSON/JSONL instruction data: pick the instruction, optional input and response fields by name, or a
field holding a whole conversation (a list of {"role", "content"} messages)."""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import DEFAULT_CHECKPOINT, prepare_cli, run_prepare, source_files
from lit_gpt.sources import jsonl
from lit_gpt.utils import UserError


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
    loaded = jsonl.load(source_files(source, repo_id, jsonl.PATTERNS), instruction_key, response_key, input_key, system_key,
                  messages_key, max_records, name)
    return run_prepare(name, loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
