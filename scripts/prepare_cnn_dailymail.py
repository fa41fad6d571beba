"""Prepares CNN/DailyMail: the article in HELM's summarization prompt as the user turn, the highlights as the answer."""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import DEFAULT_CHECKPOINT, prepare_cli, run_prepare, source_files
from lit_gpt.sources import cnn_dailymail


def setup(
    source: Optional[Path] = None,
    repo_id: str = cnn_dailymail.REPO_ID,
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    out_dir: Path = Path("data/cnn_dailymail"),
    num_sents: Optional[int] = 3,
    val_fraction: float = 0.05,
    seed: int = 42,
    max_seq_length: int = 2048,
    max_records: Optional[int] = None,
    template: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Prepare CNN/DailyMail (article -> highlights) for finetuning. Use the train split: test is an evaluation set.

    Args:
        source: A local .jsonl (article, highlights, id per line) or a dir of them; if unset, `repo_id` is downloaded.
        repo_id: The Hugging Face dataset to download when no `source` is given (its parquet files need pyarrow).
        checkpoint_dir: The checkpoint whose tokenizer (and chat template, if any) formats the records.
        out_dir: Where train-*.pt, val-*.pt, records.jsonl and stats.json go.
            The starter guide's --destination_path is the same flag.
        num_sents: The sentence count asked for in the prompt (HELM uses 3); None asks for a summary.
        val_fraction: Fraction of records held out for validation.
        seed: Seed of the train/val shuffle.
        max_seq_length: Examples longer than this many tokens are truncated (and counted).
        max_records: Read at most this many source records (for quick runs).
        template: "auto" (chat template if the tokenizer has one, else Alpaca), "chat" or "alpaca".
        num_workers: Tokenizer processes (0: one per CPU, 1: no subprocesses).
    """
    loaded = cnn_dailymail.load(source_files(source, repo_id, cnn_dailymail.PATTERNS), max_records, num_sents)
    return run_prepare("cnn_dailymail", loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
