"""prepare_mix in flat memory: the same mix as lit_gpt/mix.py's in-memory path (the same records kept and dropped,
the same shards), built from sources read in chunks, whatever their size.

Pass 1 reads every source in chunks of `chunk_size` records and keeps, per record, only what the decisions need:
its source, the evaluation item it overlaps (if any), a 16-byte hash of its normalized words, a 64-bit hash of each
LSH band of its MinHash signature (the signatures themselves go to a file on disk, read back for candidate pairs
only). Decontamination, exact and near dedup, sampling and the train/val split are then decided on those arrays,
exactly as in memory. Pass 2 reads the sources again and tokenizes the chosen records chunk by chunk, spilling
tokens and record JSON to files on disk; the shards and records.jsonl are then written from those files in the
mix's shuffled order, a shard at a time. Memory: ~150 bytes a record plus one chunk and one shard.

The per-record work of pass 1 is `Scan`; lit_gpt/mix_datatrove.py runs it as datatrove pipeline steps instead, on
several tasks (local, Slurm or Ray executors), and hands the same arrays to the same decisions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from lit_gpt.data import Encoder, shard_paths, write_shard
from lit_gpt.decontaminate import Vocab, minhash_signatures, near_duplicates, record_text
from lit_gpt.mix import choose, eval_index, load_config, load_source, options
from lit_gpt.mix_report import finish, report
from lit_gpt.prepare import ChunkedRecords, Loaded, chunked_records
from lit_gpt.utils import atomic_path, write_json

SHARD_SIZE = 100_000  # examples per shard, as lit_gpt.data.write_dataset
_P = np.uint64(0x100000001B3)


def stream_sources(specs: list[dict], config_dir: Path, handle: Callable[[int, int, list[dict]], None],
                   chunk_size: int) -> list[Loaded]:
    """Runs every source's loader with its records handed to `handle(source, first index, records)` in chunks
    (indices count across all sources, in order); returns the loaders' results, their records not kept."""
    loaded, base = [], 0
    for s, spec in enumerate(specs):
        def flush(records: list[dict], s: int = s) -> None:
            nonlocal base
            handle(s, base, records)
            base += len(records)

        with chunked_records(flush, chunk_size):
            lo = load_source(spec, config_dir)
        if isinstance(lo.records, ChunkedRecords):
            lo.records.flush()
        else:  # a loader that built its own list: handed on in chunks all the same
            for i in range(0, len(lo.records), chunk_size):
                flush(lo.records[i : i + chunk_size])
        loaded.append(lo)
    return loaded


