"""Prepares GSM8K: the math word problem as the user turn, the worked solution as the assistant turn."""

import re
import sys
from pathlib import Path
from typing import Optional

wd = Path(__file__).parent.parent.resolve()
sys.path.append(str(wd))

from scripts.prepare_common import DEFAULT_CHECKPOINT, Loaded, get_str, load_json_records, run_prepare, source_files, prepare_cli  # noqa: E402
from lit_gpt.utils import UserError  # noqa: E402

REPO_ID = "openai/gsm8k"
PATTERNS = ["train.jsonl", "main/train-*.parquet"]
_CALC = re.compile(r"<<[^>]*>>")
_FINAL = re.compile(r"\n?#### *(.+)\s*$")


def format_answer(answer: str, answer_format: str) -> str:
    """"raw": the solution as published (calculator annotations `<<48/2=24>>` and the final `#### 72`);
    "clean": annotations removed and the last line written as "The answer is 72." (HELM's GSM8K answer shape)."""
    if answer_format == "raw":
        return answer
    text = _CALC.sub("", answer)
    return _FINAL.sub(lambda m: f"\nThe answer is {m.group(1).strip()}.", text).strip()


def load(files: list[Path], max_records: Optional[int] = None, answer_format: str = "raw", name: str = "gsm8k") -> Loaded:
    if answer_format not in ("raw", "clean"):
        raise UserError(f"answer_format must be 'raw' or 'clean', got {answer_format!r}")

    def to_turns(obj) -> list[dict]:
        question, answer = get_str(obj, "question"), get_str(obj, "answer")
        return [{"role": "user", "content": question}, {"role": "assistant", "content": format_answer(answer, answer_format)}]

    return load_json_records(files, name, to_turns, max_records)


def setup(
    source: Optional[Path] = None,
    repo_id: str = REPO_ID,
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
    loaded = load(source_files(source, repo_id, PATTERNS), max_records, answer_format)
    return run_prepare("gsm8k", loaded, checkpoint_dir, out_dir, val_fraction, seed, max_seq_length, template, num_workers)


if __name__ == "__main__":
    prepare_cli(setup)
