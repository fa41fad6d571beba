"""GSM8K as HELM runs it: `gsm` (5-shot chain of thought, exact match on the final number).

Each reference is the solution with "####" replaced by "The answer is", newlines by spaces, and a final period.
Prompt blocks are "Q: <question>\\nA: <solution>\\n"; generation stops at "\\n\\n", at most 400 tokens, greedy.
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.helm import TEST, TRAIN, AdapterSpec, Instance, RequestState, generation_spec
from eval.metrics import exact_match, exact_match_indicator, final_number_exact_match


def reference(answer: str) -> str:
    return answer.replace("####", "The answer is").replace("\n", " ") + "."


def read_jsonl(path: Path, split: str) -> list[Instance]:
    instances = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                ex = json.loads(line)
                instances.append(Instance(ex["question"], (reference(ex["answer"]),), (0,), split))
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path}:{lineno}: expected JSON with 'question' and 'answer' ({e})") from e
    return instances


def spec() -> AdapterSpec:
    return generation_spec(input_noun="Q", output_noun="A", max_train_instances=5, max_tokens=400, stop_sequences=("\n\n",))


def scenarios(data_dir: Path) -> dict[str, tuple[list[Instance], AdapterSpec]]:
    paths = {TRAIN: Path(data_dir) / "gsm8k" / "train.jsonl", TEST: Path(data_dir) / "gsm8k" / "test.jsonl"}
    for p in paths.values():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no GSM8K jsonl")
    return {"gsm": (read_jsonl(paths[TRAIN], TRAIN) + read_jsonl(paths[TEST], TEST), spec())}


def score(state: RequestState) -> dict[str, float]:
    pred, gold = (state.completion or "").strip(), state.instance.references[0]
    return {
        "final_number_exact_match": final_number_exact_match(gold, pred),
        "exact_match_indicator": exact_match_indicator(gold, pred),
        "exact_match": exact_match(gold, pred),
    }
