"""The tokenized-dataset format: `.pt` shards of examples, each `input_ids` and `labels` (-100 where no loss).

A dataset dir holds `train-00000.pt`, `train-00001.pt`, ..., `val-00000.pt`, ... and `stats.json`. A shard keeps all
its examples in two flat int32 tensors with offsets, so a shard of 100k examples loads in one read.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from lit_gpt.utils import UserError, atomic_save, write_json

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


# ---------------------------------------------------------------------------------------------------------------------
# Prompt formatting and tokenization: a record is a list of turns, rendered with the model's chat template when the
# tokenizer has one and an Alpaca-style template otherwise; only assistant turns carry labels.

ROLES = ("system", "user", "assistant")
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


def check_turns(turns: object) -> list[dict]:
    """The turns of one record, validated and with content stripped; raises ValueError naming what is wrong.

    A record is an optional system turn, then user and assistant turns alternating, starting with a user turn
    and holding at least one assistant turn; every content is a non-empty string.
    """
    if not isinstance(turns, list) or not turns:
        raise ValueError("turns must be a non-empty list")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "role" not in t or "content" not in t:
            raise ValueError(f"turn {i} must be an object with 'role' and 'content'")
        role, content = t["role"], t["content"]
        if role not in ROLES:
            raise ValueError(f"turn {i}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise ValueError(f"turn {i}: {role} content must be a string, got {type(content).__name__}")
        content = content.strip()
        if not content:
            raise ValueError(f"turn {i}: empty {role} content")
        out.append({"role": role, "content": content})
    body = out[1:] if out[0]["role"] == "system" else out
    for i, t in enumerate(body):
        if t["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise ValueError("roles must be an optional system turn, then user/assistant alternating from user")
    if len(body) < 2:
        raise ValueError("no assistant turn")
    return out


def alpaca_segments(turns: list[dict]) -> list[tuple[str, bool]]:
    """(text, is_target) pieces of the Alpaca rendering; each target is followed by EOS (added by the encoder).

    Every piece boundary sits after a newline and before stripped text, so tokenizing the pieces separately gives
    the same ids as tokenizing the whole text with byte-level BPE.
    """
    system = turns[0]["content"] if turns[0]["role"] == "system" else ALPACA_PREAMBLE
    body = turns[1:] if turns[0]["role"] == "system" else turns
    segments, prefix = [], system + "\n\n"
    for i in range(0, len(body) - 1, 2):
        if i:
            prefix = "\n\n"
        segments.append((f"{prefix}### Instruction:\n{body[i]['content']}\n\n### Response:\n", False))
        segments.append((body[i + 1]["content"], True))
    return segments


def alpaca_prompt(turns: list[dict]) -> str:
    """The Alpaca prompt for generation: the record's turns (ending with a user turn) and the response header."""
    text = "".join(t for t, _ in alpaca_segments(turns + [{"role": "assistant", "content": ""}]))
    return text


def chat_segments(tokenizer, turns: list[dict]) -> list[tuple[str, bool]]:
    """(text, is_target) pieces of the chat-template rendering; targets are each assistant turn's content and its
    end-of-turn token (e.g. `<|im_end|>`), found by rendering the conversation up to each assistant turn."""
    full = tokenizer.apply_chat_template(turns, add_generation_prompt=False)
    segments, pos = [], 0
    for i, t in enumerate(turns):
        if t["role"] != "assistant":
            continue
        start = tokenizer.apply_chat_template(turns[:i], add_generation_prompt=True)
        end = full if i == len(turns) - 1 else tokenizer.apply_chat_template(turns[: i + 1], add_generation_prompt=False)
        if not (full.startswith(start) and full.startswith(end) and pos <= len(start) < len(end)):
            raise ValueError("the chat template does not render a conversation's prefix as a prefix of it")
        target = end[len(start):].rstrip()  # whitespace after the end-of-turn token is formatting, not the answer
        segments.append((full[pos:len(start)], False))
        segments.append((target, True))
        pos = len(start) + len(target)
    segments.append((full[pos:], False))
    return [s for s in segments if s[0]]


