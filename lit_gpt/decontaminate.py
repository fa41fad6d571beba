"""Keeping evaluation data out of training data: text normalization, n-gram and short-item overlap against
evaluation sets (lit_gpt/eval_loaders.py, from the readers in lit_gpt/eval_sets.py), exact and near-duplicate removal
(MinHash LSH).

Everything works on normalized words (lowercase, punctuation deleted, whitespace collapsed), so light edits of an
evaluation item (case, punctuation, spacing) still match. Words are mapped to integer ids once; n-grams are then
hashed for all records at once with numpy, which keeps a 10k-record mix to a fraction of its tokenization time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import regex  # the Unicode class \p{So}, which `re` lacks (installed with tiktoken)

from lit_gpt import eval_loaders
from lit_gpt.eval_loaders import EVAL_LOADERS
from lit_gpt.utils import UserError

# Words are letters and numbers; everything else but whitespace is deleted (punctuation, "_" included), except the
# "other symbols" (emoji, shapes, °: Unicode So), which are words of their own, since some evaluation items are
# mostly emoji (BIG-bench emoji_movie, symbol_interpretation). The whitespace is what str.split cuts at: \t-\r,
# \x1c-\x1f, \x85 and the Unicode spaces (Z). The same classes serve the `regex` module and RE2 (Arrow's regex
# engine, whose own \w and \s are ASCII-only).
_SYMBOL = r"\p{So}"
_PUNCT_RE2 = r"[^\p{L}\p{N}\p{So}\t\n\v\f\r\x1c-\x1f\x85\p{Z}]+"
_SYMBOL_RX, _PUNCT_RX = regex.compile(_SYMBOL), regex.compile(_PUNCT_RE2)
_P = np.uint64(0x100000001B3)  # FNV prime: the base of the polynomial rolling hash


def normalize(text: str) -> list[str]:
    """Lowercased words, punctuation deleted, symbols apart: "Tom's  CAR, red🚗." -> ["toms", "car", "red", "🚗"]."""
    lowered = text.lower().replace("ß", "ss").replace("ς", "σ")  # what upper-casing and back gives
    return _PUNCT_RX.sub("", _SYMBOL_RX.sub(r" \g<0> ", lowered)).split()


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
        lowered = pc.replace_substring(pc.replace_substring(pc.utf8_lower(texts), "ß", "ss"), "ς", "σ")
        spaced = pc.replace_substring_regex(lowered, pattern=_SYMBOL, replacement=r" \0 ")
        cleaned = pc.replace_substring_regex(spaced, pattern=_PUNCT_RE2, replacement="")
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


def _first_of_runs(keys: np.ndarray, item: np.ndarray, max_items: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Sorted distinct keys with the first item of each, leaving out keys found in more than `max_items` distinct
    items (boilerplate); and how many were left out."""
    if not len(keys):
        return keys, item, 0
    order = np.lexsort((item, keys))
    keys, item = keys[order], item[order]
    new_key = np.concatenate([[True], keys[1:] != keys[:-1]])
    new_pair = new_key | np.concatenate([[True], item[1:] != item[:-1]])
    starts = np.nonzero(new_key)[0]
    counts = np.add.reduceat(new_pair.astype(np.int64), starts)
    keep = counts <= max_items
    return keys[starts[keep]], item[starts[keep]], int((~keep).sum())


