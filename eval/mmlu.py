"""MMLU as HELM runs it: `mmlu:subject=S,method=multiple_choice_joint` (5-shot from dev, letter exact match).

Local layout: <data_dir>/mmlu/{dev,val,test}/<subject>_<split>.csv (no header: question, A, B, C, D, answer letter).
A subject without dev/<subject>_dev.csv may have dev_mlilab/<subject>_dev.csv instead (the MLILAB-FedLLM copy: a
header row `question,choice0,choice1,choice2,choice3,answer` and answers 0-3); either layout is read by any file.
HELM reads dev (train), val (valid) and test (test) in that order; a missing split is skipped, as in HELM. The
shared data has no val/, so eval instances come from test only (HELM also samples from val) and instance ids
(which seed the perturbations) are offset accordingly.
"""

from __future__ import annotations

from pathlib import Path

from eval.helm import TEST, TRAIN, VALID, AdapterSpec, Instance, RequestState, multiple_choice_joint_spec
from eval.metrics import exact_match, quasi_exact_match
from lit_gpt.eval_sets import read_mmlu

SPLITS = {"dev": TRAIN, "val": VALID, "test": TEST}
# Folders tried for each split, in order (the first holding the subject's file wins).
FOLDERS = {"dev": ("dev", "dev_mlilab"), "val": ("val",), "test": ("test",)}


def subjects(data_dir: Path) -> list[str]:
    return sorted(p.name[: -len("_test.csv")] for p in (Path(data_dir) / "mmlu" / "test").glob("*_test.csv"))


def read_csv(path: Path, split: str) -> list[Instance]:
    instances = []
    for r in read_mmlu(Path(path)):
        answers = r["choices"]
        correct_text = dict(zip("ABCDE", answers))[r["answer"]]
        # HELM marks every option whose text equals the correct one (duplicates included).
        correct = tuple(i for i, a in enumerate(answers) if a == correct_text)
        instances.append(Instance(r["question"], answers, correct, split, source=r["item_id"]))
    return instances


def load_subject(data_dir: Path, subject: str) -> list[Instance]:
    instances: list[Instance] = []
    for name, split in SPLITS.items():
        paths = [Path(data_dir) / "mmlu" / folder / f"{subject}_{name}.csv" for folder in FOLDERS[name]]
        path = next((p for p in paths if p.is_file()), None)
        if path is not None:
            instances += read_csv(path, split)
    return instances


def spec(subject: str) -> AdapterSpec:
    return multiple_choice_joint_spec(
        f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.",
        input_noun="Question",
        output_noun="Answer",
    )


def scenarios(data_dir: Path, subject: str = "all") -> dict[str, tuple[list[Instance], AdapterSpec]]:
    names = subjects(data_dir) if subject == "all" else subject.split(",")
    if not names:
        raise FileNotFoundError(f"{Path(data_dir) / 'mmlu' / 'test'}: no <subject>_test.csv files")
    return {f"mmlu:subject={s}": (load_subject(data_dir, s), spec(s)) for s in names}


def score(state: RequestState) -> dict[str, float]:
    """HELM maps the stripped completion through the letter -> option mapping and compares option texts."""
    pred = state.output_mapping.get((state.completion or "").strip())
    golds = [state.instance.references[i] for i in state.instance.correct]
    return {
        "exact_match": max(exact_match(g, pred) for g in golds),
        "quasi_exact_match": max(quasi_exact_match(g, pred) for g in golds),
    }
