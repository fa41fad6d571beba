"""Loads OpenAssistant conversations (oasst1): rebuilds each message tree, then follows the best-ranked assistant
reply at every turn from the root prompt, giving one multi-turn conversation per tree.

Reads the export's message-tree format (`*.trees.jsonl[.gz]`: one tree a line, replies nested) and the flat
message-list format (`*.messages.jsonl[.gz]` or the HF parquet rows: one message a line, linked by parent_id).
"""

import sys
from pathlib import Path
from typing import Optional

from lit_gpt.prepare import Loaded, RecordError, iter_json_records

REPO_ID = "OpenAssistant/oasst1"
PATTERNS = ["*.trees.jsonl.gz", "*.trees.jsonl", "*.jsonl", "*.jsonl.gz"]
ROLES = {"prompter": "user", "assistant": "assistant"}


def usable(msg: dict, lang: Optional[str], include_synthetic: bool) -> bool:
    """A message we may train on: not deleted, not rejected in review, in the wanted language, human-written."""
    return (
        isinstance(msg, dict)
        and isinstance(msg.get("text"), str)
        and bool(msg["text"].strip())
        and msg.get("role") in ROLES
        and not msg.get("deleted", False)
        and msg.get("review_result", True) is not False
        and (lang is None or msg.get("lang") == lang)
        and (include_synthetic or not msg.get("synthetic", False))
    )


def rank_key(item: tuple[int, dict]) -> tuple:
    i, m = item
    rank = m.get("rank")
    return (rank is None, rank if rank is not None else 0, i)  # ranked first (0 = best), then original order


def best_thread(root: dict, lang: Optional[str] = "en", include_synthetic: bool = False) -> list[dict]:
    """The conversation from `root` that takes the best-ranked usable assistant reply at each turn, and the first
    usable follow-up prompt that itself has a usable answer. Ends on an assistant message ([] if none)."""
    if not usable(root, lang, include_synthetic) or root.get("role") != "prompter":
        return []
    thread, node = [], root
    while True:
        answers = [(i, r) for i, r in enumerate(node.get("replies") or []) if usable(r, lang, include_synthetic) and r["role"] == "assistant"]
        if not answers:
            return thread
        answer = min(answers, key=rank_key)[1]
        for child, parent in ((node, thread[-1] if thread else None), (answer, node)):
            # nested replies must agree with their parent_id links, where the export has them
            if parent is not None and child.get("parent_id", parent.get("message_id")) != parent.get("message_id"):
                raise RecordError("broken parent link", f"message {child.get('message_id')} is not a reply to its parent")
        thread += [node, answer]
        follow = [
            (i, r) for i, r in enumerate(answer.get("replies") or [])
            if usable(r, lang, include_synthetic) and r["role"] == "prompter"
            and any(usable(a, lang, include_synthetic) and a["role"] == "assistant" for a in r.get("replies") or [])
        ]
        if not follow:
            return thread
        node = min(follow, key=rank_key)[1]


def trees_from_messages(messages: list[tuple[str, dict]]) -> tuple[list[tuple[str, dict]], int]:
    """Nests flat messages (message_id, parent_id) into trees; returns (where, root) pairs and the orphan count."""
    by_id = {m["message_id"]: dict(m, replies=[]) for _, m in messages}
    roots, orphans = [], 0
    for where, m in messages:
        node, parent = by_id[m["message_id"]], m.get("parent_id")
        if parent is None:
            roots.append((where, node))
        elif parent in by_id:
            by_id[parent]["replies"].append(node)
        else:
            orphans += 1
    return roots, orphans


def load(
    files: list[Path], max_records: Optional[int] = None, lang: Optional[str] = "en", include_synthetic: bool = False,
    name: str = "oasst",
) -> Loaded:
    """One record per tree (or per root message of a flat message list)."""
    out = Loaded()
    trees, flat = [], []
    for f in files:
        for where, obj in iter_json_records(f):
            if isinstance(obj, Exception):
                out.read += 1
                out.skip(where, obj)
            elif isinstance(obj, dict) and "prompt" in obj:
                trees.append((where, obj))
            elif isinstance(obj, dict) and "message_id" in obj and "parent_id" in obj:
                flat.append((where, obj))
            else:
                out.read += 1
                out.skip(where, RecordError("neither a message tree nor a message", "expected 'prompt' or 'message_id'+'parent_id'"))
    roots = [(w, t["prompt"], t) for w, t in trees]
    if flat:
        flat_roots, orphans = trees_from_messages(flat)
        roots += [(w, r, r) for w, r in flat_roots]
        if orphans:
            print(f"oasst: {orphans} messages whose parent is not in the files were ignored", file=sys.stderr)
    for where, root, tree in roots:
        if max_records is not None and out.read >= max_records:
            break
        out.read += 1
        try:
            if tree.get("tree_state", "ready_for_export") != "ready_for_export":
                raise RecordError("tree not ready for export", str(tree.get("tree_state")))
            if not isinstance(root, dict) or root.get("role") != "prompter":
                raise RecordError("root is not a prompter message")
            if lang is not None and root.get("lang") != lang:
                raise RecordError("other language", f"lang={root.get('lang')!r}")
            if not include_synthetic and root.get("synthetic"):
                raise RecordError("synthetic prompt")
            thread = best_thread(root, lang, include_synthetic)
            if not thread:
                raise RecordError("no usable assistant reply")
        except RecordError as e:
            out.skip(where, e)
            continue
        turns = [{"role": ROLES[m["role"]], "content": m["text"]} for m in thread]
        before = len(out.records)
        out.add(where, name, turns)
        if len(out.records) > before:
            out.records[-1]["message_ids"] = [m.get("message_id") for m in thread]
    return out