class Encoder:
    """Turns records into {"input_ids", "labels"} with one tokenizer; `encode` is what the worker processes run."""

    def __init__(self, checkpoint_dir: Path | str, max_seq_length: int = 2048, template: str = "auto") -> None:
        from lit_gpt.tokenizer import Tokenizer

        self.tokenizer = Tokenizer(checkpoint_dir)
        if template == "auto":
            template = "chat" if self.tokenizer.chat_template else "alpaca"
        if template not in ("chat", "alpaca"):
            raise ValueError(f"template must be 'auto', 'chat' or 'alpaca', got {template!r}")
        if template == "chat" and not self.tokenizer.chat_template:
            raise UserError(f"{checkpoint_dir}: the tokenizer has no chat template (use template='alpaca')")
        if template == "alpaca" and self.tokenizer.eos_id is None:
            raise UserError(f"{checkpoint_dir}: the tokenizer has no EOS token to end responses with")
        self.template, self.max_seq_length = template, max_seq_length
        bos = self.tokenizer.bos_id
        self.bos_text = self.tokenizer.decode([bos]) if bos is not None else None

    def segments(self, turns: list[dict]) -> list[tuple[str, bool]]:
        return chat_segments(self.tokenizer, turns) if self.template == "chat" else alpaca_segments(turns)

    def encode(self, records: list[dict], check: int = 4) -> dict:
        """Encodes records (dicts with "turns") into flat arrays: {"ids", "labels"} (int32, the kept examples one
        after another), "lengths" (of the kept examples), "ok" (per record), "errors" (per record: None or why it was
        skipped), "truncated" (indices of the records cut to max_seq_length) and "mismatch". The first `check`
        records are also tokenized whole, to count records whose piecewise tokenization differs from the whole-text
        one ("mismatch"; expected 0)."""
        tok = self.tokenizer
        all_segments, errors = [], []
        for r in records:
            try:
                all_segments.append(self.segments(check_turns(r["turns"])))
                errors.append(None)
            except Exception as e:  # a template that rejects the conversation: reported, not fatal
                all_segments.append([])
                errors.append(f"cannot render: {e}")
        if tok.backend == "sentencepiece":
            # SentencePiece encodes each chunk with a dummy-prefix space, so pieces are cut from the whole text's
            # ids at the lengths of its prefixes instead (exact wherever a prefix tokenizes as a prefix).
            flat = []
            for segs in all_segments:
                text = ""
                for t, _ in segs:
                    text += t
                    flat.append(text)
            prefix_ids = tok.encode_batch(flat, bos=False, eos=False) if flat else []
            seg_ids, k = [], 0
            for segs in all_segments:
                whole, start = prefix_ids[k + len(segs) - 1] if segs else [], 0
                for j in range(len(segs)):
                    end = max(start, min(len(prefix_ids[k + j]), len(whole)))
                    seg_ids.append([whole[start:end]])
                    start = end
                k += len(segs)
            check = 0
        else:
            flat = [text for segs in all_segments for text, _ in segs]
            seg_ids = tok.encode_batch_parts(flat) if flat else []  # each segment as parts (cut at special tokens)
        # Every record as a run of pieces (its segments, with BOS before and EOS after each Alpaca answer), each
        # piece all-target or no-target; the flat arrays are then built with numpy, not token by token.
        bos = tok.bos_id if tok.bos_id is not None and tok.use_bos else None
        eos = [tok.eos_id] if self.template == "alpaca" else None
        pieces, piece_target, record_pieces, k = [], [], [], 0
        for segs, err in zip(all_segments, errors):
            n0 = len(pieces)
            if err is None:
                if bos is not None and not (self.template == "chat" and segs[0][0].startswith(self.bos_text)):
                    pieces.append([bos])
                    piece_target.append(False)
                for j, (_, is_target) in enumerate(segs):
                    pieces += seg_ids[k + j]
                    piece_target += [is_target] * len(seg_ids[k + j])
                    if is_target and eos:
                        pieces.append(eos)
                        piece_target.append(True)
            k += len(segs)
            record_pieces.append(len(pieces) - n0)
        piece_len = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        ids = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int32, count=int(piece_len.sum()))
        labels = np.where(np.repeat(np.array(piece_target, dtype=bool), piece_len), ids, np.int32(IGNORE_INDEX))
        piece_end = np.concatenate([[0], np.cumsum(piece_len)])
        record_end = piece_end[np.cumsum(record_pieces)]
        record_start = np.concatenate([[0], record_end[:-1]])
        keep_ids, keep_labels, lengths, ok, truncated, mismatch = [], [], [], [], [], 0
        k = 0
        for n, (segs, err) in enumerate(zip(all_segments, errors)):
            a, b = int(record_start[n]), int(record_end[n])
            if err is None and n < check:
                whole = tok.encode_batch(["".join(t for t, _ in segs)], bos=False, eos=False)[0]
                mismatch += whole != [i for parts in seg_ids[k : k + len(segs)] for p in parts for i in p]
            k += len(segs)
            if err is None and b - a > self.max_seq_length:
                truncated.append(n)
                b = a + self.max_seq_length
            if err is None and not (labels[a:b] != IGNORE_INDEX).any():  # no response token survived truncation
                errors[n] = err = f"no response tokens within max_seq_length={self.max_seq_length}"
            ok.append(err is None)
            if err is None:
                keep_ids.append(ids[a:b])
                keep_labels.append(labels[a:b])
                lengths.append(b - a)
        empty = np.zeros(0, dtype=np.int32)
        return {"ids": np.concatenate(keep_ids) if keep_ids else empty,
                "labels": np.concatenate(keep_labels) if keep_labels else empty,
                "lengths": np.array(lengths, dtype=np.int64), "ok": ok, "errors": errors,
                "truncated": truncated, "mismatch": mismatch}


