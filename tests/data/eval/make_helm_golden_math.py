"""Writes helm_golden_math.json: the requests crfm-helm's own MATH code builds from the shared data.

The MATH part of make_helm_golden.py (whose helpers it uses), kept in a file of its own so that the open six's
golden file need not be regenerated with it. Run it with the crfm-helm venv:

    PYTHONPATH=. .venv-helm/bin/python tests/data/eval/make_helm_golden_math.py --data_dir ../shared/data

HELM's MATHScenario downloads the HF dataset `competition_math`; here `load_dataset` is replaced by a DatasetDict
built from the local files (test.jsonl and train/<subject>/*.json, in sorted-path order), so HELM's own code still
sorts, shuffles (datasets' `shuffle(seed=42)`), filters and adapts them. For each of the final ranking's 14 runs
(get_math_spec with use_chain_of_thought=True) it stores, like make_helm_golden.py, the requests for LIMIT eval
instances (prompt digests, stops, max tokens, in-context examples) and, at the run's max_eval_instances in
configs/run_specs_final_full_eval.conf of perlitz/private-helm, the instance counts and a digest of the selected
eval problems with their ids.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from unittest import mock

from make_helm_golden import ROOT, digest, run_helm

LIMIT = 3
SUBJECTS = ["number_theory", "intermediate_algebra", "algebra", "prealgebra", "geometry", "counting_and_probability",
            "precalculus"]
# max_eval_instances of the 14 MATH entries of the fork's configs/run_specs_final_full_eval.conf
FINAL_MAX_EVAL = {("1", s): 89 for s in SUBJECTS} | {("5", s): 89 for s in SUBJECTS[:3]} | {("5", s): 90 for s in SUBJECTS[3:]}


def local_dataset(data: Path):
    from datasets import Dataset, DatasetDict

    with open(data / "math" / "test.jsonl", encoding="utf-8") as f:
        test = [json.loads(line) for line in f]
    train = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((data / "math" / "train").glob("*/*.json"))]
    return DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test)})


def selection(scenario, scratch: Path, max_eval: int) -> dict:
    from helm.benchmark.runner import downsample_eval_instances
    from helm.benchmark.scenarios.scenario import EVAL_SPLITS, TRAIN_SPLIT, with_instance_ids

    instances = with_instance_ids(scenario.get_instances(str(scratch)))
    kept = downsample_eval_instances(instances, max_eval, list(EVAL_SPLITS))
    evals = [i for i in kept if i.split != TRAIN_SPLIT]
    return {
        "max_eval_instances": max_eval,
        "num_train": sum(i.split == TRAIN_SPLIT for i in instances),
        "num_eval": sum(i.split != TRAIN_SPLIT for i in instances),
        "eval_ids": [i.id for i in evals],
        "eval_inputs_sha256": digest("\n".join(i.input.text for i in evals)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "helm_golden_math.json")
    args = parser.parse_args()
    data = args.data_dir.resolve()

    from importlib.metadata import version

    from helm.benchmark.run_specs.lite_run_specs import get_math_spec
    from helm.benchmark.scenarios import math_scenario

    dataset = local_dataset(data)
    scratch = Path(tempfile.mkdtemp(prefix="helm_golden_math_"))
    golden: dict = {"helm_version": version("crfm-helm"), "limit": LIMIT, "runs": {}, "selection": {}}
    with mock.patch.object(math_scenario, "load_dataset", lambda *a, **k: dataset):
        for level in ("1", "5"):
            for subject in SUBJECTS:
                run_spec = get_math_spec(subject, level, use_chain_of_thought="True")
                scenario = math_scenario.MATHScenario(subject, level, use_chain_of_thought=True)
                golden["runs"][run_spec.name] = run_helm(scenario, run_spec, scratch, LIMIT, None)
                golden["selection"][run_spec.name] = selection(scenario, scratch, FINAL_MAX_EVAL[level, subject])
    args.out.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {sum(len(v) for v in golden['runs'].values())} requests in {len(golden['runs'])} runs")


if __name__ == "__main__":
    main()
