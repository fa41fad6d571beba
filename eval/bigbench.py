"""BIG-bench JSON tasks as HELM runs them: `big_bench:task=T,subtask=S`.

HELM shuffles a task's examples with random.seed(0); the first n - 2m are train, the next m test and the last m
validation, m = max(int(0.2 n), 16). Tasks whose metrics list `multiple_choice_grade` use the
multiple_choice_joint adapter (correct = the highest target score), others plain generation with exact match
against every target. Prompt: the task's task_prefix as instructions (as is), example_input_prefix (default
"Question: ") and example_output_prefix (default "Answer: "), 5 in-context examples, 64 new tokens, greedy, stopping
at the task's stop_string if it has one (multiple choice requests carry no stop sequence, as in HELM).
"""

from __future__ import annotations

import random
from pathlib import Path

from eval.helm import GENERATION, MULTIPLE_CHOICE_JOINT, TEST, TRAIN, VALID, AdapterSpec, Instance, RequestState
from eval.metrics import exact_match, quasi_exact_match
from lit_gpt.eval_sets import read_bigbench

MIN_TEST_EXAMPLES = 16


def task_dirs(data_dir: Path) -> list[str]:
    """'task' or 'task/subtask' for every task.json that holds examples."""
    root = Path(data_dir) / "bigbench"
    return [str(path.parent.relative_to(root)) for path in sorted(root.rglob("task.json"))
            if read_bigbench(path, "")[0].get("examples")]


def load_task(path: Path, name: str = "") -> tuple[list[Instance], dict]:
    """`name`: 'task' or 'task/subtask', which names the instances' records."""
    task, examples = read_bigbench(path, name)
    if "examples" not in task:
        raise ValueError(f"{path}: not a BIG-bench JSON task with 'examples'")
    random.Random(0).shuffle(examples)
    n = len(examples)
    n_test = max(int(0.2 * n), MIN_TEST_EXAMPLES)
    n_train = n - 2 * n_test
    instances = []
    for i, ex in enumerate(examples):
        if "target_scores" in ex:
            best = max(ex["target_scores"].values())
            refs = tuple(ex["target_scores"])
            correct = tuple(j for j, s in enumerate(ex["target_scores"].values()) if s == best)
        elif "target" in ex:
            refs = tuple(ex["target"] if isinstance(ex["target"], list) else [ex["target"]])
            correct = tuple(range(len(refs)))
        else:
            raise ValueError(f"{path}: example {i} has neither 'target' nor 'target_scores'")
        split = TRAIN if i < n_train else TEST if i < n_train + n_test else VALID
        instances.append(Instance(ex["input"], refs, correct, split, source=ex["item_id"]))
    return instances, task


def spec(task: dict) -> AdapterSpec:
    mc = "multiple_choice_grade" in task["metrics"]
    return AdapterSpec(
        method=MULTIPLE_CHOICE_JOINT if mc else GENERATION,
        max_train_instances=5, num_outputs=1, max_tokens=64, temperature=0.0,
        instructions=task.get("task_prefix", ""),
        input_prefix=task.get("example_input_prefix", "Question: "),
        output_prefix=task.get("example_output_prefix", "Answer: "),
        stop_sequences=(str(task["stop_string"]),) if task.get("stop_string") else (),
    )


def scenarios(data_dir: Path, tasks: str = "all") -> dict[str, tuple[list[Instance], AdapterSpec]]:
    names = task_dirs(data_dir) if tasks == "all" else tasks.split(",")
    if not names:
        raise FileNotFoundError(f"{Path(data_dir) / 'bigbench'}: no task.json with examples")
    out = {}
    for name in names:
        instances, task = load_task(Path(data_dir) / "bigbench" / name / "task.json", name)
        task_name, _, subtask = name.partition("/")
        out[f"big_bench:task={task_name}" + (f",subtask={subtask}" if subtask else "")] = (instances, spec(task))
    return out


def score(state: RequestState) -> dict[str, float]:
    pred = (state.completion or "").strip()
    if state.output_mapping is not None:
        pred = state.output_mapping.get(pred)
    golds = [state.instance.references[i] for i in state.instance.correct]
    return {
        "exact_match": max(exact_match(g, pred) for g in golds),
        "quasi_exact_match": max(quasi_exact_match(g, pred) for g in golds),
    }
