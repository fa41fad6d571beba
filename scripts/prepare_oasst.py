"""Prepares OpenAssistant conversations (oasst1): rebuilds each message tree, then follows the best-ranked assistant
reply at every turn from the root prompt, giving one multi-turn conversation per tree.

Reads the export's message-tree format (`*.trees.jsonl[.gz]`: one tree a line, replies nested) and the flat
message-list format (`*.messages.jsonl[.gz]` or the HF parquet rows: one message a line, linked by parent_id).
"""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import DEFAULT_CHECKPOINT, prepare_cli, run_prepare, source_files
from lit_gpt.sources import oasst


def setup(
    source: Optional[Path] = None,
    repo_id: str = oasst.REPO_ID,
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    out_dir: Path = Path("data/oasst"),
    lang: Optional[str] = "en",
    include_synthetic: bool = False,
    val_fraction: float = 0.05,
    seed: int = 42,
    max_seq_length: int = 2048,
    max_records: Optional[int] = None,
    template: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Prepare OpenAssistant (best-ranked thread of every tree) for finetuning.

    Args:
        source: A local oasst export (`*.trees.jsonl[.gz]` or `*.messages.jsonl[.gz]`) or a dir of them; if unset,
            `repo_id` is downloaded.
        repo_id: The Hugging Face dataset to download when no `source` is given.
        checkpoint_dir: The checkpoint whose tokenizer (and chat template, if any) formats the records.
        out_dir: Where train-*.pt, val-*.pt, records.jsonl and stats.json go.
            The starter guide's --destination_path is the same flag.
        lang: Keep only trees whose prompt, and messages, are in this language (None: all languages).
        include_synthetic: Also use messages flagged synthetic (model-written).
        val_fraction: Fraction of records held out for validation.
        seed: Seed of the train/val shuffle.
        max_seq_length: Examples longer than this many tokens are truncated (and counted).
        max_records: Read at most this many trees (for quick runs).
        template: "auto" (chat template if the tokenizer has one, else Alpaca), "chat" or "alpaca".
        num_workers: Tokenizer processes (0: one per CPU, 1: no subprocesses).
    """
    loaded = oasst.load(source_files(source, repo_id, oasst.PATTERNS), max_records, lang, include_synthetic)
    return run_prepare("oasst", loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
