"""Prepares the Flan 2022 collection's submixes (flan2021, t0, niv2, cot, dialog) from their published JSONL layout:
one example a line with "inputs", "targets", "task_source", "task_name" and "template_type" (zs_opt, zs_noopt,
fs_opt, fs_noopt), as in the FLAN v2 export, Open-Orca/FLAN and the *_submix_original datasets."""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import DEFAULT_CHECKPOINT, prepare_cli, run_prepare, source_files
from lit_gpt.sources import flan


def setup(
    source: Optional[Path] = None,
    repo_id: str = flan.REPO_ID,
    submixes: tuple[str, ...] = flan.SUBMIXES,
    template_types: Optional[tuple[str, ...]] = None,
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    out_dir: Path = Path("data/flan"),
    val_fraction: float = 0.05,
    seed: int = 42,
    max_seq_length: int = 2048,
    max_records: Optional[int] = 100,
    template: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Prepare Flan 2022 submixes for finetuning.

    Args:
        source: A local submix file (.jsonl/.json/.gz/.parquet) or a dir of them; if unset, the chosen submixes'
            files of `repo_id` are downloaded (Open-Orca/FLAN: `<submix>_<template>_submix_data.json`, many GB).
        repo_id: The Hugging Face dataset to download when no `source` is given.
        submixes: Which submixes to keep: flan2021, t0, niv2, cot, dialog.
        template_types: Keep only these template types (zs_opt, zs_noopt, fs_opt, fs_noopt); None keeps all.
        checkpoint_dir: The checkpoint whose tokenizer (and chat template, if any) formats the records.
        out_dir: Where train-*.pt, val-*.pt, records.jsonl and stats.json go.
            The starter guide's --destination_path is the same flag.
        val_fraction: Fraction of records held out for validation.
        seed: Seed of the train/val shuffle.
        max_seq_length: Examples longer than this many tokens are truncated (and counted).
        max_records: At most this many records per task (task_name), as the Flan mixtures cap tasks; None: all.
        template: "auto" (chat template if the tokenizer has one, else Alpaca), "chat" or "alpaca".
        num_workers: Tokenizer processes (0: one per CPU, 1: no subprocesses).
    """
    patterns = flan.PATTERNS if source else flan.download_patterns(tuple(submixes))
    loaded = flan.load(source_files(source, repo_id, patterns), tuple(submixes), template_types, max_records)
    return run_prepare("flan", loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
