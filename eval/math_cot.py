"""MATH as the challenge ran it: `math:subject=S,level=L,use_official_examples=False,use_chain_of_thought=True`
(8-shot chain of thought from the train split, HELM's boxed-answer equivalence).

Follows crfm-helm 0.5.16's helm/benchmark/scenarios/math_scenario.py (MATHScenario) and get_math_spec
(run_specs/lite_run_specs.py). Where the challenge's fork (perlitz/private-helm) differs:
- src/helm/benchmark/run_specs.py get_math_spec: the same adapter spec, run name and metric, but it parses
  `use_chain_of_thought` as `== "True"` (upstream lower-cases it first) and adds HELM's generative-harms metrics
  (bias/toxicity of the completion, not used by the ranking: left out here).
- math_scenario.py (@ 6033e5b4, per the shared data's MANIFEST): loads the HF dataset `competition_math`, where
  upstream pins `hendrycks/competition_math` at a revision; both hold MATH's 7,500 train and 5,000 test records,
  as the local files do. The sorting and shuffling below are upstream's (the fork's file itself is not in the
  stored snapshot the search tool reads).
- configs/run_specs_final_full_eval.conf (the final ranking) runs the 7 subjects at levels 1 and 5 with
  use_chain_of_thought=True and max_eval_instances 89 (90 for level 5 prealgebra, geometry,
  counting_and_probability, precalculus).

Instances: HELM sorts each split by problem text, shuffles it with `datasets`' `shuffle(seed=42)` (numpy's
`default_rng(42).permutation`) and keeps one subject (`type`) and level, in that order. The reference is the whole
solution (chain of thought). Prompt: the instructions, then blocks "Problem: <problem>\\nAnswer: <solution>\\n"
joined by "###\\n"; generation is greedy, at most 400 tokens, stops at "###".

Local layout: <data_dir>/math/test.jsonl and <data_dir>/math/train/<subject>/<n>.json (one record each), with
fields problem, level ("Level 1".."Level 5"), type ("Counting & Probability", ...) and solution.
"""

from __future__ import annotations

from pathlib import Path

from eval.helm import GENERATION, TEST, TRAIN, AdapterSpec, Instance, RequestState
from eval.math_equiv import is_equiv_chain_of_thought
from lit_gpt.eval_sets import read_math

# HELM's subject= names -> the dataset's `type`, in the final ranking's order.
SUBJECTS = {
    "number_theory": "Number Theory",
    "intermediate_algebra": "Intermediate Algebra",
    "algebra": "Algebra",
    "prealgebra": "Prealgebra",
    "geometry": "Geometry",
    "counting_and_probability": "Counting & Probability",
    "precalculus": "Precalculus",
}
LEVELS = ("1", "2", "3", "4", "5")
FIELDS = ("problem", "level", "type", "solution")
INSTRUCTIONS = "Given a mathematics problem, determine the answer. Simplify your answer as much as possible.\n"


def run_name(subject: str, level: str) -> str:
    return f"math:subject={subject},level={level},use_official_examples=False,use_chain_of_thought=True"


def read_test(path: Path) -> list[dict]:
    return read_math(path, FIELDS)


def read_train(folder: Path) -> list[dict]:
    return [r for path in sorted(Path(folder).glob("*/*.json")) for r in read_math(path, FIELDS)]


def helm_order(records: list[dict]) -> list[dict]:
    """`Dataset.sort("problem").shuffle(seed=42)`: a stable sort by problem (code points, as Arrow compares UTF-8
    bytes), then row i of the result is row permutation[i] of the sorted split."""
    import numpy as np

    ordered = sorted(records, key=lambda r: r["problem"])
    return [ordered[i] for i in np.random.default_rng(42).permutation(len(ordered))]


def instances(train: list[dict], test: list[dict], subject: str, level: str) -> list[Instance]:
    """One run's train then test instances, in HELM's order (`train` and `test` already in helm_order)."""
    out = []
    for split, records in ((TRAIN, train), (TEST, test)):
        for r in records:
            if r["type"] == SUBJECTS[subject] and r["level"] == f"Level {level}":
                out.append(Instance(r["problem"], (r["solution"],), (0,), split, source=r["item_id"]))
    return out


def spec() -> AdapterSpec:
    return AdapterSpec(
        method=GENERATION,
        instructions=INSTRUCTIONS,  # passed as is (already ends in "\n")
        input_prefix="Problem: ",
        input_suffix="\n",
        output_prefix="Answer: ",  # no "$": the answer is the whole solution
        output_suffix="\n",
        instance_prefix="###\n",
        max_train_instances=8,
        num_outputs=1,
        temperature=0.0,
        max_tokens=400,
        stop_sequences=("###",),
    )


def _pick(value: str, known, what: str) -> list[str]:
    items = list(known) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in known]
    if unknown or not items:
        raise ValueError(f"unknown MATH {what} {unknown or value!r}; choose from {', '.join(known)} or 'all'")
    return items


def scenarios(data_dir: Path, subjects: str = "all", levels: str = "1,5") -> dict[str, tuple[list[Instance], AdapterSpec]]:
    root = Path(data_dir) / "math"
    names, lvls = _pick(subjects, SUBJECTS, "subjects"), _pick(levels, LEVELS, "levels")
    test_path, train_dir = root / "test.jsonl", root / "train"
    if not test_path.is_file():
        raise FileNotFoundError(f"{test_path}: no MATH test.jsonl")
    if not train_dir.is_dir():
        raise FileNotFoundError(f"{train_dir}: no MATH train/<subject>/*.json")
    train, test = helm_order(read_train(train_dir)), helm_order(read_test(test_path))
    return {run_name(s, lv): (instances(train, test, s, lv), spec()) for lv in lvls for s in names}


def score(state: RequestState) -> dict[str, float]:
    """HELM compares the boxed answer of the stripped completion with that of the reference solution."""
    gold = state.instance.references[0]
    return {"math_equiv_chain_of_thought": is_equiv_chain_of_thought(gold, (state.completion or "").strip())}
