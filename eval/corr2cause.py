"""corr2cause as the challenge's HELM fork runs it: `corr2cause` (multiple choice, one in-context example, EM).

Follows perlitz/private-helm (commits as the search tool's read_file reports them):
- src/helm/benchmark/scenarios/corr2cause_scenario.py @ 526af9c30d4834a613976a39f529eb0def27197a: corr2cause.csv
  (a header, then label,input rows; the published schema's two columns) is read in file order, each input
  stripped and each label an int; the list is shuffled, the first int(0.8 n) rows are train and the rest valid,
  numbered id0, id1, ... in that order.
- src/helm/benchmark/run_specs.py @ 12a854a42f2f95d7a4b6089abbbd545c6219f6b4 (identical @
  354a206cd9a68d13fdd6554462fb0afcd6f2af93), get_corr2cause_spec: get_multiple_choice_adapter_spec(
  method=multiple_choice_joint, max_tokens=1, instructions="\\nGiven a scenario with a premise and a hypothesis,
  determine if the hypothesis can be inferred from the premise.\\n", input_noun="Scenario\\n", output_noun="Answer"),
  so blocks read "Scenario\\n: <input>\\nA. 0\\nB. 1\\nAnswer: B".
- configs/run_specs_final_full_eval.conf @ b5ad109f90294f4312a64d6e64b8092bdf020c4c: max_train_instances=1.

Where we differ from the stored scenario, and why:
- References: both labels, "0" then "1", the gold one marked correct. The stored scenario gives the gold label as
  the only reference, which makes every joint prompt's answer "A"; the finalists' corr2cause EM of 0.49-0.65
  (neurIPS_eval_scripts/meta_analysis/results/A100_full_ranks_final_round.json @
  d92140fa23a366bd911185d73a0f43ea290c5499) cannot come from that, so the scored version had both options. Their
  order and texts are our reconstruction, in the style of the fork's later ethics_justice scenario.
- The shuffle is seeded with 0 (random.seed(0), as the fork's later ETHICS scenarios do); the stored version's
  unseeded shuffle gives a different split in every process, which nothing can reproduce.

Data: the corr2cause test set is not reachable offline. Put a CSV with `input` and `label` columns (any order,
more columns ignored) at <data_dir>/corr2cause/corr2cause.csv; without it the run is skipped.
"""

from __future__ import annotations

import random
from pathlib import Path

from eval.helm import TRAIN, VALID, AdapterSpec, Instance, multiple_choice_joint_spec
from eval.mmlu import score  # noqa: F401  (letter -> option exact match)
from lit_gpt.eval_sets import read_corr2cause

FILE = "corr2cause/corr2cause.csv"
TRAIN_RATIO = 0.8
LABELS = ("0", "1")
INSTRUCTIONS = ("\nGiven a scenario with a premise and a hypothesis, determine if the hypothesis can be inferred from the "
                "premise.\n")


def read_csv(path: Path) -> list[tuple[tuple[str, int], str]]:
    """((input, label), record id) for each row, in file order."""
    return [((r["input"].strip(), r["label"]), r["item_id"]) for r in read_corr2cause(path)]


def split(rows: list, train_ratio: float, seed: int = 0) -> list[tuple[object, str]]:
    """The fork's ETHICS/corr2cause split: shuffle with random.seed(seed), first int(ratio * n) train, rest valid."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)  # the same permutation as random.seed(seed); random.shuffle(rows)
    k = int(len(rows) * train_ratio)
    return [(r, TRAIN if i < k else VALID) for i, r in enumerate(rows)]


def spec() -> AdapterSpec:
    return multiple_choice_joint_spec(INSTRUCTIONS, input_noun="Scenario\n", output_noun="Answer")


def scenarios(data_dir: Path, file: str = FILE) -> dict[str, tuple[list[Instance], AdapterSpec]]:
    path = Path(data_dir) / file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no corr2cause CSV (columns input, label; not downloadable offline)")
    instances = [Instance(text, LABELS, (label,), part, source=item_id)
                 for ((text, label), item_id), part in split(read_csv(path), TRAIN_RATIO)]
    return {"corr2cause": (instances, spec())}
