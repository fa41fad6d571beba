"""Prepares CNN/DailyMail: the article in HELM's summarization prompt as the user turn, the highlights as the answer."""

import sys
from pathlib import Path
from typing import Optional

wd = Path(__file__).parent.parent.resolve()
sys.path.append(str(wd))

from scripts.prepare_common import DEFAULT_CHECKPOINT, Loaded, get_str, load_json_records, run_prepare, source_files, prepare_cli  # noqa: E402

REPO_ID = "abisee/cnn_dailymail"
PATTERNS = ["*.jsonl", "3.0.0/train-*.parquet"]


def summarize_prompt(article: str, num_sents: Optional[int] = 3) -> str:
    """HELM's summarization prompt ("###\\nArticle: ...\\n\\nSummarize the above article in 3 sentences.")."""
    ask = "Summarize the above article." if num_sents is None else (
        "Summarize the above article in 1 sentence." if num_sents == 1 else f"Summarize the above article in {num_sents} sentences."
    )
    return f"###\nArticle: {article.strip()}\n\n{ask}"


def load(files: list[Path], max_records: Optional[int] = None, num_sents: Optional[int] = 3, name: str = "cnn_dailymail") -> Loaded:
    def to_turns(obj) -> list[dict]:
        article, highlights = get_str(obj, "article"), get_str(obj, "highlights")
        return [{"role": "user", "content": summarize_prompt(article, num_sents)}, {"role": "assistant", "content": highlights}]

    return load_json_records(files, name, to_turns, max_records)


def setup(
    source: Optional[Path] = None,
    repo_id: str = REPO_ID,
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
    loaded = load(source_files(source, repo_id, PATTERNS), max_records, num_sents)
    return run_prepare("cnn_dailymail", loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
