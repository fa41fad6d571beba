"""Loads preference pairs (a prompt, a chosen and a rejected reply) for finetune/dpo.py, and tokenizes them.

Sources, told apart record by record:
- OpenAssistant message trees (`*.trees.jsonl[.gz]`, as scripts/prepare_oasst.py reads): at every prompt with two or
  more ranked usable replies, the best-ranked reply against the worst-ranked one, with the thread so far (the path
  from the tree's root) as the prompt.
- JSONL with `prompt` / `chosen` / `rejected`: `prompt` a string or a list of {role, content} turns, the replies
  strings (or a one-message assistant list, as TRL's conversational format has them).
- HH-RLHF-style JSONL with only `chosen` / `rejected`: two transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ...") that
  share everything but the last assistant reply.

A pair is rendered twice with the model's chat template (prompt + chosen, prompt + rejected); only the final reply
carries labels. Shards hold the two as consecutive examples (2i chosen, 2i+1 rejected) in the ordinary shard format,
and stats.json says `"kind": "preferences"`. Malformed records are skipped and reported as file:line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lit_gpt.data import IGNORE_INDEX, check_turns, encode_records
from lit_gpt.prepare import Loaded, RecordError, read_json_records
from lit_gpt.sources.oasst import ROLES, rank_key, usable

PATTERNS = ["*.trees.jsonl.gz", "*.trees.jsonl", "*.jsonl", "*.jsonl.gz"]
KIND = "preferences"
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def add_pair(out: Loaded, where: str, source: str, prompt: list[dict], chosen: Any, rejected: Any) -> None:
    """A pair record {"id", "source", "turns": prompt + [chosen reply], "rejected": str}, or a skip with the reason."""
    try:
        for name, reply in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(reply, str) or not reply.strip():
                raise RecordError(f"empty or non-string '{name}'")
        if chosen.strip() == rejected.strip():
            raise RecordError("chosen and rejected are the same text")
        turns = check_turns(prompt + [{"role": "assistant", "content": chosen}])
    except ValueError as e:
        out.skip(where, e if isinstance(e, RecordError) else RecordError(str(e)))
        return
    out.records.append({"id": where, "source": source, "turns": turns, "rejected": rejected.strip()})


# ----------------------------------------------------------------------------- OpenAssistant trees


def oasst_pairs(root: dict, lang: Optional[str], include_synthetic: bool) -> list[tuple[list[dict], str, str]]:
    """(prompt turns, best reply, worst reply) at every prompter node of the tree with >= 2 ranked usable replies."""
    out = []

    def visit(node: dict, thread: list[dict]) -> None:
        if not usable(node, lang, include_synthetic):
            return
        thread = thread + [{"role": ROLES[node["role"]], "content": node["text"]}]
        replies = [(i, r) for i, r in enumerate(node.get("replies") or []) if usable(r, lang, include_synthetic)]
        if node["role"] == "prompter":
            ranked = sorted(((i, r) for i, r in replies if r["role"] == "assistant" and r.get("rank") is not None),
                            key=rank_key)
            if len(ranked) >= 2 and ranked[0][1]["rank"] != ranked[-1][1]["rank"]:
                out.append((thread, ranked[0][1]["text"], ranked[-1][1]["text"]))
        for _, r in replies:
            if r["role"] != node["role"]:
                visit(r, thread)

    if root.get("role") == "prompter":
        visit(root, [])
    return out


# ----------------------------------------------------------------------------- generic and HH-RLHF JSONL


def hh_turns(text: Any, field: str) -> list[dict]:
    """An HH-RLHF transcript as turns; it must end with an assistant reply."""
    if not isinstance(text, str):
        raise RecordError(f"field '{field}' is not a string")
    parts = HH_TURN.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    if parts[0].strip() or len(parts) < 3:
        raise RecordError(f"'{field}' is not a Human/Assistant transcript")
    turns = [{"role": "user" if role == "Human" else "assistant", "content": content.strip()}
             for role, content in zip(parts[1::2], parts[2::2])]
    if turns[-1]["role"] != "assistant":
        raise RecordError(f"'{field}' does not end with an assistant reply")
    return turns


def generic_pair(obj: dict) -> tuple[list[dict], Any, Any]:
    def reply(value: Any, field: str) -> Any:
        if isinstance(value, list):  # TRL's conversational format: [{"role": "assistant", "content": ...}]
            if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
                raise RecordError(f"'{field}' must be a string or one assistant message")
            return value[0].get("content")
        return value

    if "prompt" not in obj:  # HH-RLHF: two transcripts with a common prefix
        chosen, rejected = hh_turns(obj["chosen"], "chosen"), hh_turns(obj["rejected"], "rejected")
        if chosen[:-1] != rejected[:-1]:
            raise RecordError("chosen and rejected transcripts differ before the last reply")
        return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]
    prompt = obj["prompt"]
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list):
        raise RecordError("field 'prompt' must be a string or a list of turns")
    return prompt, reply(obj["chosen"], "chosen"), reply(obj["rejected"], "rejected")


def load(
    files: list[Path], max_records: Optional[int] = None, lang: Optional[str] = "en", include_synthetic: bool = False,
    name: str = KIND,
) -> Loaded:
    """Pair records of every file (OASST trees give several per tree; JSONL one per line)."""

    def handle(out: Loaded, where: str, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise RecordError("record is not a JSON object")
        if isinstance(obj.get("prompt"), dict):  # an OASST message tree
            if obj.get("tree_state", "ready_for_export") != "ready_for_export":
                raise RecordError("tree not ready for export")
            pairs = oasst_pairs(obj["prompt"], lang, include_synthetic)
            if not pairs:
                raise RecordError("no prompt with two ranked usable replies")
            for k, (prompt, chosen, rejected) in enumerate(pairs):
                add_pair(out, f"{where}#{k}", name, prompt, chosen, rejected)
            return
        missing = [k for k in ("chosen", "rejected") if k not in obj]
        if missing:
            raise RecordError(f"missing field '{missing[0]}'")
        add_pair(out, where, name, *generic_pair(obj))

    return read_json_records(files, max_records, handle)


# ----------------------------------------------------------------------------- tokenization


def encode_pairs(
    records: list[dict], checkpoint_dir: Path | str, max_seq_length: int = 2048, template: str = "auto",
    num_workers: int = 0, desc: str = "pairs", encoder: Any = None,
) -> tuple[list[dict], dict]:
    """Tokenizes pair records like `lit_gpt.data.encode_records` (same arguments and stats); an example is
    {"input_ids", "labels"} of prompt + chosen and {"rejected_input_ids", "rejected_labels"} of prompt + rejected,
    labels only on the final reply. Pairs with a side over max_seq_length, or whose two prompts tokenize
    differently, are skipped with the reason."""
    sides = [r for rec in records for r in (rec, {**rec, "turns": rec["turns"][:-1] + [
        {"role": "assistant", "content": rec["rejected"]}]})]
    examples, st = encode_records(sides, checkpoint_dir, max_seq_length, template, num_workers, desc=desc,
                                  encoder=encoder)
    bad = dict(st["skipped"])
    it = iter(examples)
    side_examples = [None if i in bad else next(it) for i in range(len(sides))]
    for i in st["truncated_records"]:  # cut replies are not compared
        bad[i] = f"longer than max_seq_length={max_seq_length}"
    out, skipped = [], []
    for n in range(len(records)):
        reason = bad.get(2 * n) or bad.get(2 * n + 1)
        if reason is None:
            (chosen, n_c), (rejected, n_r) = (final_reply(side_examples[2 * n + j]) for j in (0, 1))
            if n_c != n_r or not np.array_equal(chosen["input_ids"][:n_c], rejected["input_ids"][:n_r]):
                reason = "the prompt tokenizes differently before the chosen and the rejected reply"
        if reason is not None:
            skipped.append((n, reason))
            continue
        out.append({**chosen, "rejected_input_ids": rejected["input_ids"], "rejected_labels": rejected["labels"]})
    tokens = sum(len(e["input_ids"]) + len(e["rejected_input_ids"]) for e in out)
    targets = sum(int((e["labels"] != IGNORE_INDEX).sum() + (e["rejected_labels"] != IGNORE_INDEX).sum()) for e in out)
    return out, {"records": len(out), "tokens": tokens, "target_tokens": targets, "truncated": 0,
                 "mismatch": st["mismatch"], "skipped": skipped, "truncated_records": []}


def final_reply(example: dict) -> tuple[dict, int]:
    """The example with labels only on its last target run (the reply being compared), and the prompt's length."""
    labels = np.array(example["labels"], copy=True)
    target = np.nonzero(labels != IGNORE_INDEX)[0]
    before = np.nonzero(labels[: target[-1]] == IGNORE_INDEX)[0]
    start = int(before[-1]) + 1 if len(before) else 0
    labels[:start] = IGNORE_INDEX
    return {"input_ids": example["input_ids"], "labels": labels}, start


def pair_examples(pairs: list[dict]) -> list[dict]:
    """Pair examples as shard examples: chosen at 2i, rejected at 2i+1."""
    return [e for p in pairs for e in ({"input_ids": p["input_ids"], "labels": p["labels"]},
                                       {"input_ids": p["rejected_input_ids"], "labels": p["rejected_labels"]})]
