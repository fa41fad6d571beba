"""What every scripts/prepare_*.py shares: reading local or downloaded source files record by record, reporting
malformed records with file:line, and turning the records into train/val shards + records.jsonl + stats.json.

A prepare script is a loader `load(files, ...) -> Loaded` (source records -> chat records) plus a CLI `setup(...)`
that calls `run_prepare`. prepare_mix.py calls the same loaders. A chat record is
`{"id": "file:line", "source": name, "turns": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from lit_gpt.data import check_turns, encode_records, write_dataset
from lit_gpt.utils import UserError, atomic_path, cli, write_json

DEFAULT_CHECKPOINT = Path("checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct")
MAX_PRINTED_SKIPS = 20
MAX_STORED_SKIPS = 200


class RecordError(ValueError):
    """One malformed source record: `reason` is the category counted in stats.json, `detail` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


class ChunkedRecords(list):
    """A loader's record list that hands its records on in chunks instead of keeping them, so a streamed mix
    (lit_gpt/mix_stream.py) reads a source of any size in flat memory. `len` counts every record added and the
    last one stays reachable as [-1] (loaders annotate the record they just added); `flush` passes on the rest."""

    def __init__(self, flush: Callable[[list[dict]], None], chunk_size: int) -> None:
        super().__init__()
        self.flush_to, self.chunk_size, self.flushed = flush, chunk_size, 0

    def append(self, record: dict) -> None:
        if super().__len__() >= self.chunk_size:  # before adding, so the newest record is still [-1]
            self.flush()
        super().append(record)

    def flush(self) -> None:
        if super().__len__():
            self.flush_to(list(self))
            self.flushed += super().__len__()
            self.clear()

    def __len__(self) -> int:
        return self.flushed + super().__len__()


_RECORDS_SINK: ContextVar[Optional[Callable[[], list]]] = ContextVar("lit_gpt_records_sink", default=None)


@contextmanager
def chunked_records(flush: Callable[[list[dict]], None], chunk_size: int) -> Iterator[None]:
    """Within it, every new `Loaded` collects its records in a ChunkedRecords handing chunks to `flush`."""
    token = _RECORDS_SINK.set(lambda: ChunkedRecords(flush, chunk_size))
    try:
        yield
    finally:
        _RECORDS_SINK.reset(token)


def _new_records() -> list:
    sink = _RECORDS_SINK.get()
    return [] if sink is None else sink()


@dataclass
class Loaded:
    """A loader's result: the chat records, how many source records were read, and the skipped ones."""

    records: list[dict] = field(default_factory=_new_records)
    read: int = 0
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # loader-specific counts for stats.json (e.g. records over a cap)

    def skip(self, where: str, error: Exception) -> None:
        reason = getattr(error, "reason", None) or str(error)
        self.skipped[reason] += 1
        msg = f"{where}: {error}"
        if len(self.messages) < MAX_STORED_SKIPS:
            self.messages.append(msg)
        if sum(self.skipped.values()) <= MAX_PRINTED_SKIPS:
            print(f"skipped {msg}", file=sys.stderr)

    def add(self, where: str, source: str, turns: list[dict]) -> None:
        """Adds a record after validating its turns (a bad one is skipped with the reason)."""
        try:
            turns = check_turns(turns)
        except ValueError as e:
            self.skip(where, RecordError(str(e)))
            return
        self.records.append({"id": where, "source": source, "turns": turns})


def get_str(obj: Any, key: str, required: bool = True, allow_empty: bool = False) -> str:
    """`obj[key]` as a string, or a RecordError naming the missing field / wrong type / empty value."""
    if not isinstance(obj, dict):
        raise RecordError("record is not a JSON object", f"got {type(obj).__name__}")
    if key not in obj or obj[key] is None:
        if required:
            raise RecordError(f"missing field '{key}'")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise RecordError(f"field '{key}' is not a string", f"got {type(value).__name__}")
    if required and not allow_empty and not value.strip():
        raise RecordError(f"empty '{key}'")
    return value


