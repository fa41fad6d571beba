"""Keeping evaluation data out of training data: text normalization, n-gram overlap against evaluation sets,
exact and near-duplicate removal (MinHash LSH), and loaders for the evaluation sets' published formats.

Everything works on normalized words (lowercase, punctuation deleted, whitespace collapsed), so light edits of an
evaluation item (case, punctuation, spacing) still match. Words are mapped to integer ids once; n-grams are then
hashed for all records at once with numpy, which keeps a 10k-record mix to a fraction of its tokenization time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from lit_gpt.utils import UserError

_PUNCT = re.compile(r"[^\w\s]+")
# The same class in RE2 (Arrow's regex engine), whose \w and \s are ASCII-only: Python's \w is letters, numbers and
# "_"; its \s also takes \v, \x1c-\x1f, \x85 and the Unicode spaces (Z).
_PUNCT_RE2 = r"[^\p{L}\p{N}_\t\n\v\f\r\x1c-\x1f\x85\p{Z}]+"
_P = np.uint64(0x100000001B3)  # FNV prime: the base of the polynomial rolling hash


def normalize(text: str) -> list[str]:
    """Lowercased words with punctuation deleted: "Tom's  CAR, red." -> ["toms", "car", "red"]."""
    return _PUNCT.sub("", text.lower()).split()


def record_text(record: dict) -> str:
    """The text of a record that is compared: every turn's content (system prompts too), one per line."""
    return "\n".join(t["content"] for t in record["turns"] if isinstance(t, dict) and isinstance(t.get("content"), str))


