"""Loads the Flan 2022 collection's submixes (flan2021, t0, niv2, cot, dialog) from their published JSONL layout:
one example a line with "inputs", "targets", "task_source", "task_name" and "template_type" (zs_opt, zs_noopt,
fs_opt, fs_noopt), as in the FLAN v2 export, Open-Orca/FLAN and the *_submix_original datasets."""

from collections import Counter
from pathlib import Path
from typing import Optional

from lit_gpt.prepare import Loaded, get_str, iter_json_records
from lit_gpt.utils import UserError

REPO_ID = "Open-Orca/FLAN"
PATTERNS = ["*.jsonl", "*.jsonl.gz", "*.parquet", "*.json"]  # a local copy
SUBMIXES = ("flan2021", "t0", "niv2", "cot", "dialog")
# task_source values in the published files -> submix
SOURCE_TO_SUBMIX = {"flan2021": "flan2021", "flan": "flan2021", "t0": "t0", "p3": "t0", "niv2": "niv2",
                    "cot": "cot", "dialog": "dialog"}


def submix_of(obj: dict, path: Path) -> Optional[str]:
    """The record's submix from its task_source, else from the file name (e.g. "cot_zs_submix_data.json")."""
    src = obj.get("task_source")
    if isinstance(src, str) and src.lower() in SOURCE_TO_SUBMIX:
        return SOURCE_TO_SUBMIX[src.lower()]
    for part in path.parts[::-1]:
        head = part.lower().split("_")[0]
        if head in SOURCE_TO_SUBMIX:
            return SOURCE_TO_SUBMIX[head]
    return None


def load(
    files: list[Path],
    submixes: tuple[str, ...] = SUBMIXES,
    template_types: Optional[tuple[str, ...]] = None,
    max_records: Optional[int] = None,
    name: str = "flan",
) -> Loaded:
    """`max_records` caps each task (task_name); records of other submixes / template types or over the cap are
    counted in stats ("filtered") but not read."""
    unknown = set(submixes) - set(SUBMIXES)
    if unknown:
        raise UserError(f"unknown flan submix(es) {sorted(unknown)}: choose from {', '.join(SUBMIXES)}")
    out, per_task, filtered = Loaded(), Counter(), Counter()
    for f in files:
        for where, obj in iter_json_records(f):
            if not isinstance(obj, Exception) and isinstance(obj, dict):
                submix = submix_of(obj, f)
                if submix is not None and submix not in submixes:
                    filtered["other submix"] += 1
                    continue
                if template_types and obj.get("template_type") not in template_types:
                    filtered["other template_type"] += 1
                    continue
                task = obj.get("task_name") if isinstance(obj.get("task_name"), str) else "?"
                if max_records is not None and per_task[task] >= max_records:
                    filtered["over max_records for its task"] += 1
                    continue
                per_task[task] += 1
            out.read += 1
            try:
                if isinstance(obj, Exception):
                    raise obj
                inputs = get_str(obj, "inputs") if "inputs" in obj or "source" not in obj else get_str(obj, "source")
                targets = get_str(obj, "targets") if "targets" in obj or "target" not in obj else get_str(obj, "target")
            except ValueError as e:
                out.skip(where, e)
                continue
            before = len(out.records)
            out.add(where, name, [{"role": "user", "content": inputs}, {"role": "assistant", "content": targets}])
            if len(out.records) > before:
                out.records[-1]["task"] = f"{submix_of(obj, f)}/{task}"
    out.extra = {"filtered": dict(filtered), "tasks": len(per_task)}
    return out


def download_patterns(submixes: tuple[str, ...] = SUBMIXES, **_) -> list[str]:
    """The files fetched from REPO_ID: only the chosen submixes' (the whole repo is many GB)."""
    return [f"{s}_*submix_data.json" for s in submixes]
