"""Loads CNN/DailyMail: the article in HELM's summarization prompt as the user turn, the highlights as the answer."""

from pathlib import Path
from typing import Optional

from lit_gpt.prepare import Loaded, get_str, load_json_records

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
