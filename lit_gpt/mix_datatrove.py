"""The streamed mix's pass 1 (lit_gpt/mix_stream.py: normalizing, decontaminating, hashing and MinHashing every
record) as datatrove pipeline steps, so a datatrove executor spreads it over tasks: local processes here
(LocalPipelineExecutor), a Slurm array (SlurmPipelineExecutor) or a Ray cluster (RayPipelineExecutor).

    python scripts/prepare_mix.py --config mix.yaml --engine datatrove --tasks 4

Our own steps run inside datatrove rather than its MinhashDedup* and NGramsDecontFilter blocks, whose shingling,
hashing, normalization and LSH differ from ours and so keep other records; wrapped, every executor keeps exactly the
records the single-process path keeps. Task r of n takes every n-th chunk of records (`MixReader`), `MixScan` writes
its per-record hashes, band keys, signatures and contamination hits to `<work>/scan-r.npz` / `sig-r.bin`; the parent
merges them in record order and decides, tokenizes and writes as the streamed path does.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from lit_gpt.decontaminate import Vocab, record_text
from lit_gpt.utils import UserError


def iter_chunks(specs: list[dict], config_dir: Path, chunk_size: int) -> Iterator[tuple[int, int, list[dict]]]:
    """(source, first index, records) chunk after chunk: lit_gpt.mix_stream.stream_sources turned from a push into
    a pull (the loaders run in a thread, at most two chunks ahead)."""
    from lit_gpt.mix_stream import stream_sources

    q: queue.Queue = queue.Queue(maxsize=2)
    done = object()

    def work() -> None:
        try:
            stream_sources(specs, config_dir, lambda s, base, records: q.put((s, base, records)), chunk_size)
            q.put(done)
        except BaseException as e:  # handed to the reading side
            q.put(e)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


class MixReader(PipelineStep):
    """The mix config's records as Documents (text: what is compared; id: the record's index in the mix), this
    task's share: every world_size-th chunk."""

    name, type = "lit_gpt mix reader", "📖 - READER"

    def __init__(self, config: str, chunk_size: int = 10_000) -> None:
        super().__init__()
        self.config, self.chunk_size = config, chunk_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from lit_gpt.mix import load_config

        config = Path(self.config)
        specs = load_config(config)["sources"]
        for n, (s, base, records) in enumerate(iter_chunks(specs, config.parent, self.chunk_size)):
            if n % world_size != rank:
                continue
            for k, r in enumerate(records):
                if "rejected" in r:
                    raise UserError(f"{config}: a mix of preference pairs is built in memory: use --engine memory")
                self.stat_update("records")
                yield Document(text=record_text(r), id=str(base + k), metadata={"source": s, "record_id": r["id"]})


class MixScan(PipelineStep):
    """lit_gpt.mix_stream.Scan over batches of Documents; writes this task's arrays to `work`."""

    name, type = "lit_gpt mix scan", "🔢 - HASHER"

    def __init__(self, config: str, work: str, chunk_size: int = 10_000) -> None:
        super().__init__()
        self.config, self.work, self.chunk_size = config, work, chunk_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from lit_gpt.mix import eval_index, load_config, options
        from lit_gpt.mix_stream import Scan

        config, work = Path(self.config), Path(self.work)
        o = options(load_config(config))
        vocab = Vocab()
        _, _, index = eval_index(o["decontaminate"], config.parent, vocab)  # from the cache the parent filled
        with open(work / f"sig-{rank:05d}.bin", "wb") as sig_file:
            scan = Scan(index, vocab, o["dedup"], sig_file)
            batch: list[Document] = []
            for doc in data or ():
                batch.append(doc)
                if len(batch) == self.chunk_size:
                    self._add(scan, batch)
                    batch = []
            if batch:
                self._add(scan, batch)
        np.savez(work / f"scan-{rank:05d}.npz", **scan.arrays(),
                 contaminated=np.frombuffer(json.dumps(scan.contaminated).encode(), dtype=np.uint8))
        return iter(())

    def _add(self, scan, batch: list[Document]) -> None:
        scan.add(np.array([d.metadata["source"] for d in batch]), np.array([int(d.id) for d in batch]),
                 [d.text for d in batch], [d.metadata["record_id"] for d in batch])
        self.stat_update("scanned", value=len(batch))


def merge(work: Path, tasks: int, num_perm: int, near: bool) -> tuple[dict[str, np.ndarray], list[tuple]]:
    """The tasks' arrays in record order (what a single Scan gives), their signatures into work/sig.bin."""
    parts = [dict(np.load(work / f"scan-{r:05d}.npz")) for r in range(tasks)]
    contaminated = sorted(tuple(c) for p in parts for c in json.loads(p.pop("contaminated").tobytes()))
    index = np.concatenate([p["index"] for p in parts])
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(len(index))):
        raise RuntimeError("the datatrove tasks did not scan every record once")
    arrays = {k: np.concatenate([p[k] for p in parts])[order] for k in parts[0]}
    if near:  # each task's rows are runs of consecutive records: copied run by run, never all in memory
        row = 4 * num_perm
        with open(work / "sig.bin", "wb") as out:
            for r, p in enumerate(parts):
                idx = p["index"]
                starts = np.nonzero(np.concatenate([[True], idx[1:] != idx[:-1] + 1]))[0].tolist() if len(idx) else []
                with open(work / f"sig-{r:05d}.bin", "rb") as f:
                    for a, b in zip(starts, starts[1:] + [len(idx)]):
                        os.pwrite(out.fileno(), f.read((b - a) * row), int(idx[a]) * row)
    return arrays, contaminated


def datatrove_scan(tasks: int = 2, workers: int = -1, chunk_size: int = 10_000):
    """A `scan` for lit_gpt.mix_stream.stream_mix that runs pass 1 on datatrove's LocalPipelineExecutor."""
    from datatrove.executor import LocalPipelineExecutor

    from lit_gpt.mix import load_config, options

    def scan(config: Path, tmp: Path) -> tuple[dict[str, np.ndarray], list[tuple]]:
        work = tmp / "datatrove"
        work.mkdir()
        pipeline = [MixReader(str(config), chunk_size), MixScan(str(config), str(work), chunk_size)]
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(work / "logs")).run()
        dedup = options(load_config(config))["dedup"]
        arrays, contaminated = merge(work, tasks, dedup["num_perm"], dedup["near"])
        (tmp / "sig.bin").unlink(missing_ok=True)
        if (work / "sig.bin").exists():
            (work / "sig.bin").rename(tmp / "sig.bin")
        return arrays, contaminated

    return scan
