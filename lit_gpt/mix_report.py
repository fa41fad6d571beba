"""The record of a mix: manifest.json (per source: records in and out, duplicates, contaminated by which evaluation
set, tokens), manifest.md (the same as tables) and stats.json, from the counts either build path
(lit_gpt/mix.py in memory, lit_gpt/mix_stream.py streamed) collects."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from lit_gpt.prepare import Loaded
from lit_gpt.utils import atomic_path, write_json


def report(config: Path, checkpoint_dir: Path, o: dict, eval_sets: dict, missing_sets: list[str], index: Any,
           specs: list[dict], loaded: list[Loaded], c: dict) -> tuple[dict, dict]:
    """The manifest (without timings) and stats.json of a mix, from its per-source counts `c`."""
    sources_manifest = []
    for s, (spec, lo) in enumerate(zip(specs, loaded)):
        sources_manifest.append({
            "name": spec["name"],
            "origin": str(spec.get("dir") or f"prepare {spec['prepare']}: {spec.get('source') or spec.get('repo_id')}"),
            "read": lo.read,
            "malformed": sum(lo.skipped.values()),
            "malformed_reasons": dict(lo.skipped),
            "records_in": len(lo.records),
            "contaminated": sum(c["contaminated"][s].values()),
            "contaminated_by": dict(c["contaminated"][s]),
            "exact_duplicates": c["exact"][s],
            "near_duplicates": c["near"][s],
            "available": c["per_source"][s]["available"],
            "weight": spec.get("weight"),
            "records": spec.get("records"),
            "selected": c["per_source"][s]["selected"],
            "tokenization_skipped": c["skipped"][s],
            "records_out": c["out"][(s, "train")] + c["out"][(s, "val")],
            "train": c["out"][(s, "train")],
            "val": c["out"][(s, "val")],
            "tokens": c["tokens"][s],
        })
    totals = {k: sum(m[k] for m in sources_manifest) for k in
              ("read", "malformed", "records_in", "contaminated", "exact_duplicates", "near_duplicates", "records_out", "tokens")}
    contaminated_by = Counter()
    for m in sources_manifest:
        contaminated_by.update(m["contaminated_by"])
    tok_stats, truncated = c["split"], c["truncated"]
    manifest = {
        "config": str(config),
        "checkpoint_dir": str(checkpoint_dir),
        "seed": o["seed"],
        "val_fraction": o["val_fraction"],
        "max_seq_length": o["max_seq_length"],
        "dedup": o["dedup"],
        "decontaminate": {k: v for k, v in o["decontaminate"].items() if k != "eval_sets"} | {
            "eval_sets": {n: {"kind": e["kind"], "paths": [str(p) for p in e["paths"]], "items": index.counts[n]}
                          for n, e in eval_sets.items()},
            "boilerplate_ngrams_ignored": index.boilerplate if index is not None else 0,
            "boilerplate_short_ignored": index.short_boilerplate if index is not None else 0,
            "index_from_cache": str(index.cache_file) if index is not None and index.cache_file else None,
            "eval_sets_missing": missing_sets,
        },
        "sources": sources_manifest,
        "totals": {**totals, "contaminated_by": dict(contaminated_by), "truncated": truncated, **tok_stats},
    }
    stats = {"name": "mix", "records": tok_stats["train_records"] + tok_stats["val_records"],
             "tokens": tok_stats["train_tokens"] + tok_stats["val_tokens"],
             "truncated": truncated, "train": {"records": tok_stats["train_records"], "tokens": tok_stats["train_tokens"]},
             "val": {"records": tok_stats["val_records"], "tokens": tok_stats["val_tokens"]},
             "skipped": {"total": totals["malformed"] + sum(c["skipped"].values()),
                         "reasons": dict(sum((Counter(lo.skipped) for lo in loaded), Counter())),
                         "examples": [m for lo in loaded for m in lo.messages][:200]},
             "max_seq_length": o["max_seq_length"], "checkpoint_dir": str(checkpoint_dir)}
    return manifest, stats


def finish(manifest: dict, timings: dict, out_dir: Path) -> dict:
    """Writes manifest.json and manifest.md (the data files are written) and prints the summary."""
    manifest["timings_s"] = timings
    write_json(manifest, out_dir / "manifest.json")
    with atomic_path(out_dir / "manifest.md") as tmp:
        tmp.write_text(manifest_markdown(manifest), encoding="utf-8")
    totals = manifest["totals"]
    print(
        f"mix: {totals['records_in']} records in, {totals['contaminated']} contaminated, "
        f"{totals['exact_duplicates']} exact + {totals['near_duplicates']} near duplicates, {totals['records_out']} out "
        f"({totals['train_records']} train, {totals['val_records']} val), {totals['tokens']:,} tokens -> {out_dir}",
        file=sys.stderr,
    )
    return manifest


def manifest_markdown(m: dict) -> str:
    cols = ["name", "read", "malformed", "records_in", "contaminated", "exact_duplicates", "near_duplicates",
            "available", "selected", "records_out", "train", "val", "tokens"]
    lines = [f"# Mix manifest: {m['config']}", "",
             f"Tokenizer: `{m['checkpoint_dir']}`, seed {m['seed']}, val_fraction {m['val_fraction']}, "
             f"max_seq_length {m['max_seq_length']}.", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for s in m["sources"]:
        lines.append("| " + " | ".join(str(s[c]) for c in cols) + " |")
    t = m["totals"]
    lines.append("| **total** | " + " | ".join(str(t.get(c, "")) for c in cols[1:]) + " |")
    lines += ["", "## Dropped as contaminated, by evaluation set", ""]
    d = m["decontaminate"]
    lines.append(f"{d['ngram']}-gram overlap on normalized text (shorter items matched whole, their other texts "
                 f"from {d['min_words']} words; n-grams and short texts in more than {d['max_items']} items ignored "
                 f"as boilerplate: {d['boilerplate_ngrams_ignored']} and {d['boilerplate_short_ignored']}).")
    lines += ["", "| source | " + " | ".join(d["eval_sets"]) + " |", "|---|" + "---|" * len(d["eval_sets"])]
    for s in m["sources"]:
        lines.append(f"| {s['name']} | " + " | ".join(str(s["contaminated_by"].get(e, 0)) for e in d["eval_sets"]) + " |")
    if d["eval_sets_missing"]:
        lines += ["", "**Not checked (not found):** " + ", ".join(d["eval_sets_missing"])]
    lines += ["", "Evaluation sets: " + ", ".join(f"{n} ({e['items']} items)" for n, e in d["eval_sets"].items()),
              "", "Every dropped record, with the reason, is in `dropped.jsonl`.", ""]
    return "\n".join(lines)
