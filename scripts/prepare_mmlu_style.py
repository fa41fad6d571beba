"""Prepares multiple-choice questions in MMLU's CSV form (question, option A, B, C, D, ..., answer letter; no header)
as HELM's multiple_choice_joint prompt with the answer letter as the response."""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import DEFAULT_CHECKPOINT, prepare_cli, run_prepare, source_files
from lit_gpt.sources import mmlu_style


def setup(
    source: Optional[Path] = None,
    repo_id: Optional[str] = None,
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    out_dir: Path = Path("data/mmlu_style"),
    with_subject: bool = True,
    val_fraction: float = 0.05,
    seed: int = 42,
    max_seq_length: int = 2048,
    max_records: Optional[int] = None,
    template: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Prepare MMLU-CSV-form multiple choice for finetuning (e.g. MMLU's auxiliary_train; never its test split).

    Args:
        source: A CSV file, or a dir searched for *.csv; the subject comes from the file name (`<subject>_<split>.csv`).
        repo_id: A Hugging Face dataset holding such CSVs, downloaded when no `source` is given.
        checkpoint_dir: The checkpoint whose tokenizer (and chat template, if any) formats the records.
        out_dir: Where train-*.pt, val-*.pt, records.jsonl and stats.json go.
            The starter guide's --destination_path is the same flag.
        with_subject: Start the prompt with HELM's "The following are multiple choice questions (with answers)
            about <subject>." line.
        val_fraction: Fraction of records held out for validation.
        seed: Seed of the train/val shuffle.
        max_seq_length: Examples longer than this many tokens are truncated (and counted).
        max_records: Read at most this many source records (for quick runs).
        template: "auto" (chat template if the tokenizer has one, else Alpaca), "chat" or "alpaca".
        num_workers: Tokenizer processes (0: one per CPU, 1: no subprocesses).
    """
    loaded = mmlu_style.load(source_files(source, repo_id, mmlu_style.PATTERNS), max_records, with_subject)
    return run_prepare("mmlu_style", loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
