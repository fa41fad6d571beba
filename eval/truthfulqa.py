"""TruthfulQA as HELM runs it: `truthful_qa:task=mc_single,method=multiple_choice_joint`.

HELM reads TruthfulQA.csv (the v1 revision of sylinrl/TruthfulQA), uses the first 20% of rows (163) as the
in-context pool and the rest (654) as eval instances. Choices: the incorrect answers, then the best answer, rotated
left by ord(best_answer[0]) % n_choices; every answer is stripped and ends with a period. No instructions.
"""

from __future__ import annotations

from pathlib import Path

from eval.helm import TRAIN, VALID, AdapterSpec, Instance, multiple_choice_joint_spec
from eval.mmlu import score  # noqa: F401  (same letter -> option exact match)
from lit_gpt.eval_sets import read_truthfulqa

TRAIN_RATIO = 0.2


def format_answer(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else text + "."


def read_rows(path: Path) -> list[dict]:
    rows = read_truthfulqa(path)
    if any(r["incorrect_answers"] is None for r in rows):
        raise ValueError(f"{path}:1: no 'Incorrect Answers' column (the choices)")
    return rows


def instance(row: dict, split: str) -> Instance:
    best = format_answer(row["best_answer"])
    incorrect = [format_answer(a) for a in row["incorrect_answers"].split(";") if a.strip()]
    refs = incorrect + [best]
    correct = [False] * len(incorrect) + [True]
    k = ord(best[0]) % len(refs)
    refs, correct = refs[k:] + refs[:k], correct[k:] + correct[:k]
    return Instance(row["question"].strip(), tuple(refs), tuple(i for i, c in enumerate(correct) if c), split,
                    source=row.get("item_id", ""))


def spec() -> AdapterSpec:
    return multiple_choice_joint_spec("", input_noun="Question", output_noun="Answer")


def scenarios(data_dir: Path, file: str = "truthfulqa/TruthfulQA.csv") -> dict[str, tuple[list[Instance], AdapterSpec]]:
    path = Path(data_dir) / file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no TruthfulQA csv")
    rows = read_rows(path)
    k = int(len(rows) * TRAIN_RATIO)
    instances = [instance(r, TRAIN) for r in rows[:k]] + [instance(r, VALID) for r in rows[k:]]
    return {"truthful_qa:task=mc_single": (instances, spec())}
