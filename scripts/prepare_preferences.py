"""Prepares preference pairs (a prompt, a chosen and a rejected reply) for finetune/dpo.py.

    python scripts/prepare_preferences.py --source ../shared/data/oasst --out_dir data/oasst_pairs

Sources (OASST trees, prompt/chosen/rejected JSONL, HH-RLHF transcripts) and the shard layout: lit_gpt/sources/preferences.py.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from lit_gpt.data import write_dataset
from lit_gpt.prepare import (
    DEFAULT_CHECKPOINT,
    MAX_STORED_SKIPS,
    source_files,
    split_indices,
    write_records,
)
from lit_gpt.sources import preferences
from lit_gpt.utils import UserError, cli


def setup(
    source: Path,
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    out_dir: Path = Path("data/preferences"),
    lang: Optional[str] = "en",
    include_synthetic: bool = False,
    val_fraction: float = 0.1,
    seed: int = 42,
    max_seq_length: int = 1024,
    max_records: Optional[int] = None,
    template: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Prepare preference pairs for finetune/dpo.py.

    Args:
        source: A file or a dir of OASST trees (`*.trees.jsonl[.gz]`) or pair JSONL (prompt/chosen/rejected, or
            HH-RLHF-style chosen/rejected transcripts).
        checkpoint_dir: The checkpoint whose tokenizer (and chat template, if any) formats the pairs.
        out_dir: Where train-*.pt, val-*.pt, records.jsonl and stats.json go.
        lang: OASST: keep only messages in this language (None: all languages).
        include_synthetic: OASST: also use messages flagged synthetic (model-written).
        val_fraction: Fraction of pairs held out for validation (reward accuracy and margin).
        seed: Seed of the train/val shuffle.
        max_seq_length: Pairs with a side (prompt + reply) longer than this many tokens are skipped.
        max_records: Read at most this many source records (trees or lines).
        template: "auto" (chat template if the tokenizer has one, else Alpaca), "chat" or "alpaca".
        num_workers: Tokenizer processes (0: one per CPU, 1: no subprocesses).
    """
    loaded = preferences.load(source_files(source, None, preferences.PATTERNS), max_records, lang, include_synthetic)
    if not loaded.records:
        raise UserError(f"{source}: no usable pairs ({loaded.read} records read, {sum(loaded.skipped.values())} skipped)")
    train_idx, val_idx = split_indices(len(loaded.records), val_fraction, seed)
    skipped, messages = Counter(loaded.skipped), list(loaded.messages)
    stats: dict[str, Any] = {"name": preferences.KIND, "kind": preferences.KIND, "read": loaded.read, "val_fraction": val_fraction, "seed": seed}
    splits, kept = {}, []
    for split, idx in (("train", train_idx), ("val", val_idx)):
        records = [loaded.records[i] for i in idx]
        pairs, st = preferences.encode_pairs(records, checkpoint_dir, max_seq_length, template, num_workers, desc=f"pairs {split}")
        dropped = {i for i, _ in st["skipped"]}
        for i, reason in st["skipped"]:
            skipped[reason] += 1
            if len(messages) < MAX_STORED_SKIPS:
                messages.append(f"{records[i]['id']}: {reason}")
        kept += [{**r, "split": split} for i, r in enumerate(records) if i not in dropped]
        splits[split] = preferences.pair_examples(pairs)
        stats[split] = {"pairs": st["records"], "tokens": st["tokens"], "target_tokens": st["target_tokens"]}
    stats.update({"pairs": len(kept), "skipped": {"total": sum(skipped.values()), "reasons": dict(skipped),
                                                  "examples": messages},
                  "max_seq_length": max_seq_length, "checkpoint_dir": str(checkpoint_dir)})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_records(kept, Path(out_dir) / "records.jsonl")
    write_dataset(out_dir, splits, stats)
    print(f"{preferences.KIND}: {loaded.read} records read, {len(kept)} pairs ({stats['train']['pairs']} train, "
          f"{stats['val']['pairs']} val), {stats['skipped']['total']} skipped -> {out_dir}", file=sys.stderr)
    return stats


if __name__ == "__main__":
    cli(setup, as_positional=False)