class Vocab:
    """Word -> 64-bit id (a hash of the word, so ids agree across runs and a cached evaluation index stays valid)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def _id(self, word: str) -> int:
        i = self.ids.get(word)
        if i is None:
            i = self.ids[word] = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little") or 1
        return i

    def encode(self, words: list[str]) -> list[int]:
        return [self._id(w) for w in words]

    def encode_many(self, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' word ids concatenated (uint64) and each text's word count.

        Lower-casing, punctuation removal and splitting run in Arrow's C++ string kernels, and only the distinct
        words meet Python: 4x faster than `normalize` per text, with the same words (tests compare them)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        texts = pa.array(list(texts), type=pa.large_string())
        if not len(texts):
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        cleaned = pc.replace_substring_regex(pc.utf8_lower(texts), pattern=_PUNCT_RE2, replacement="")
        words = pc.utf8_split_whitespace(cleaned)
        flat = pc.list_flatten(words)
        # Arrow's split keeps the empty strings around leading, trailing and repeated whitespace: drop them
        nonempty = pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
        offsets = words.offsets.to_numpy()
        counts = np.concatenate([[0], np.cumsum(nonempty, dtype=np.int64)])
        lengths = counts[offsets[1:]] - counts[offsets[:-1]]
        codes = flat.filter(pa.array(nonempty)).dictionary_encode()
        distinct = codes.dictionary.to_pylist()
        table = np.fromiter((self._id(w) for w in distinct), dtype=np.uint64, count=len(distinct))
        return table[codes.indices.to_numpy(zero_copy_only=False)], lengths


def ngram_hashes(ids: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every run of `n` consecutive words inside each text, and the index of the text it came from."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    m = len(ids) - n + 1
    if m <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):  # uint64 arithmetic wraps: a polynomial hash mod 2^64
            h = h * _P + ids[k : k + m]
    inside = owner[:m] == owner[n - 1 :]
    return h[inside], owner[:m][inside]


# ---------------------------------------------------------------------------------------------------------------------
# Decontamination: an index of evaluation n-grams.


def _sorted_search(table: np.ndarray, queries: np.ndarray, sides: tuple[str, ...] = ("left",)) -> list[np.ndarray]:
    """np.searchsorted with the queries sorted first: the same result, several times faster on big unsorted input."""
    order = np.argsort(queries)
    q = queries[order]
    out = []
    for side in sides:
        pos = np.empty(len(queries), dtype=np.int64)
        pos[order] = np.searchsorted(table, q, side)
        out.append(pos)
    return out


class EvalIndex:
    """N-grams of evaluation items. A training text is contaminated when it shares one n-gram (default 13 words)
    with an item, or, for items shorter than n words but at least `min_words` long, contains the whole item.

    N-grams found in more than `max_items` different evaluation items are boilerplate (e.g. the sentence every MMLU
    moral_scenarios question starts with) and are not used.
    """

    def __init__(self, vocab: Vocab, n: int = 13, min_words: int = 8, max_items: int = 20) -> None:
        if min_words > n:
            raise ValueError(f"min_words={min_words} must be at most n={n}")
        self.vocab, self.n, self.min_words, self.max_items = vocab, n, min_words, max_items
        self.sets: list[str] = []
        self.items: list[tuple[int, str]] = []  # (eval set index, item id)
        self._texts: list[str] = []
        self._text_item: list[int] = []
        self.counts: Counter = Counter()
        self.cache_file: Optional[Path] = None  # set when the index was read from a cache

    def add(self, eval_set: str, items: Iterable[tuple[str, list[str]]]) -> int:
        """Adds the items (item id, its texts) of one evaluation set; returns how many."""
        if eval_set not in self.sets:
            self.sets.append(eval_set)
        s = self.sets.index(eval_set)
        count = 0
        for item_id, texts in items:
            self.items.append((s, item_id))
            for t in texts:
                if t:
                    self._texts.append(t)
                    self._text_item.append(len(self.items) - 1)
            count += 1
        self.counts[eval_set] += count
        return count

    def build(self) -> "EvalIndex":
        ids, lengths = self.vocab.encode_many(self._texts)
        text_item = np.array(self._text_item, dtype=np.int64)
        h, owner = ngram_hashes(ids, lengths, self.n)
        item = text_item[owner]
        # count the distinct items of each n-gram; drop n-grams shared by too many items (boilerplate)
        order = np.lexsort((item, h))
        h, item = h[order], item[order]
        new_hash = np.concatenate([[True], h[1:] != h[:-1]])
        new_pair = new_hash | np.concatenate([[True], item[1:] != item[:-1]])
        starts = np.nonzero(new_hash)[0]
        counts = np.add.reduceat(new_pair.astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
        keep = counts <= self.max_items
        self.hashes, self.hash_item = h[starts[keep]], item[starts[keep]]
        self.boilerplate = int((~keep).sum())
        # short items: keyed by the hash of their first min_words words, checked in full on a hit
        starts = np.concatenate([[0], np.cumsum(lengths)])
        short = [(starts[i], lengths[i], text_item[i]) for i in range(len(lengths)) if self.min_words <= lengths[i] < self.n]
        self.short_words = [ids[a : a + L] for a, L, _ in short]
        self.short_item = np.array([it for _, _, it in short], dtype=np.int64)
        if short:
            sh, _ = ngram_hashes(np.concatenate(self.short_words), np.array([L for _, L, _ in short]), self.min_words)
            # ngram_hashes yields each text's windows in order; take the first window of each
            firsts = np.concatenate([[0], np.cumsum([L - self.min_words + 1 for _, L, _ in short])])[:-1]
            prefix = sh[firsts]
        else:
            prefix = np.zeros(0, np.uint64)
        order = np.argsort(prefix, kind="stable")
        self.short_prefix, self.short_order = prefix[order], order
        del self._texts, self._text_item
        return self

    def __len__(self) -> int:
        return len(self.items)

    _ARRAYS = ("hashes", "hash_item", "short_item", "short_prefix", "short_order")

    def save(self, path: Path) -> None:
        """The built index as one .npz (atomically): arrays, and the item list and counts as JSON."""
        from lit_gpt.utils import atomic_path

        meta = {"n": self.n, "min_words": self.min_words, "max_items": self.max_items, "sets": self.sets,
                "items": self.items, "counts": dict(self.counts), "boilerplate": self.boilerplate}
        short_lengths = np.array([len(w) for w in self.short_words], dtype=np.int64)
        short_words = np.concatenate(self.short_words) if self.short_words else np.zeros(0, np.uint64)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), short_words=short_words,
                     short_lengths=short_lengths, **{k: getattr(self, k) for k in self._ARRAYS})

    @classmethod
    def load(cls, path: Path, vocab: Vocab) -> "EvalIndex":
        with np.load(path) as data:
            meta = json.loads(data["meta"].tobytes())
            index = cls(vocab, meta["n"], meta["min_words"], meta["max_items"])
            for k in cls._ARRAYS:
                setattr(index, k, data[k])
            index.short_words = np.split(data["short_words"], np.cumsum(data["short_lengths"])[:-1]) \
                if len(data["short_lengths"]) else []
        index.sets, index.items = meta["sets"], [tuple(it) for it in meta["items"]]
        index.counts, index.boilerplate = Counter(meta["counts"]), meta["boilerplate"]
        del index._texts, index._text_item
        return index

    def match(self, ids: np.ndarray, lengths: np.ndarray) -> list[Optional[int]]:
        """For each text (word ids from the same vocab), the index of an evaluation item it overlaps, or None."""
        found: list[Optional[int]] = [None] * len(lengths)
        h, owner = ngram_hashes(ids, lengths, self.n)
        (pos,) = _sorted_search(self.hashes, h)
        pos[pos == len(self.hashes)] = 0
        hit = self.hashes[pos] == h if len(self.hashes) else np.zeros(len(h), bool)
        for o, p in zip(owner[hit][::-1], pos[hit][::-1]):  # reversed: the first hit of a text wins
            found[o] = int(self.hash_item[p])
        if len(self.short_prefix):
            starts = np.concatenate([[0], np.cumsum(lengths)])
            sh, sowner = ngram_hashes(ids, lengths, self.min_words)
            # window start positions in `ids`, to compare the full short item from there
            valid_start = np.arange(len(ids) - self.min_words + 1) if len(ids) >= self.min_words else np.zeros(0, int)
            owner_all = np.repeat(np.arange(len(lengths)), lengths)
            valid_start = valid_start[owner_all[: len(valid_start)] == owner_all[self.min_words - 1 :]]
            lo, hi = _sorted_search(self.short_prefix, sh, ("left", "right"))
            for w in np.nonzero(hi > lo)[0]:
                o = int(sowner[w])
                if found[o] is not None:
                    continue
                a, end = int(valid_start[w]), int(starts[o + 1])
                for j in self.short_order[lo[w] : hi[w]]:
                    words = self.short_words[j]
                    if a + len(words) <= end and np.array_equal(ids[a : a + len(words)], words):
                        found[o] = int(self.short_item[j])
                        break
        return found

    def describe(self, item: int) -> tuple[str, str]:
        s, item_id = self.items[item]
        return self.sets[s], item_id


# ---------------------------------------------------------------------------------------------------------------------
# Near duplicates: MinHash signatures over word shingles, bucketed with datasketch's MinHashLSH.


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch's "affine32" scheme applies before its permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def shingle_hashes(ids: np.ndarray, lengths: np.ndarray, shingle: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each text's word shingles (what a datasketch MinHash is updated with) and their owners,
    grouped by owner. A text shorter than `shingle` words is one shingle of all its words."""
    h, owner = ngram_hashes(ids, lengths, shingle)
    short = np.nonzero((lengths < shingle) & (lengths > 0))[0]
    if len(short):
        starts = np.concatenate([[0], np.cumsum(lengths)])
        extra = []
        with np.errstate(over="ignore"):
            for i in short:
                hv = np.uint64(0)
                for w in ids[starts[i] : starts[i + 1]]:
                    hv = hv * _P + w
                extra.append(hv)
        h, owner = np.concatenate([h, np.array(extra, np.uint64)]), np.concatenate([owner, short])
        order = np.argsort(owner, kind="stable")
        h, owner = h[order], owner[order]
    return ((h >> np.uint64(32)) ^ h).astype(np.uint32), owner