_WORKER: dict = {}


def _worker_init(checkpoint_dir: str, max_seq_length: int, template: str) -> None:
    _WORKER["encoder"] = Encoder(checkpoint_dir, max_seq_length, template)


def _worker_encode(records: list[dict]) -> dict:
    return _WORKER["encoder"].encode(records)


def encode_records(
    records: list[dict],
    checkpoint_dir: Path | str,
    max_seq_length: int = 2048,
    template: str = "auto",
    num_workers: int = 0,
    chunk_size: int = 2000,
    desc: str = "tokenizing",
    encoder: Optional[Encoder] = None,
) -> tuple[list[dict], dict]:
    """Tokenizes records; returns the examples (in record order, skipped records left out) and stats: records,
    tokens, target_tokens, truncated, mismatch, `skipped` as a list of (record index, reason) and `truncated_records`
    (record indices).

    num_workers: 0 picks: this process when the tokenizer encodes a batch on all cores itself (HF tokenizers and
    tiktoken, in Rust), else one process per CPU (at most 8; SentencePiece encodes one text at a time); 1: this
    process; N: N processes. `encoder` reuses an `Encoder` already built for this checkpoint and settings.
    """
    import multiprocessing as mp

    from tqdm import tqdm

    if encoder is None and num_workers <= 0:  # its tokenizer's backend decides
        encoder = Encoder(checkpoint_dir, max_seq_length, template)
    if num_workers <= 0:
        num_workers = 1 if encoder.tokenizer.backend != "sentencepiece" else max(1, min(os.cpu_count() or 1, 8))
    if num_workers > 1:
        chunk_size = min(chunk_size, 500)  # several chunks per process, so the pool stays busy
    num_workers = max(1, min(num_workers, (len(records) + chunk_size - 1) // chunk_size))
    chunks = [records[i : i + chunk_size] for i in range(0, len(records), chunk_size)]
    if num_workers == 1:
        encoder = encoder or Encoder(checkpoint_dir, max_seq_length, template)
        results = map(encoder.encode, chunks)
        pool = None
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ctx.Pool(num_workers, initializer=_worker_init, initargs=(str(checkpoint_dir), max_seq_length, template))
        results = pool.imap(_worker_encode, chunks)
    examples, skipped, truncated = [], [], []
    stats = {"records": 0, "tokens": 0, "target_tokens": 0, "truncated": 0, "mismatch": 0}
    try:
        with tqdm(total=len(records), desc=desc, unit="rec", disable=not records or None) as bar:
            base = 0
            for chunk, out in zip(chunks, results):
                offsets = np.concatenate([[0], np.cumsum(out["lengths"])])
                k = 0
                for j, (ok, err) in enumerate(zip(out["ok"], out["errors"])):
                    if not ok:
                        skipped.append((base + j, err))
                        continue
                    a, b = offsets[k], offsets[k + 1]
                    examples.append({"input_ids": out["ids"][a:b], "labels": out["labels"][a:b]})
                    k += 1
                stats["tokens"] += int(out["lengths"].sum())
                stats["target_tokens"] += int((out["labels"] != IGNORE_INDEX).sum())
                truncated += [base + j for j in out["truncated"]]
                stats["mismatch"] += out["mismatch"]
                base += len(chunk)
                bar.update(len(chunk))
    finally:
        if pool is not None:
            pool.terminate()
    stats["records"], stats["truncated"] = len(examples), len(truncated)
    if stats["mismatch"]:
        print(
            f"warning: {stats['mismatch']} checked records tokenize differently piecewise than whole; "
            "labels may be off by a token at turn boundaries",
            file=sys.stderr,
        )
    return examples, {**stats, "skipped": skipped, "truncated_records": truncated}


def write_dataset(
    out_dir: Path | str, splits: dict[str, list[dict]], stats: dict, shard_size: int = 100_000
) -> dict[str, int]:
    """Writes each split's examples as `<split>-NNNNN.pt` shards and `stats.json`; old shards are replaced."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, examples in splits.items():
        for old in shard_paths(out_dir, split):
            old.unlink()
        for n, i in enumerate(range(0, max(len(examples), 1), shard_size)):
            write_shard(examples[i : i + shard_size], out_dir / f"{split}-{n:05d}.pt")
        counts[split] = len(examples)
    write_json(stats, out_dir / "stats.json")
    return counts