class PairsMix(Exception):
    """A source holds preference pairs: such mixes (small) are built in memory (lit_gpt.mix.setup falls back)."""


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: a polynomial hash of each LSH band's `rows` signature values (equal bands hash equal)."""
    h = np.zeros((len(sig), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            h = h * _P + sig[:, r : bands * rows : rows].astype(np.uint64) + np.uint64(1)
    return h


class Scan:
    """Pass 1: per chunk of records, their overlap with the evaluation sets, exact-duplicate hash and MinHash
    signature (to `sig_file`) with its band hashes. Only these arrays and the contaminated records' ids are kept."""

    def __init__(self, index, vocab: Vocab, dedup_cfg: dict, sig_file=None) -> None:
        from datasketch import MinHashLSH

        self.index, self.vocab, self.dedup, self.sig_file = index, vocab, dedup_cfg, sig_file
        lsh = MinHashLSH(threshold=dedup_cfg["threshold"], num_perm=dedup_cfg["num_perm"])
        self.bands, self.rows = lsh.b, lsh.r
        self.parts: dict[str, list[np.ndarray]] = defaultdict(list)  # owner, item, digest, bands: one per chunk
        self.contaminated: list[tuple[int, int, str]] = []  # (record index, eval item, record id)

    def __call__(self, s: int, base: int, records: list[dict]) -> None:
        if any("rejected" in r for r in records):
            raise PairsMix()
        self.add(np.full(len(records), s), np.arange(base, base + len(records)), [record_text(r) + (
            "\n" + r["rejected"] if "rejected" in r else "") for r in records], [r["id"] for r in records])

    def add(self, owner: np.ndarray, index: np.ndarray, texts: list[str], record_ids: list[str]) -> None:
        """Records given by their source, index in the mix, compared text and id."""
        ids, lengths = self.vocab.encode_many(texts)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        item = np.full(len(texts), -1, dtype=np.int64)
        if self.index is not None:
            for k, it in enumerate(self.index.match(ids, lengths)):
                if it is not None:
                    item[k] = it
                    self.contaminated.append((int(index[k]), it, record_ids[k]))
        digest = b"".join(hashlib.blake2b(ids[starts[k] : starts[k + 1]].tobytes(), digest_size=16).digest()
                          for k in range(len(texts)))
        self.parts["owner"].append(np.asarray(owner, dtype=np.int64))
        self.parts["index"].append(np.asarray(index, dtype=np.int64))
        self.parts["item"].append(item)
        self.parts["digest"].append(np.frombuffer(digest, dtype=np.uint64).reshape(-1, 2))
        if self.dedup["near"]:
            sig = minhash_signatures(ids, lengths, self.dedup["num_perm"], self.dedup["shingle"], seed=1)
            self.sig_file.write(sig.tobytes())
            self.parts["bands"].append(band_hashes(sig, self.bands, self.rows))

    def arrays(self) -> dict[str, np.ndarray]:
        empty = {"owner": np.zeros(0, np.int64), "index": np.zeros(0, np.int64), "item": np.zeros(0, np.int64), "digest": np.zeros((0, 2), np.uint64),
                 "bands": np.zeros((0, self.bands), np.uint64)}
        return {k: np.concatenate(self.parts[k]) if self.parts[k] else v for k, v in empty.items()}


def decide(a: dict[str, np.ndarray], contaminated: list[tuple[int, int, str]], sig: Optional[np.ndarray], index,
           specs: list[dict], dedup_cfg: dict) -> tuple[np.ndarray, list[tuple], dict]:
    """Keep/drop per record from pass 1's arrays, as the in-memory path decides: contaminated, then exact
    duplicates among the clean (the first wins), then near duplicates. Returns the keep mask, the drops in
    dropped.jsonl's order as (record index, reason, extra: eval set and item / the index of the record kept), and
    the per-source counts."""
    keep, owner = a["item"] < 0, a["owner"]
    drops: list[tuple] = []
    per = {"contaminated": defaultdict(Counter), "exact": Counter(), "near": Counter()}
    for i, it, _ in contaminated:
        eval_set, item_id = index.describe(it)
        per["contaminated"][owner[i]][eval_set] += 1
        drops.append((i, "contaminated", (eval_set, item_id)))
    clean = np.nonzero(keep)[0]
    if dedup_cfg["exact"] and len(clean):
        d = a["digest"][clean]
        order = np.lexsort((d[:, 1], d[:, 0]))  # stable: within equal hashes, the earliest record first
        sd = d[order]
        new = np.concatenate([[True], (sd[1:] != sd[:-1]).any(axis=1)])
        first = clean[order][np.maximum.accumulate(np.where(new, np.arange(len(new)), 0))]
        for i, j in sorted(zip(clean[order][~new].tolist(), first[~new].tolist())):  # by record, as in memory
            keep[i] = False
            per["exact"][owner[i]] += 1
            drops.append((i, "exact duplicate", j))
    if dedup_cfg["near"] and keep.any():
        for i, j in near_duplicates(sig, dedup_cfg["threshold"], keep=keep, band_keys=a["bands"]).items():
            keep[i] = False
            per["near"][owner[i]] += 1
            drops.append((i, "near duplicate", j))
    return keep, drops, per


class Spill:
    """Pass 2: tokenizes the chosen records of each chunk and appends their tokens and JSON to files in `tmp`;
    remembers the ids of the records dropped.jsonl names."""

    def __init__(self, tmp: Path, encoder: Encoder, needed: np.ndarray, named: set[int]) -> None:
        self.encoder, self.needed, self.named = encoder, needed, named
        self.f_ids, self.f_labels, self.f_rec = (open(tmp / n, "wb") for n in ("ids.bin", "labels.bin", "rec.jsonl"))
        n = len(needed)
        self.tok_off, self.tok_len = np.zeros(n, np.int64), np.full(n, -1, np.int64)  # -1: not tokenized
        self.rec_off, self.rec_len = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.truncated = np.zeros(n, bool)
        self.errors: dict[int, str] = {}
        self.ids: dict[int, str] = {}
        self.sources: dict[int, str] = {}
        self.tokens = self.bytes = 0

    def __call__(self, s: int, base: int, records: list[dict]) -> None:
        for k, r in enumerate(records):
            if base + k in self.named:
                self.ids[base + k] = r["id"]
        chosen = [k for k in range(len(records)) if self.needed[base + k]]
        if not chosen:
            return
        out = self.encoder.encode([records[k] for k in chosen])
        out["ids"].tofile(self.f_ids)
        out["labels"].tofile(self.f_labels)
        lengths = iter(out["lengths"].tolist())
        for j, k in enumerate(chosen):
            i = base + k
            if not out["ok"][j]:
                self.errors[i], self.sources[i] = out["errors"][j], records[k]["source"]
                self.ids[i] = records[k]["id"]
                continue
            self.tok_off[i], self.tok_len[i] = self.tokens, next(lengths)
            self.tokens += int(self.tok_len[i])
            line = json.dumps(records[k], ensure_ascii=False).encode("utf-8")
            self.rec_off[i], self.rec_len[i] = self.bytes, len(line)
            self.f_rec.write(line)
            self.bytes += len(line)
        self.truncated[[base + chosen[j] for j in out["truncated"]]] = True

    def close(self) -> None:
        for f in (self.f_ids, self.f_labels, self.f_rec):
            f.close()


def write_mix(out_dir: Path, tmp: Path, spill: Spill, train: list[int], val: list[int], owner: np.ndarray,
              stats_of: Callable[[dict], dict]) -> tuple[dict, list[tuple[int, str]]]:
    """Writes the shards and records.jsonl in the mix's order from the spilled files, a shard at a time; then
    stats.json (`stats_of(counts)`). Returns the counts and the records skipped at tokenization, in order. The
    spilled files are read record by record (os.pread), not mapped: mapped pages would count as resident."""
    c = {"tokens": Counter(), "out": Counter(), "skipped": Counter(), "split": Counter(), "truncated": 0}
    skipped, reported = [], set()
    out_dir.mkdir(parents=True, exist_ok=True)
    fds = [os.open(tmp / name, os.O_RDONLY) for name in ("ids.bin", "labels.bin", "rec.jsonl")]
    try:
        with atomic_path(out_dir / "records.jsonl") as rec_tmp, open(rec_tmp, "wb") as fw:
            for split, idx in (("train", train), ("val", val)):
                for old in shard_paths(out_dir, split):
                    old.unlink()
                examples, shards, tail = [], 0, f', "split": "{split}"}}\n'.encode()
                for i in idx:
                    n = int(spill.tok_len[i])
                    if n < 0:
                        c["skipped"][owner[i]] += 1
                        if i not in reported:
                            reported.add(i)
                            skipped.append(i)
                        continue
                    a = int(spill.tok_off[i]) * 4
                    examples.append({"input_ids": np.frombuffer(bytearray(os.pread(fds[0], 4 * n, a)), np.int32),
                                     "labels": np.frombuffer(bytearray(os.pread(fds[1], 4 * n, a)), np.int32)})
                    fw.write(os.pread(fds[2], int(spill.rec_len[i]) - 1, int(spill.rec_off[i])) + tail)
                    c["tokens"][owner[i]] += n
                    c["out"][(owner[i], split)] += 1
                    c["split"][f"{split}_records"] += 1
                    c["split"][f"{split}_tokens"] += n
                    c["truncated"] += bool(spill.truncated[i])
                    if len(examples) == SHARD_SIZE:
                        write_shard(examples, out_dir / f"{split}-{shards:05d}.pt")
                        examples, shards = [], shards + 1
                if examples or not shards:
                    write_shard(examples, out_dir / f"{split}-{shards:05d}.pt")
                c["split"].update({f"{split}_records": 0, f"{split}_tokens": 0})  # present when 0
    finally:
        for fd in fds:
            os.close(fd)
    write_json(stats_of(c), out_dir / "stats.json")
    return c, skipped


def write_dropped(path: Path, drops: list[tuple], spill: Spill, specs: list[dict], owner: np.ndarray,
                  contaminated_ids: dict[int, str], skipped: list[int]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i, reason, extra in drops:
            row = {"id": contaminated_ids.get(i) or spill.ids[i], "source": specs[owner[i]]["name"], "reason": reason}
            if reason == "contaminated":
                row |= {"eval_set": extra[0], "eval_item": extra[1]}
            else:
                row["of"] = spill.ids[extra]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        for i in skipped:
            f.write(json.dumps({"id": spill.ids[i], "source": spill.sources[i], "reason": spill.errors[i]},
                               ensure_ascii=False) + "\n")


def stream_mix(config: Path, checkpoint_dir: Path, out_dir: Path, chunk_size: int = 10_000,
               scan: Optional[Callable] = None) -> dict:
    """lit_gpt.mix.setup's mix, streamed (see the module docstring). `scan(config, tmp) -> (Scan.arrays(),
    Scan.contaminated)`, with the signatures in tmp/sig.bin in record order, replaces pass 1 (lit_gpt/mix_datatrove.py)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    cfg = load_config(config)
    config_dir, specs, o = config.parent, cfg["sources"], options(cfg)
    dedup_cfg = o["dedup"]
    vocab = Vocab()
    eval_sets, missing_sets, index = eval_index(o["decontaminate"], config_dir, vocab)
    timings["eval_index"] = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".stream-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        if scan is None:
            with open(tmp / "sig.bin", "wb") as sig_file:
                sc = Scan(index, vocab, dedup_cfg, sig_file)
                stream_sources(specs, config_dir, sc, chunk_size)
            arrays, contaminated = sc.arrays(), sc.contaminated
        else:
            arrays, contaminated = scan(config, tmp)
        timings["scan"] = time.perf_counter() - t
        t = time.perf_counter()
        n = len(arrays["owner"])
        sig = None
        if dedup_cfg["near"] and n:
            sig = np.memmap(tmp / "sig.bin", dtype=np.uint32, mode="r", shape=(n, dedup_cfg["num_perm"]))
        keep, drops, per = decide(arrays, contaminated, sig, index, specs, dedup_cfg)
        del sig
        owner = arrays["owner"]
        train, val, per_source = choose(specs, keep, owner, o["seed"], o["val_fraction"])
        timings["decide"] = time.perf_counter() - t
        t = time.perf_counter()
        needed = np.zeros(n, bool)
        needed[train] = needed[val] = True
        named = {i for i, reason, _ in drops if reason != "contaminated"} | {
            j for _, reason, j in drops if reason != "contaminated"}
        spill = Spill(tmp, Encoder(checkpoint_dir, o["max_seq_length"], o["template"]), needed, named)
        try:
            loaded = stream_sources(specs, config_dir, spill, chunk_size)
        finally:
            spill.close()
        timings["tokenize"] = time.perf_counter() - t
        t = time.perf_counter()
        counts = {**per, "per_source": per_source}

        def stats_of(c: dict) -> dict:
            counts.update(c)
            manifest, stats = report(config, checkpoint_dir, o, eval_sets, missing_sets, index, specs, loaded, counts)
            counts["manifest"] = manifest
            return stats

        _, skipped = write_mix(out_dir, tmp, spill, train, val, owner, stats_of)
        write_dropped(out_dir / "dropped.jsonl", drops, spill, specs, owner,
                      {i: rid for i, _, rid in contaminated}, skipped)
        timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return finish(counts["manifest"], timings, out_dir)