class EvalIndex:
    """Evaluation items as n-grams and, when short, whole. A training text is contaminated when it shares one n-gram
    (default 13 words) with an item's text, or contains, as a contiguous run of words, a whole text shorter than n:
    an item's first text (the item itself: a question, a scenario) however short, its other texts (answers, parts)
    when at least `min_words` long.

    N-grams and short texts found in more than `max_items` different evaluation items are boilerplate (e.g. the
    sentence every MMLU moral_scenarios question starts with) and are not used.
    """

    def __init__(self, vocab: Vocab, n: int = 13, min_words: int = 8, max_items: int = 20) -> None:
        if min_words > n:
            raise ValueError(f"min_words={min_words} must be at most n={n}")
        self.vocab, self.n, self.min_words, self.max_items = vocab, n, min_words, max_items
        self.sets: list[str] = []
        self.items: list[tuple[int, str]] = []  # (eval set index, item id)
        self._texts: list[str] = []
        self._text_item: list[int] = []
        self._text_first: list[bool] = []
        self.counts: Counter = Counter()
        self.cache_file: Optional[Path] = None  # set when the index was read from a cache

    def add(self, eval_set: str, items: Iterable[tuple[str, list[str]]]) -> int:
        """Adds the items (item id, its texts, the item itself first) of one evaluation set; returns how many."""
        if eval_set not in self.sets:
            self.sets.append(eval_set)
        s = self.sets.index(eval_set)
        count = 0
        for item_id, texts in items:
            self.items.append((s, item_id))
            for k, t in enumerate(texts):
                if t:
                    self._texts.append(t)
                    self._text_item.append(len(self.items) - 1)
                    self._text_first.append(k == 0)
            count += 1
        self.counts[eval_set] += count
        return count

    def build(self) -> "EvalIndex":
        ids, lengths = self.vocab.encode_many(self._texts)
        text_item = np.array(self._text_item, dtype=np.int64)
        h, owner = ngram_hashes(ids, lengths, self.n)
        self.hashes, self.hash_item, self.boilerplate = _first_of_runs(h, text_item[owner], self.max_items)
        # short texts: keyed by the hash of all their words (the same polynomial as an n-gram of their length)
        first = np.array(self._text_first, dtype=bool)
        short = np.nonzero((lengths > 0) & (lengths < self.n) & (first | (lengths >= self.min_words)))[0]
        starts = np.concatenate([[0], np.cumsum(lengths)])[short]
        sh = np.zeros(len(short), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(int(lengths[short].max()) if len(short) else 0):
                more = lengths[short] > k
                sh[more] = sh[more] * _P + ids[starts[more] + k]
        self.short_hashes, self.short_item, self.short_boilerplate = _first_of_runs(sh, text_item[short], self.max_items)
        # each key's length, checked on a hit (word ids are never 0, so texts of different lengths hash apart anyway)
        length_of = dict(zip(sh.tolist(), lengths[short].tolist()))
        self.short_len = np.array([length_of[k] for k in self.short_hashes.tolist()], dtype=np.int64)
        del self._texts, self._text_item, self._text_first
        return self

    def __len__(self) -> int:
        return len(self.items)

    _ARRAYS = ("hashes", "hash_item", "short_hashes", "short_item", "short_len")

    def save(self, path: Path) -> None:
        """The built index as one .npz (atomically): arrays, and the item list and counts as JSON."""
        from lit_gpt.utils import atomic_path

        meta = {"n": self.n, "min_words": self.min_words, "max_items": self.max_items, "sets": self.sets,
                "items": self.items, "counts": dict(self.counts), "boilerplate": self.boilerplate,
                "short_boilerplate": self.short_boilerplate}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                     **{k: getattr(self, k) for k in self._ARRAYS})

    @classmethod
    def load(cls, path: Path, vocab: Vocab) -> "EvalIndex":
        with np.load(path) as data:
            meta = json.loads(data["meta"].tobytes())
            index = cls(vocab, meta["n"], meta["min_words"], meta["max_items"])
            for k in cls._ARRAYS:
                setattr(index, k, data[k])
        index.sets, index.items = meta["sets"], [tuple(it) for it in meta["items"]]
        index.counts, index.boilerplate = Counter(meta["counts"]), meta["boilerplate"]
        index.short_boilerplate = meta["short_boilerplate"]
        del index._texts, index._text_item, index._text_first
        return index

    def match(self, ids: np.ndarray, lengths: np.ndarray) -> list[Optional[int]]:
        """For each text (word ids from the same vocab), the index of an evaluation item it overlaps, or None: the
        item of its first matching n-gram, else of the earliest (then longest) short text it contains."""
        found: list[Optional[int]] = [None] * len(lengths)
        owner = np.repeat(np.arange(len(lengths)), lengths)
        left = np.repeat(np.cumsum(lengths), lengths) - np.arange(len(ids))  # words from each position to its text's end
        # One rolling pass: after step L, h[p] is the hash of the L words from p, so the windows of every short
        # length come on the way to the n-grams. A byte table on the hashes' top bits, ~256 slots per short text
        # (16 MiB at most), lets through ~0.4% of the windows to the exact search: a sparser table costs more in
        # searches than it saves (7% let through: 2x slower).
        bits = max(16, min(24, int(np.ceil(np.log2(256 * len(self.short_hashes) + 1)))))
        shift = np.uint64(64 - bits)
        table = np.zeros(1 << bits, dtype=bool)
        table[self.short_hashes >> shift] = True
        lens = set(self.short_len.tolist())
        h = np.zeros(len(ids), dtype=np.uint64)
        short_hits = []  # (text, position, -length, item)
        with np.errstate(over="ignore"):
            for L in range(1, self.n + 1):
                m = len(ids) - L + 1
                if m <= 0:
                    break
                h[:m] *= _P
                h[:m] += ids[L - 1 :]
                if L not in lens:
                    continue
                cand = np.nonzero(table[h[:m] >> shift])[0]
                cand = cand[left[cand] >= L]  # the window stays inside its text
                pos = np.minimum(np.searchsorted(self.short_hashes, h[cand]), len(self.short_hashes) - 1)
                ok = (self.short_hashes[pos] == h[cand]) & (self.short_len[pos] == L)
                if ok.any():
                    short_hits.append((owner[cand[ok]], cand[ok], np.full(ok.sum(), -L), self.short_item[pos[ok]]))
        if len(ids) >= self.n and len(self.hashes):
            inside = np.nonzero(left[: len(ids) - self.n + 1] >= self.n)[0]
            g, gowner = h[inside], owner[inside]
            (pos,) = _sorted_search(self.hashes, g)
            pos[pos == len(self.hashes)] = 0
            hit = self.hashes[pos] == g
            for o, p in zip(gowner[hit][::-1], pos[hit][::-1]):  # reversed: the first hit of a text wins
                found[o] = int(self.hash_item[p])
        if short_hits:
            o, p, neg_len, item = (np.concatenate(c) for c in zip(*short_hits))
            order = np.lexsort((neg_len, p, o))[::-1]  # reversed: the earliest, then longest, hit of a text wins
            short_found: dict[int, int] = dict(zip(o[order].tolist(), item[order].tolist()))
            for o, item in short_found.items():
                if found[o] is None:
                    found[o] = item
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


def near_duplicates(sig: np.ndarray, threshold: float = 0.8, keep: Optional[np.ndarray] = None,
                    band_keys: Optional[np.ndarray] = None) -> dict[int, int]:
    """Texts whose estimated Jaccard similarity to an earlier kept text is >= threshold: {index: that text's index}.
    Earlier texts win, so list sources in order of preference. `keep` masks texts already dropped. `band_keys`
    (n, bands), a 64-bit hash of each band's rows, stands in for the rows (a streamed mix keeps only those in memory,
    and `sig` on disk, read for the candidates alone).

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
        if band_keys is not None:
            keys = band_keys[idx, band]
        else:
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


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lit_gpt" / "eval_index"


def _cache_key(eval_sets: dict[str, dict], n: int, min_words: int, max_items: int) -> Optional[str]:
    """A digest of everything the index depends on: this module's code, the loaders' and the readers', the settings,
    and each evaluation file's path, size and modification time. None when a path is missing (the loaders report it)."""
    code = (__file__, eval_loaders.__file__, eval_loaders.sets.__file__)
    h = hashlib.sha256(b"".join(Path(f).read_bytes() for f in code))
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