def load_json_records(
    files: list[Path], name: str, to_turns: Callable[[Any], list[dict]], max_records: Optional[int] = None
) -> Loaded:
    """Reads up to `max_records` records of JSON files, each made into chat turns by `to_turns`.

    `to_turns` raises ValueError (RecordError) for a malformed record: it is skipped and counted with its file:line,
    as are lines that are not valid JSON.
    """
    return read_json_records(files, max_records, lambda out, where, obj: out.add(where, name, to_turns(obj)))


def read_json_records(
    files: list[Path], max_records: Optional[int], handle: Callable[[Loaded, str, Any], None]
) -> Loaded:
    """Feeds up to `max_records` records of JSON files to `handle(out, "file:line", obj)`, which adds what it makes
    of one to `out`; a ValueError it raises, or a line that is not valid JSON, skips the record with its file:line."""
    out = Loaded()
    for f in files:
        for where, obj in iter_json_records(f):
            if max_records is not None and out.read >= max_records:
                return out
            out.read += 1
            try:
                if isinstance(obj, Exception):
                    raise obj
                handle(out, where, obj)
            except ValueError as e:
                out.skip(where, e)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Reading source files


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) for every record of a .jsonl / .json (array) / .parquet file, optionally gzipped. A line that
    is not valid JSON yields (where, RecordError) so the caller can count it; `where` is "file:line" (or "file#index")."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}#{i}", row
        return
    with _open_text(path) as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        f.seek(0)
        if name.endswith(".json") and head == "[":
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
            for i, row in enumerate(data):
                yield f"{path}#{i}", row
            return
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{n}", json.loads(line)
            except json.JSONDecodeError as e:
                yield f"{path}:{n}", RecordError("bad JSON line", f"{e.msg} at column {e.colno}")


# Flags of the Lit-GPT starter guide that name one of ours (`--destination_path data/dolly` = `--out_dir data/dolly`).
FLAG_ALIASES = {"--destination_path": "--out_dir"}


def prepare_cli(setup: Callable, argv: Optional[list[str]] = None) -> Any:
    """`cli(setup)` for a prepare script, with FLAG_ALIASES accepted (`--flag value` and `--flag=value`)."""
    args = []
    for arg in sys.argv[1:] if argv is None else argv:
        flag, eq, value = arg.partition("=")
        args.append(FLAG_ALIASES.get(flag, flag) + eq + value if flag.startswith("--") else arg)
    return cli(setup, args=args)


def download(repo_id: str, patterns: list[str]) -> Path:
    """Fetches the dataset repo's files matching `patterns` from the Hugging Face Hub (cached); returns its dir."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id, repo_type="dataset", allow_patterns=patterns))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"could not download dataset {repo_id!r} from the Hugging Face Hub ({type(e).__name__}: {first}); "
            "pass --source PATH to a local copy instead"
        ) from e


def source_files(source: Optional[Path], repo_id: Optional[str], patterns: list[str]) -> list[Path]:
    """The files to read: `source` (a file, or a dir searched for `patterns`), else the downloaded `repo_id`."""
    if source is None:
        if not repo_id:
            raise UserError("pass --source PATH (a local file or dir) or --repo_id (a Hugging Face dataset)")
        source = download(repo_id, patterns)
    source = Path(source)
    if not source.exists():
        raise UserError(f"source {str(source)!r} does not exist")
    if source.is_file():
        return [source]
    files = sorted({p for pat in patterns for p in source.rglob(pat) if p.is_file()})
    if not files:
        raise UserError(f"{source}: no files matching {', '.join(patterns)}")
    return files


# ---------------------------------------------------------------------------------------------------------------------
# Writing a prepared dataset


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic shuffle of range(n) cut into (train, val); val gets round(n * val_fraction) items."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n > 1:
        n_val = max(1, n_val)
    return order[n_val:], order[:n_val]


def write_records(records: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def iter_records(path: Path) -> Iterator[dict]:
    """The records of a prepared dir's records.jsonl (written by run_prepare / prepare_mix), one at a time."""
    if not path.is_file():
        raise UserError(f"{path} does not exist: prepare the dataset with a scripts/prepare_*.py first")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from e


