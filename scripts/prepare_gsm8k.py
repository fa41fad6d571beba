"""Prepares GSM8K: the math word problem as the user turn, the worked solution as the assistant turn."""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import DEFAULT_CHECKPOINT, prepare_cli, run_prepare, source_files
from lit_gpt.sources import gsm8k


def setup(
    source: Optional[Path] = None,
    repo_id: str = gsm8k.REPO_ID,
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    out_dir: Path = Path("data/gsm8k"),
    answer_format: str = "raw",
    val_fraction: float = 0.05,
    seed: int = 42,
    max_seq_length: int = 2048,
    max_records: Optional[int] = None,
    template: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Prepare GSM8K (train split) for finetuning. Never prepare test.jsonl: it is an evaluation set.

    Args:
        source: A local GSM8K .jsonl (question, answer per line) or a dir holding train.jsonl; if unset, `repo_id`
            is downloaded.
        repo_id: The Hugging Face dataset to download when no `source` is given (its parquet files need pyarrow).
        checkpoint_dir: The checkpoint whose tokenizer (and chat template, if any) formats the records.
        out_dir: Where train-*.pt, val-*.pt, records.jsonl and stats.json go.
            The starter guide's --destination_path is the same flag.
        answer_format: "raw" (the published solution) or "clean" (no calculator annotations, "The answer is N.").
        val_fraction: Fraction of records held out for validation.
        seed: Seed of the train/val shuffle.
        max_seq_length: Examples longer than this many tokens are truncated (and counted).
        max_records: Read at most this many source records (for quick runs).
        template: "auto" (chat template if the tokenizer has one, else Alpaca), "chat" or "alpaca".
        num_workers: Tokenizer processes (0: one per CPU, 1: no subprocesses).
    """
    loaded = gsm8k.load(source_files(source, repo_id, gsm8k.PATTERNS), max_records, answer_format)
    return run_prepare("gsm8k", loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
