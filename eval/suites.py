"""The challenge's final ranking as suites: eval/suites.yaml's HELM run entries -> the runs eval/run.py evaluates.

An entry is a HELM run description, `<scenario>:<key>=<value>,...` (the conf's `description`). Its keys are the run
spec function's arguments plus HELM run expanders: `model` (ignored: we evaluate what we are given),
`data_augmentation=canonical` (also run HELM's canonical perturbations), `max_eval_instances` and
`max_train_instances` (a number, or a named setting of HELM's MaxTrainInstancesRunExpander, which makes one run per
value). `--budget N` scales every entry's max_eval_instances by N / (their sum), rounded, at least 1: the fork's
own budgeted confs (build_secret_run_spec.py) likewise share one example budget among the entries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

SUITES_FILE = Path(__file__).with_name("suites.yaml")
SUITES = ("open", "closed", "full")
# HELM scenario (run spec function) name -> our family
FAMILY_OF = {"mmlu": "mmlu", "truthful_qa": "truthfulqa", "bbq": "bbq", "summarization_cnndm": "cnn_dm",
             "gsm": "gsm8k", "big_bench": "bigbench", "sam_sum": "samsum", "corr2cause": "corr2cause", "math": "math"}
ETHICS = ("ethics_justice", "ethics_commonsense", "ethics_virtue", "ethics_deontology", "ethics_utilitarianism")
# helm/benchmark/run_expander.py MaxTrainInstancesRunExpander.values_dict (the named settings)
MAX_TRAIN_SETTINGS = {"zero": [0], "one": [1], "all": [0, 1, 2, 4, 8, 16], "big_bench_few_shot_setting": [0, 1, 2, 3]}
EXPANDERS = ("model", "data_augmentation", "max_eval_instances", "max_train_instances")


@dataclass(frozen=True)
class SuiteRun:
    name: str  # the run's name in results.json
    family: str  # our family (eval/run.py FAMILIES)
    scenario: str  # the key of the family's scenarios() this run evaluates
    selector: Optional[str]  # what to load: an MMLU subject, a BIG-bench task[/subtask], an ETHICS subset; or None
    max_eval_instances: int
    max_train_instances: Optional[int]  # None: the run spec's own
    perturbed: bool  # data_augmentation=canonical
    entry: str  # the suite entry (HELM run description) it comes from


def parse_entry(entry: str) -> list[SuiteRun]:
    """One entry -> its runs (several when max_train_instances names a setting)."""
    scenario, _, rest = entry.partition(":")
    args: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"suite entry {entry!r}: {item!r} is not key=value")
        args[key] = value
    family = "ethics" if scenario in ETHICS else FAMILY_OF.get(scenario)
    if family is None:
        raise ValueError(f"suite entry {entry!r}: unknown scenario {scenario!r}")
    if args.get("data_augmentation", "canonical") != "canonical":
        raise ValueError(f"suite entry {entry!r}: only data_augmentation=canonical is supported")
    if "max_eval_instances" not in args or not args["max_eval_instances"].isdigit():
        raise ValueError(f"suite entry {entry!r}: needs max_eval_instances=<number>")
    spec = {k: v for k, v in args.items() if k not in EXPANDERS}
    key, selector = run_key(scenario, spec, entry)
    setting = args.get("max_train_instances")
    if setting is None:
        shots: list[Optional[int]] = [None]
    elif setting in MAX_TRAIN_SETTINGS:
        shots = list(MAX_TRAIN_SETTINGS[setting])
    elif setting.isdigit():
        shots = [int(setting)]
    else:
        raise ValueError(f"suite entry {entry!r}: max_train_instances={setting!r} is neither a number nor one of "
                         f"{', '.join(MAX_TRAIN_SETTINGS)}")
    return [
        SuiteRun(key + (f",max_train_instances={k}" if len(shots) > 1 else ""), family, key, selector,
                 int(args["max_eval_instances"]), k, "data_augmentation" in args, entry)
        for k in shots
    ]


def run_key(scenario: str, args: dict[str, str], entry: str) -> tuple[str, Optional[str]]:
    """(the family module's run name for these run spec arguments, the loader selector)."""
    try:
        if scenario == "mmlu":
            return f"mmlu:subject={args['subject']}", args["subject"]
        if scenario == "truthful_qa":
            return f"truthful_qa:task={args['task']}", None
        if scenario == "bbq":
            return f"bbq:subject={args['subject']}", None
        if scenario == "big_bench":
            task, subtask = args["task"], args.get("subtask", "")
            key = f"big_bench:task={task}" + (f",subtask={subtask}" if subtask else "")
            return key, "/".join(filter(None, (task, subtask)))
        if scenario == "math":
            return (f"math:subject={args['subject']},level={args['level']},"
                    f"use_official_examples={args.get('use_official_examples', 'False')},"
                    f"use_chain_of_thought={args.get('use_chain_of_thought', 'False')}"), None
    except KeyError as e:
        raise ValueError(f"suite entry {entry!r}: missing {e.args[0]}=") from e
    if args:
        raise ValueError(f"suite entry {entry!r}: unexpected argument(s) {', '.join(args)}")
    return scenario, scenario[len("ethics_"):] if scenario in ETHICS else None


def entries(suite: str, path: Path = SUITES_FILE) -> list[str]:
    import yaml

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    parts = ["open", "closed"] if suite == "full" else [suite]
    return [e for part in parts for e in data[part]]


def load(suite: str, budget: Optional[int] = None, path: Path = SUITES_FILE) -> list[SuiteRun]:
    runs = [r for e in entries(suite, path) for r in parse_entry(e)]
    return runs if budget is None else scale(runs, budget)


def scale(runs: list[SuiteRun], budget: int) -> list[SuiteRun]:
    """Each entry's max_eval_instances times budget / (the entries' sum), rounded, at least 1."""
    if budget < 1:
        raise ValueError("--budget must be at least 1")
    per_entry = {r.entry: r.max_eval_instances for r in runs}
    total = sum(per_entry.values())
    return [replace(r, max_eval_instances=max(1, round(r.max_eval_instances * budget / total))) for r in runs]