def read_records(path: Path) -> list[dict]:
    return list(iter_records(path))


def tokenize_and_write(
    name: str,
    train: list[dict],
    val: list[dict],
    checkpoint_dir: Path,
    out_dir: Path,
    max_seq_length: int,
    template: str,
    num_workers: int,
    skipped: Counter,
    messages: list[str],
    extra: dict,
) -> dict:
    """Tokenizes the records, writes `<split>-NNNNN.pt`, records.jsonl (the kept records, with their split) and
    stats.json; returns the stats. Records the template cannot render or that lose every response token to
    truncation are skipped with their reason."""
    if not Path(checkpoint_dir).is_dir():
        raise UserError(f"checkpoint dir {str(checkpoint_dir)!r} does not exist (it supplies the tokenizer)")
    stats: dict[str, Any] = {"name": name, **extra}
    splits, kept_records, totals = {}, [], Counter()
    for split, records in (("train", train), ("val", val)):
        examples, st = encode_records(
            records, checkpoint_dir, max_seq_length=max_seq_length, template=template, num_workers=num_workers,
            desc=f"{name} {split}",
        )
        dropped = {i for i, _ in st["skipped"]}
        for i, reason in st["skipped"]:
            skipped[reason.split(":")[0] if reason.startswith("cannot render") else reason] += 1
            if len(messages) < MAX_STORED_SKIPS:
                messages.append(f"{records[i]['id']}: {reason}")
        kept_records += [{**r, "split": split} for i, r in enumerate(records) if i not in dropped]
        splits[split] = examples
        stats[split] = {"records": st["records"], "tokens": st["tokens"], "target_tokens": st["target_tokens"]}
        for k in ("records", "tokens", "target_tokens", "truncated", "mismatch"):
            totals[k] += st[k]
    write_records(kept_records, out_dir / "records.jsonl")
    stats.update({
        "records": totals["records"],
        "tokens": totals["tokens"],
        "target_tokens": totals["target_tokens"],
        "truncated": totals["truncated"],
        "tokenization_mismatch": totals["mismatch"],
        "skipped": {"total": sum(skipped.values()), "reasons": dict(skipped), "examples": messages},
        "max_seq_length": max_seq_length,
        "checkpoint_dir": str(checkpoint_dir),
    })
    write_dataset(out_dir, splits, stats)
    return stats


def run_prepare(
    name: str,
    loaded: Loaded,
    checkpoint_dir: Path,
    out_dir: Path,
    val_fraction: float,
    seed: int,
    max_seq_length: int,
    template: str = "auto",
    num_workers: int = 0,
) -> dict:
    """The end of every prepare script: split, tokenize, write. stats["records"] == stats["read"] - skipped."""
    if not loaded.records:
        raise UserError(f"{name}: no usable records ({loaded.read} read, {sum(loaded.skipped.values())} skipped)")
    train_idx, val_idx = split_indices(len(loaded.records), val_fraction, seed)
    stats = tokenize_and_write(
        name,
        [loaded.records[i] for i in train_idx],
        [loaded.records[i] for i in val_idx],
        Path(checkpoint_dir),
        Path(out_dir),
        max_seq_length,
        template,
        num_workers,
        Counter(loaded.skipped),
        list(loaded.messages),
        {"read": loaded.read, **loaded.extra, "val_fraction": val_fraction, "seed": seed},
    )
    print(
        f"{name}: {loaded.read} records read, {stats['records']} kept ({stats['train']['records']} train, "
        f"{stats['val']['records']} val), {stats['skipped']['total']} skipped, {stats['truncated']} truncated, "
        f"{stats['tokens']:,} tokens -> {out_dir}",
        file=sys.stderr,
    )
    return stats


__all__ = [
    "DEFAULT_CHECKPOINT", "Loaded", "RecordError", "get_str", "iter_json_records", "load_json_records", "source_files",
    "run_prepare", "prepare_cli",
    "read_records", "iter_records", "chunked_records", "write_records", "split_indices", "tokenize_and_write", "write_json",
]