def minhash_signatures(
    ids: np.ndarray, lengths: np.ndarray, num_perm: int = 128, shingle: int = 5, seed: int = 1, chunk: int = 1 << 14
) -> np.ndarray:
    """MinHash signatures of every text's shingle set at once, (len(lengths), num_perm) uint32.

    Row i equals `datasketch.MinHash(num_perm, seed, hashfunc=int, scheme="affine32")` updated with text i's
    shingle hashes (tests check this), so the rows can go straight into datasketch's LSH; computing them here in
    one vectorized pass is ~10x faster than a MinHash object per record.
    """
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    sig = np.full((len(lengths), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    values, owner = shingle_hashes(ids, lengths, shingle)
    mixed = _fmix32(values)
    a, b = a.astype(np.uint32), b.astype(np.uint32)
    buf = np.empty((num_perm, chunk), dtype=np.uint32)
    for s in range(0, len(mixed), chunk):
        part, o = mixed[s : s + chunk], owner[s : s + chunk]
        phv = buf[:, : len(part)]
        np.multiply(a[:, None], part[None, :], out=phv)  # uint32 wraps mod 2^32, as in datasketch
        np.add(phv, b[:, None], out=phv)
        bounds = np.nonzero(np.concatenate([[True], o[1:] != o[:-1]]))[0]
        rows = o[bounds]
        sig[rows] = np.minimum(sig[rows], np.minimum.reduceat(phv, bounds, axis=1).T)
    return sig


def near_duplicates(sig: np.ndarray, threshold: float = 0.8, keep: Optional[np.ndarray] = None) -> dict[int, int]:
    """Texts whose estimated Jaccard similarity to an earlier kept text is >= threshold: {index: that text's index}.
    Earlier texts win, so list sources in order of preference. `keep` masks texts already dropped.

    The banding (b bands of r rows) is datasketch MinHashLSH's choice for this threshold and num_perm, and the
    buckets are the ones its index would hold; they are formed with numpy sorts over all signatures at once instead
    of one Python insert/query per record (1.4 s per 10k records with datasketch here, tens of ms this way).
    Candidates from a shared bucket are confirmed by the signature estimate itself.
    """
    from datasketch import MinHashLSH

    n, num_perm = sig.shape
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    bands, rows = lsh.b, lsh.r
    alive = np.ones(n, bool) if keep is None else keep.copy()
    idx = np.nonzero(alive)[0]
    pairs = set()
    for band in range(bands):
        keys = np.ascontiguousarray(sig[idx, band * rows : (band + 1) * rows]).view(f"V{4 * rows}").ravel()
        order = np.argsort(keys, kind="stable")
        k = keys[order]
        same = np.nonzero(k[1:] == k[:-1])[0]
        if not len(same):
            continue
        # runs of equal keys: pair every member with the run's earlier members
        starts = np.nonzero(np.concatenate([[True], k[1:] != k[:-1]]))[0]
        run_of = np.searchsorted(starts, np.arange(len(k)), side="right") - 1
        for pos in np.unique(same + 1):
            first = starts[run_of[pos]]
            for q in range(first, pos):
                i, j = idx[order[pos]], idx[order[q]]
                pairs.add((max(i, j), min(i, j)))
    dups: dict[int, int] = {}
    for i, j in sorted(pairs):  # by i, so every earlier text's fate is settled first
        if not alive[j] or not alive[i] and i not in dups:
            continue
        if np.mean(sig[i] == sig[j]) >= threshold and (i not in dups or j < dups[i]):
            dups[i] = j
            alive[i] = False
    return dups


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(" ".join(normalize(text)).encode(), digest_size=16).digest()


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation-set loaders: each yields (item id, [texts]) for the formats in ../shared/data (see its MANIFEST.md).


def _files(path: Path, patterns: tuple[str, ...]) -> list[Path]:
    if not path.exists():
        raise UserError(f"evaluation set path {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for pat in patterns for p in path.rglob(pat))
    if not files:
        raise UserError(f"{path}: no {' or '.join(patterns)} files")
    return files


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from e


def load_mmlu(path: Path) -> Iterator[tuple[str, list[str]]]:
    """MMLU CSVs (question, A, B, C, D, answer; no header): the question, the question with its options, and the
    same with the options lettered as in HELM's prompt ("A. ...")."""
    for f in _files(path, ("*.csv",)):
        with open(f, encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if len(row) < 6:
                    raise UserError(f"{f}:{n}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
                lettered = "\n".join([row[0]] + [f"{'ABCDEFGHIJ'[i]}. {o}" for i, o in enumerate(row[1:-1])])
                yield f"{f.name}:{n}", [row[0], "\n".join(row[:-1]), lettered]


def load_gsm8k(path: Path) -> Iterator[tuple[str, list[str]]]:
    for f in _files(path, ("*.jsonl",)):
        for n, r in _jsonl(f):
            yield f"{f.name}:{n}", [r.get("question", ""), r.get("answer", "")]


def load_cnn_dailymail(path: Path) -> Iterator[tuple[str, list[str]]]:
    for f in _files(path, ("*.jsonl",)):
        for n, r in _jsonl(f):
            yield f"{f.name}:{n}", [r.get("article", ""), r.get("highlights", "")]


def load_bbq(path: Path) -> Iterator[tuple[str, list[str]]]:
    for f in _files(path, ("*.jsonl",)):
        for n, r in _jsonl(f):
            yield f"{f.name}:{n}", [f"{r.get('context', '')} {r.get('question', '')}"]


def load_truthfulqa(path: Path) -> Iterator[tuple[str, list[str]]]:
    """TruthfulQA.csv (Question, Best Answer, ...) or mc_task.json (question, mc1/mc2 targets)."""
    for f in _files(path, ("*.csv", "*.json")):
        if f.suffix == ".csv":
            with open(f, encoding="utf-8-sig", newline="") as fh:
                for n, row in enumerate(csv.DictReader(fh), 2):
                    yield f"{f.name}:{n}", [row.get("Question", ""), row.get("Best Answer", "")]
        else:
            data = json.loads(f.read_text(encoding="utf-8"))
            for n, r in enumerate(data):
                yield f"{f.name}#{n}", [r.get("question", "")]


def load_bigbench(path: Path) -> Iterator[tuple[str, list[str]]]:
    """BIG-bench task.json files: each example's input (and target text where it has one)."""
    for f in _files(path, ("task.json",)):
        task = json.loads(f.read_text(encoding="utf-8"))
        for n, ex in enumerate(task.get("examples", [])):
            target = ex.get("target")
            texts = [ex.get("input", "")] + ([target] if isinstance(target, str) else [])
            yield f"{f.parent.name}#{n}", texts


EVAL_LOADERS = {
    "mmlu": load_mmlu,
    "gsm8k": load_gsm8k,
    "cnn_dailymail": load_cnn_dailymail,
    "bbq": load_bbq,
    "truthfulqa": load_truthfulqa,
    "bigbench": load_bigbench,
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lit_gpt" / "eval_index"


def _cache_key(eval_sets: dict[str, dict], n: int, min_words: int, max_items: int) -> Optional[str]:
    """A digest of everything the index depends on: this module's code (loaders, normalization), the settings, and
    each evaluation file's path, size and modification time. None when a path is missing (the loaders report it)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(json.dumps([n, min_words, max_items]).encode())
    for name, spec in eval_sets.items():
        h.update(json.dumps([name, spec["kind"]]).encode())
        for p in spec["paths"]:
            p = Path(p).resolve()
            if not p.exists():
                return None
            for f in [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()):
                st = f.stat()
                h.update(json.dumps([str(f), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:32]


def build_eval_index(
    eval_sets: dict[str, dict], vocab: Vocab, n: int = 13, min_words: int = 8, max_items: int = 20,
    cache_dir: Optional[Path] = None,
) -> EvalIndex:
    """`eval_sets`: {name: {"kind": one of EVAL_LOADERS, "paths": [Path, ...]}}.

    With `cache_dir`, the built index is kept there and reused while the evaluation files, the settings and this
    module are unchanged (it takes about a second to build from the shared data's six sets)."""
    key = _cache_key(eval_sets, n, min_words, max_items) if cache_dir is not None else None
    cached = Path(cache_dir) / f"{key}.npz" if key is not None else None
    if cached is not None:
        if cached.is_file():
            try:
                index = EvalIndex.load(cached, vocab)
                index.cache_file = cached
                return index
            except Exception as e:  # a damaged cache file is rebuilt, never trusted
                print(f"warning: rebuilding the evaluation index ({cached} unreadable: {e})", file=sys.stderr)
    index = EvalIndex(vocab, n=n, min_words=min_words, max_items=max_items)
    for name, spec in eval_sets.items():
        kind = spec["kind"]
        if kind not in EVAL_LOADERS:
            raise UserError(f"evaluation set {name!r}: unknown kind {kind!r} (one of {', '.join(EVAL_LOADERS)})")
        for p in spec["paths"]:
            index.add(name, EVAL_LOADERS[kind](Path(p)))
    index.build()
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            index.save(cached)
        except OSError as e:  # a read-only home is no reason to fail the run
            print(f"warning: could not cache the evaluation index in {cached.parent}: {e}", file=sys.stderr)
    return index
