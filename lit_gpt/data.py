"""The tokenized-dataset format: `.pt` shards of examples, each `input_ids` and `labels` (-100 where no loss).

A dataset dir holds `train-00000.pt`, `train-00001.pt`, ..., `val-00000.pt`, ... and `stats.json`. A shard keeps all
its examples in two flat int32 tensors with offsets, so a shard of 100k examples loads in one read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch

from lit_gpt.utils import UserError, atomic_save

SHARD_FORMAT = "lit_gpt.shard/1"
IGNORE_INDEX = -100


def write_shard(examples: Iterable[dict], path: Path | str) -> int:
    """Writes examples ({"input_ids", "labels"} of equal length) to one shard atomically; returns the count."""
    ids, labels, offsets = [], [], [0]
    for ex in examples:
        x = torch.as_tensor(ex["input_ids"], dtype=torch.int32)
        y = torch.as_tensor(ex["labels"], dtype=torch.int32)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"input_ids {tuple(x.shape)} and labels {tuple(y.shape)} must be equal-length 1-D")
        ids.append(x)
        labels.append(y)
        offsets.append(offsets[-1] + x.numel())
    shard = {
        "format": SHARD_FORMAT,
        "input_ids": torch.cat(ids) if ids else torch.zeros(0, dtype=torch.int32),
        "labels": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int32),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
    }
    atomic_save(shard, path)
    return len(offsets) - 1


class Shard(Sequence):
    """The examples of one shard file; `shard[i]` is {"input_ids": LongTensor, "labels": LongTensor}."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            data = torch.load(self.path, weights_only=True)
        except Exception as e:
            raise UserError(f"{self.path}: not a readable shard ({type(e).__name__}: {e})") from e
        if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
            raise UserError(f"{self.path}: not a {SHARD_FORMAT} shard")
        self.input_ids, self.labels, self.offsets = data["input_ids"], data["labels"], data["offsets"]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return {"input_ids": self.input_ids[a:b].long(), "labels": self.labels[a:b].long()}

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]


def shard_paths(data_dir: Path | str, split: str) -> list[Path]:
    return sorted(Path(data_dir).glob(f"{split}-*.pt"))


class SplitDataset(Sequence):
    """All shards of one split ("train" or "val") of a dataset dir, as one indexable dataset."""

    def __init__(self, data_dir: Path | str, split: str) -> None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise UserError(f"dataset dir {str(data_dir)!r} does not exist: run a scripts/prepare_*.py first")
        self.shards = [Shard(p) for p in shard_paths(data_dir, split)]
        if not self.shards:
            raise UserError(f"{data_dir}: no {split}-*.pt shards")
        sizes = torch.tensor([len(s) for s in self.shards])
        self._ends = sizes.cumsum(0)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = int(torch.searchsorted(self._ends, i, right=True))
        start = int(self._ends[s - 1]) if s else 0
        return self.shards[s][i - start]

    def lengths(self) -> torch.Tensor:
        return torch.cat([s.lengths() for s in self.shards])
