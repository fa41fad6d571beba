"""GSM8K as HELM runs it: `gsm` (5-shot chain of thought, exact match on the final number).

Each reference is the solution with "####" replaced by "The answer is", newlines by spaces, and a final period.
Prompt blocks are "Q: <question>\\nA: <solution>\\n"; generation stops at "\\n\\n", at most 400 tokens, greedy.
"""

from __future__ import annotations

from pathlib import Path

from eval.helm import TEST, TRAIN, AdapterSpec, Instance, RequestState, generation_spec
from eval.metrics import exact_match, exact_match_indicator, final_number_exact_match
from lit_gpt.eval_sets import read_gsm8k


def reference(answer: str) -> str:
    return answer.replace("####", "The answer is").replace("\n", " ") + "."


def read_jsonl(path: Path, split: str) -> list[Instance]:
    return [Instance(r["question"], (reference(r["answer"]),), (0,), split, source=r["item_id"])
            for r in read_gsm8k(path)]


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
