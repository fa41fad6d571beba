"""Builds one finetuning mixture from several sources, free of duplicates and of evaluation data.

    python scripts/prepare_mix.py --config examples/mix_demo.yaml --checkpoint_dir checkpoints/... --out_dir data/mix

Steps, in order: load every source (a prepared dir's records.jsonl, or a prepare spec run on raw files); drop records
that overlap an evaluation set (13-gram overlap on normalized text by default); drop exact duplicates, then near
duplicates (MinHash LSH over word shingles; earlier sources win); sample each source by its weight or record count
(deterministic by seed); split train/val; tokenize; write shards, records.jsonl, stats.json, manifest.json and
manifest.md (per source: records in/out, tokens, dropped as duplicate, dropped as contaminated and by which set).

The config (YAML):

    seed: 42
    val_fraction: 0.05
    sources:
      - name: sample                         # a prepare spec: a lit_gpt.sources kind's loader on raw files
        prepare: jsonl
        source: examples/sample_instructions.jsonl
        args: {instruction_key: instruction, input_key: input, response_key: output}
        weight: 1.0                          # or records: N (N over what is available repeats records in train)
      - name: gsm8k
        dir: data/gsm8k                      # a prepared dir (scripts/prepare_gsm8k.py --out_dir data/gsm8k)
        records: 500
    dedup: {exact: true, near: true, threshold: 0.8, num_perm: 128, shingle: 5}
    decontaminate:
      ngram: 13                              # words; a shorter item is matched whole (as a contiguous run of words)
      min_words: 8                           # an item's other texts (answers, parts) shorter than ngram: from this long
      max_items: 20                          # n-grams / short texts shared by more eval items are boilerplate
      skip_missing: false                    # true: warn about (and list) eval sets not found instead of failing
      cache: true                            # keep the built index in ~/.cache/lit_gpt/eval_index (or this dir)
      eval_data_dir: ../shared/data          # where the default eval sets are looked for (default: next to the repo)
      eval_sets:                             # name: path(s) (kind = name), or name: {kind: ..., path: ...}
        mmlu: ../shared/data/mmlu/test
        gsm8k: ../shared/data/gsm8k/test.jsonl

Without `eval_sets`, the mix is checked against every family the challenge's final ranking scores
(lit_gpt/eval_loaders.py DEFAULT_EVAL_SETS: MMLU, GSM8K, TruthfulQA, BBQ, CNN/DM, BIG-bench, SAMSum, ETHICS, MATH,
corr2cause) wherever their files are in `eval_data_dir`; those absent are listed in the manifest as not checked.
`eval_sets: {}` turns decontamination off.

Engines (`--engine`): stream (the default: two passes over the sources in chunks, flat memory; lit_gpt/mix_stream.py),
datatrove (the same, its first pass on datatrove executors; lit_gpt/mix_datatrove.py), memory (every record in RAM:
the reference the other two are tested against, and the one for mixes of preference pairs).
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np


from lit_gpt.prepare import DEFAULT_CHECKPOINT, Loaded, iter_records, source_files, split_indices, write_records

from lit_gpt.data import Encoder, encode_records, write_dataset
from lit_gpt.decontaminate import (
    EVAL_LOADERS,
    Vocab,
    build_eval_index,
    default_cache_dir,
    minhash_signatures,
    near_duplicates,
    record_text,
)
from lit_gpt.eval_loaders import default_eval_sets
from lit_gpt.mix_report import finish, report
from lit_gpt.utils import UserError, alias_config_flag, cli, config_path, read_yaml_config
from lit_gpt.sources import SOURCES
from lit_gpt.sources.preferences import encode_pairs, pair_examples

PREPARE_KINDS = tuple(SOURCES)
SOURCE_KEYS = {"name", "dir", "prepare", "source", "repo_id", "args", "weight", "records"}
DEFAULT_EVAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the repo
TOP_KEYS = {"seed", "val_fraction", "max_seq_length", "template", "sources", "dedup", "decontaminate"}


def load_config(path: Path) -> dict:
    cfg = read_yaml_config(path, "mix config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("sources"), list) or not cfg["sources"]:
        raise UserError(f"{path}: needs a non-empty 'sources' list")
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise UserError(f"{path}: unknown key(s) {sorted(unknown)} (known: {', '.join(sorted(TOP_KEYS))})")
    names = set()
    for i, s in enumerate(cfg["sources"]):
        where = f"{path}: sources[{i}]"
        if not isinstance(s, dict):
            raise UserError(f"{where}: must be a mapping")
        if set(s) - SOURCE_KEYS:
            raise UserError(f"{where}: unknown key(s) {sorted(set(s) - SOURCE_KEYS)} (known: {', '.join(sorted(SOURCE_KEYS))})")
        if ("dir" in s) == ("prepare" in s):
            raise UserError(f"{where}: give either 'dir' (a prepared dataset) or 'prepare' (one of {', '.join(PREPARE_KINDS)})")
        if "prepare" in s and s["prepare"] not in PREPARE_KINDS:
            raise UserError(f"{where}: unknown prepare kind {s['prepare']!r} (one of {', '.join(PREPARE_KINDS)})")
        if "weight" in s and "records" in s:
            raise UserError(f"{where}: give 'weight' or 'records', not both")
        if "weight" in s and not (isinstance(s["weight"], (int, float)) and s["weight"] >= 0):
            raise UserError(f"{where}: weight must be a number >= 0")
        if "records" in s and not (isinstance(s["records"], int) and s["records"] >= 0):
            raise UserError(f"{where}: records must be an integer >= 0")
        s.setdefault("name", s.get("prepare") or Path(str(s["dir"])).name)
        if s["name"] in names:
            raise UserError(f"{where}: duplicate source name {s['name']!r}")
        names.add(s["name"])
    return cfg


def load_source(spec: dict, config_dir: Path) -> Loaded:
    name = spec["name"]
    if "dir" in spec:
        out = Loaded()
        for r in iter_records(config_path(spec["dir"], config_dir) / "records.jsonl"):
            out.read += 1
            r.pop("split", None)
            out.add(r.get("id", "?"), name, r.get("turns"))
            if "rejected" in r and out.records and out.records[-1]["id"] == r.get("id", "?"):
                out.records[-1]["rejected"] = r["rejected"]  # a preference pair (scripts/prepare_preferences.py)
        return out
    kind = SOURCES[spec["prepare"]]
    args = spec.get("args") or {}
    src = config_path(spec["source"], config_dir) if spec.get("source") else None
    files = source_files(src, spec.get("repo_id", kind.repo_id), kind.files_for(args, local=src is not None))
    try:
        return kind.load(files, **args, name=name)
    except TypeError as e:
        raise UserError(f"source {name!r}: bad args for prepare {spec['prepare']!r} ({e})") from e


def eval_sets_from(cfg: dict, config_dir: Path, skip_missing: bool = False) -> tuple[dict[str, dict], list[str]]:
    """The evaluation sets' kinds and paths; with skip_missing, sets whose paths do not exist are left out (and
    listed) instead of stopping the run."""
    out, missing = {}, []
    for name, spec in (cfg or {}).items():
        if not isinstance(spec, dict):
            spec = {"kind": name, "path": spec}
        kind, paths = spec.get("kind", name), spec.get("path")
        if kind not in EVAL_LOADERS:
            raise UserError(f"decontaminate.eval_sets.{name}: unknown kind {kind!r} (one of {', '.join(EVAL_LOADERS)})")
        if paths is None:
            raise UserError(f"decontaminate.eval_sets.{name}: needs a path")
        paths = [config_path(p, config_dir) for p in (paths if isinstance(paths, list) else [paths])]
        if skip_missing and not all(p.exists() for p in paths):
            print(f"warning: evaluation set {name!r} not found at {', '.join(map(str, paths))}: not checked", file=sys.stderr)
            missing.append(name)
            continue
        out[name] = {"kind": kind, "paths": paths}
    return out, missing


def takes_all(spec: dict, n: int) -> bool:
    """Whether a source of `n` records goes into the mix whole (or repeated), whatever deduplication removes."""
    return spec["records"] >= n if "records" in spec else float(spec.get("weight", 1.0)) >= 1


def select(n: int, spec: dict, rng: random.Random) -> list[int]:
    """Indices (with repeats when upsampling) of the `n` clean records of a source to put in the mix."""
    want = spec["records"] if "records" in spec else round(float(spec.get("weight", 1.0)) * n)
    if n == 0 or want == 0:
        return []
    full, rest = divmod(want, n)
    return list(range(n)) * full + sorted(rng.sample(range(n), rest))


def options(cfg: dict) -> dict:
    """The mix settings, defaults filled in."""
    return {"seed": int(cfg.get("seed", 42)), "val_fraction": float(cfg.get("val_fraction", 0.05)),
            "max_seq_length": int(cfg.get("max_seq_length", 2048)), "template": cfg.get("template", "auto"),
            "dedup": {"exact": True, "near": True, "threshold": 0.8, "num_perm": 128, "shingle": 5, **(cfg.get("dedup") or {})},
            "decontaminate": {"ngram": 13, "min_words": 8, "max_items": 20, **(cfg.get("decontaminate") or {})}}


def eval_index(decon_cfg: dict, config_dir: Path, vocab: Vocab) -> tuple[dict, list[str], Any]:
    """The evaluation sets checked, those missing, and their n-gram index (None when there are none)."""
    if decon_cfg.get("eval_sets") is None:  # every family the final ranking scores, where its files are
        eval_sets, missing_sets = default_eval_sets(config_path(decon_cfg.get("eval_data_dir", DEFAULT_EVAL_DATA), config_dir))
    else:
        eval_sets, missing_sets = eval_sets_from(decon_cfg["eval_sets"], config_dir, bool(decon_cfg.get("skip_missing")))
    cache = decon_cfg.get("cache", True)
    cache_dir = (default_cache_dir() if cache is True else config_path(cache, config_dir)) if cache else None
    index = build_eval_index(eval_sets, vocab, decon_cfg["ngram"], decon_cfg["min_words"], decon_cfg["max_items"],
                             cache_dir) if eval_sets else None
    return eval_sets, missing_sets, index


def choose(specs: list[dict], keep: np.ndarray, owner: np.ndarray, seed: int, val_fraction: float):
    """Each source's sample of its clean records, split (repeats stay in train) and shuffled: the record indices of
    train and of val, and per source how many were available and selected."""
    train, val, per_source = [], [], []
    for s, spec in enumerate(specs):
        clean = np.nonzero(keep & (owner == s))[0].tolist()
        chosen = select(len(clean), spec, random.Random(f"{seed}/{spec['name']}"))
        mult = Counter(chosen)
        uniq = sorted(mult)
        tr, va = split_indices(len(uniq), val_fraction, seed)
        train += [clean[uniq[k]] for k in tr for _ in range(mult[uniq[k]])]
        val += [clean[uniq[k]] for k in va]
        per_source.append({"available": len(clean), "selected": len(chosen)})
    rng = random.Random(seed)
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val, per_source


def setup(
    mix_config: Optional[Path] = None,
    checkpoint_dir: Path = DEFAULT_CHECKPOINT,
    out_dir: Path = Path("data/mix"),
    num_workers: int = 0,
    engine: str = "stream",
    chunk_size: int = 10_000,
    tasks: int = 2,
) -> dict:
    """Build a deduplicated, decontaminated finetuning mix.

    Args:
        mix_config: The mix YAML, also given as `--config` (sources with weights or record counts, dedup and decontamination settings; see the
            module docstring for its keys).
        checkpoint_dir: The checkpoint whose tokenizer (and chat template, if any) formats the records.
        out_dir: Where train-*.pt, val-*.pt, records.jsonl, stats.json, manifest.json and manifest.md go.
        num_workers: Tokenizer processes of the in-memory engine (0: one per CPU, 1: no subprocesses).
        engine: "stream": read the sources twice in chunks, keeping only hashes and signatures per record, so memory
            stays flat however big the mix (lit_gpt/mix_stream.py); "datatrove": the same, its first pass run as
            datatrove pipeline steps on `tasks` local processes (lit_gpt/mix_datatrove.py); "memory": every record
            held in memory (needed for mixes of preference pairs). All three write the same mix.
        chunk_size: Records per chunk when streaming.
        tasks: datatrove tasks (processes) for engine "datatrove".
    """
    if mix_config is None:
        raise UserError("pass --config MIX.yaml (see examples/mix_demo.yaml)")
    if engine not in ("stream", "datatrove", "memory"):
        raise UserError(f"--engine must be stream, datatrove or memory, got {engine!r}")
    if not Path(checkpoint_dir).is_dir():
        raise UserError(f"checkpoint dir {str(checkpoint_dir)!r} does not exist (it supplies the tokenizer)")
    if engine != "memory":
        from lit_gpt.mix_stream import PairsMix, stream_mix

        scan = None
        if engine == "datatrove":
            from lit_gpt.mix_datatrove import datatrove_scan

            scan = datatrove_scan(tasks, chunk_size=chunk_size)
        try:
            return stream_mix(Path(mix_config), Path(checkpoint_dir), Path(out_dir), chunk_size, scan)
        except PairsMix:
            print("note: a mix of preference pairs is built in memory", file=sys.stderr)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    config = Path(mix_config)
    cfg = load_config(config)
    config_dir = config.parent
    o = options(cfg)
    seed, val_fraction, max_seq_length, template = o["seed"], o["val_fraction"], o["max_seq_length"], o["template"]
    dedup_cfg, decon_cfg = o["dedup"], o["decontaminate"]

    # 1. load
    specs = cfg["sources"]
    loaded = [load_source(s, config_dir) for s in specs]
    records = [r for lo in loaded for r in lo.records]
    owner = np.array([i for i, lo in enumerate(loaded) for _ in lo.records], dtype=np.int64)
    timings["load"] = time.perf_counter() - t0
    # A mix is of preference pairs (for finetune/dpo.py) or of SFT records: pairs are encoded and written as pairs.
    pairs = any("rejected" in r for r in records)
    if pairs and not all("rejected" in r for r in records):
        raise UserError(f"{config}: mixes preference-pair sources with SFT sources; build one mix of each")
    encode = encode_pairs if pairs else encode_records

    # Sources taken whole are tokenized now, in a thread, while the evaluation index is built and the records are
    # deduplicated (HF tokenizers and tiktoken encode in Rust without the GIL); sampled sources wait for the sample.
    encoder = Encoder(checkpoint_dir, max_seq_length, template)
    early = [i for i in range(len(records)) if takes_all(specs[owner[i]], len(loaded[owner[i]].records))]
    executor = early_encoded = None
    if encoder.tokenizer.backend != "sentencepiece" and num_workers in (0, 1):
        executor = ThreadPoolExecutor(1)
        early_encoded = executor.submit(encode, [records[i] for i in early], checkpoint_dir, max_seq_length,
                                        template, 1, desc="mix tokenize", encoder=encoder)
    else:  # worker processes are not forked from a process running threads: everything is tokenized in step 5
        early = []

    # 2. normalized words of every record, and of the evaluation sets, in one vocabulary
    t = time.perf_counter()
    vocab = Vocab()
    eval_sets, missing_sets, index = eval_index(decon_cfg, config_dir, vocab)
    timings["eval_index"] = time.perf_counter() - t
    t = time.perf_counter()
    ids, lengths = vocab.encode_many(record_text(r) + ("\n" + r["rejected"] if "rejected" in r else "") for r in records)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    timings["normalize"] = time.perf_counter() - t

    # 3. decontaminate, then exact and near dedup among the clean records
    t = time.perf_counter()
    keep = np.ones(len(records), dtype=bool)
    dropped: list[dict] = []
    contaminated = defaultdict(Counter)  # source -> eval set -> count
    if index is not None:
        for i, item in enumerate(index.match(ids, lengths)):
            if item is not None:
                keep[i] = False
                eval_set, item_id = index.describe(item)
                contaminated[owner[i]][eval_set] += 1
                dropped.append({"id": records[i]["id"], "source": specs[owner[i]]["name"], "reason": "contaminated",
                                "eval_set": eval_set, "eval_item": item_id})
    timings["decontaminate"] = time.perf_counter() - t
    t = time.perf_counter()
    exact, near = Counter(), Counter()
    if dedup_cfg["exact"]:
        seen: dict[bytes, int] = {}
        for i in np.nonzero(keep)[0]:
            key = hashlib.blake2b(ids[starts[i] : starts[i + 1]].tobytes(), digest_size=16).digest()
            if key in seen:
                keep[i] = False
                exact[owner[i]] += 1
                dropped.append({"id": records[i]["id"], "source": specs[owner[i]]["name"], "reason": "exact duplicate",
                                "of": records[seen[key]]["id"]})
            else:
                seen[key] = i
    if dedup_cfg["near"] and keep.any():
        sig = minhash_signatures(ids, lengths, dedup_cfg["num_perm"], dedup_cfg["shingle"], seed=1)
        for i, j in near_duplicates(sig, dedup_cfg["threshold"], keep=keep).items():
            keep[i] = False
            near[owner[i]] += 1
            dropped.append({"id": records[i]["id"], "source": specs[owner[i]]["name"], "reason": "near duplicate",
                            "of": records[j]["id"]})
    timings["dedup"] = time.perf_counter() - t

    # 4. sample each source, split (repeats stay in train), shuffle
    train, val, per_source = choose(specs, keep, owner, seed, val_fraction)

    # 5. tokenize (what the thread has not) and write
    t = time.perf_counter()
    encoded: dict[int, Any] = {}  # record -> example, or the reason it could not be encoded
    truncated_records: set[int] = set()

    def collect(indices: list[int], result: tuple[list[dict], dict]) -> None:
        examples, st = result
        skipped = dict(st["skipped"])
        truncated_records.update(indices[k] for k in st["truncated_records"])
        it = iter(examples)
        for k, i in enumerate(indices):
            encoded[i] = skipped[k] if k in skipped else next(it)

    if executor is not None:
        collect(early, early_encoded.result())
        executor.shutdown()
    rest = sorted(set(train + val) - set(early))
    collect(rest, encode([records[i] for i in rest], checkpoint_dir, max_seq_length, template, num_workers,
                                 desc="mix tokenize (sampled sources)", encoder=encoder))
    timings["tokenize_wait"] = time.perf_counter() - t
    t = time.perf_counter()
    out_dir = Path(out_dir)
    splits, kept, tok_stats = {}, [], Counter()
    src_tokens, src_out, src_skipped = Counter(), Counter(), Counter()
    truncated, reported = 0, set()
    for split, idx in (("train", train), ("val", val)):
        examples = []
        for i in idx:
            ex = encoded[i]
            if isinstance(ex, str):
                src_skipped[owner[i]] += 1
                if i not in reported:
                    reported.add(i)
                    dropped.append({"id": records[i]["id"], "source": records[i]["source"], "reason": ex})
                continue
            examples.append(ex)
            kept.append({**records[i], "split": split})
            src_tokens[owner[i]] += len(ex["input_ids"])
            src_out[(owner[i], split)] += 1
            truncated += i in truncated_records
        splits[split] = examples
        tok_stats[f"{split}_records"] = len(examples)
        tok_stats[f"{split}_tokens"] = sum(len(ex["input_ids"]) for ex in examples)

    counts = {"contaminated": contaminated, "exact": exact, "near": near, "per_source": per_source,
              "skipped": src_skipped, "out": src_out, "tokens": src_tokens, "split": tok_stats, "truncated": truncated}
    manifest, stats = report(config, checkpoint_dir, o, eval_sets, missing_sets, index, specs, loaded, counts)
    if pairs:
        stats["kind"] = "preferences"
        splits = {split: pair_examples(examples) for split, examples in splits.items()}
    write_dataset(out_dir, splits, stats)
    write_records(kept, out_dir / "records.jsonl")
    write_records(dropped, out_dir / "dropped.jsonl")
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return finish(manifest, timings, out_dir)


def main(argv: Optional[list[str]] = None) -> None:
    cli(setup, args=alias_config_flag(list(sys.argv[1:] if argv is None else argv), "mix_config"))

