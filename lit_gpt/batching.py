"""Turning tokenized examples into training batches: padding, length-grouped batches and packing.

Every batch holds `input_ids` (B, T), `targets` (B, T) and `num_tokens` (the non-padding tokens): the next-token labels already shifted per example
(`targets[t] = labels[t + 1]`, -100 after the last token), so a packed sequence never asks an example's last token
to predict the next example's first one, and the loss is a plain cross-entropy over (B*T) without shifting.
Packed batches also carry `segment_ids` (B, T); `lit_gpt.model.packed_attention(segment_ids)` turns them into the
attention mask and rotary positions that restart per example.
"""

from __future__ import annotations

import bisect
from typing import Optional, Sequence

import torch

IGNORE_INDEX = -100


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    return torch.cat((labels[1:], labels.new_full((1,), IGNORE_INDEX)))


def truncate(example: dict, max_seq_length: int) -> dict:
    if example["input_ids"].numel() <= max_seq_length:
        return example
    return {"input_ids": example["input_ids"][:max_seq_length], "labels": example["labels"][:max_seq_length]}


def pad_collate(examples: Sequence[dict], pad_id: int = 0, pad_to: Optional[int] = None) -> dict[str, torch.Tensor]:
    """Right-pads examples into one batch. Pads come after each row's tokens, so causal attention never lets a real
    token see them and no attention mask is needed; their targets are -100."""
    T = max(ex["input_ids"].numel() for ex in examples)
    T = max(T, pad_to or 0)
    B = len(examples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    for i, ex in enumerate(examples):
        n = ex["input_ids"].numel()
        input_ids[i, :n] = ex["input_ids"]
        targets[i, :n] = shift_targets(ex["labels"])
    n = sum(ex["input_ids"].numel() for ex in examples)
    return {"input_ids": input_ids, "targets": targets, "num_tokens": torch.tensor(n)}


def pack_collate(bins: Sequence[Sequence[dict]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """One row per bin, its examples back to back; segment ids number the examples of a row from 0 and the padding
    at the end of a row gets a segment of its own (it attends only to itself and carries no loss)."""
    lengths = [sum(ex["input_ids"].numel() for ex in b) for b in bins]
    B, T = len(bins), max(lengths)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    segment_ids = torch.full((B, T), len(max(bins, key=len)), dtype=torch.long)
    for i, b in enumerate(bins):
        pos = 0
        for j, ex in enumerate(b):
            n = ex["input_ids"].numel()
            input_ids[i, pos:pos + n] = ex["input_ids"]
            targets[i, pos:pos + n] = shift_targets(ex["labels"])
            segment_ids[i, pos:pos + n] = j
            pos += n
    return {"input_ids": input_ids, "targets": targets, "segment_ids": segment_ids, "num_tokens": torch.tensor(sum(lengths))}


def length_grouped_batches(
    lengths: Sequence[int] | torch.Tensor, batch_size: int, generator: torch.Generator, mega_batch_mult: int = 50
) -> list[list[int]]:
    """Batches of indices with similar lengths, in random order, the one holding the longest example first.

    Shuffles, cuts into mega-batches of `mega_batch_mult * batch_size`, sorts each by length and cuts it into
    batches (the scheme of HF's LengthGroupedSampler): little padding, yet random batches. Putting the longest batch
    first makes an out-of-memory error show at step 1 instead of hours in.
    """
    lengths = torch.as_tensor(lengths)
    perm = torch.randperm(len(lengths), generator=generator)
    mega = batch_size * mega_batch_mult
    batches = []
    for start in range(0, len(perm), mega):
        chunk = perm[start:start + mega]
        chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)].tolist()
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    batches = [batches[i] for i in order]
    return _longest_first(batches, lambda b: int(lengths[b].max()) * len(b))


def pack_bins(
    lengths: Sequence[int] | torch.Tensor, max_seq_length: int, generator: torch.Generator
) -> list[list[int]]:
    """Groups example indices into bins of at most `max_seq_length` tokens (best-fit decreasing over shuffled
    examples, so bins are full and their contents random); bins come out in random order."""
    lengths = torch.as_tensor(lengths).clamp(max=max_seq_length)
    perm = torch.randperm(len(lengths), generator=generator)
    order = perm[torch.argsort(lengths[perm], descending=True, stable=True)].tolist()
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, bin index)
    for idx in order:
        n = int(lengths[idx])
        k = bisect.bisect_left(free, (n, -1))  # the tightest bin that still fits
        if k < len(free):
            room, b = free.pop(k)
            bins[b].append(idx)
            bisect.insort(free, (room - n, b))
        else:
            bins.append([idx])
            bisect.insort(free, (max_seq_length - n, len(bins) - 1))
    shuffled = torch.randperm(len(bins), generator=generator).tolist()
    return [bins[i] for i in shuffled]


def packed_batches(
    lengths: Sequence[int] | torch.Tensor, batch_size: int, max_seq_length: int, generator: torch.Generator
) -> list[list[list[int]]]:
    """Batches of `batch_size` bins (each a list of example indices), the fullest batch first."""
    lengths = torch.as_tensor(lengths).clamp(max=max_seq_length)
    bins = pack_bins(lengths, max_seq_length, generator)
    batches = [bins[i:i + batch_size] for i in range(0, len(bins), batch_size)]
    return _longest_first(batches, lambda b: max(int(lengths[x].sum()) for x in b) * len(b))


def _longest_first(batches: list, size) -> list:
    if not batches:
        return batches
    i = max(range(len(batches)), key=lambda j: size(batches[j]))
    return [batches[i]] + batches[:i] + batches[i + 1:]
