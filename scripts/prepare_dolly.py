"""Prepares databricks-dolly-15k (instruction, context, response) as single-turn chat records and shards."""

import sys
from pathlib import Path
from typing import Optional

wd = Path(__file__).parent.parent.resolve()
sys.path.append(str(wd))

from scripts.prepare_common import DEFAULT_CHECKPOINT, Loaded, get_str, load_json_records, run_prepare, source_files, prepare_cli  # noqa: E402

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


def setup(
    source: Optional[Path] = None,
    repo_id: str = REPO_ID,
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    out_dir: Path = Path("data/dolly"),
    val_fraction: float = 0.05,
    seed: int = 42,
    max_seq_length: int = 2048,
    max_records: Optional[int] = None,
    template: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Prepare Dolly for finetuning.

    Args:
        source: A local .jsonl/.json file (or a dir of them) in the Dolly layout; if unset, `repo_id` is downloaded.
        repo_id: The Hugging Face dataset to download when no `source` is given.
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
    loaded = load(source_files(source, repo_id, PATTERNS), max_records)
    return run_prepare("dolly", loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
