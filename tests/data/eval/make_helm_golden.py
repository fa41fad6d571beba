"""Writes helm_golden.json: the requests HELM's own code (crfm-helm) builds from the shared data.

Run it with a Python that has crfm-helm installed (a separate venv: it pins packages that break ours):

    python3 -m venv /tmp/helm-venv && /tmp/helm-venv/bin/pip install crfm-helm && /tmp/helm-venv/bin/pip uninstall -y torchvision
    PYTHONPATH=. /tmp/helm-venv/bin/python tests/data/eval/make_helm_golden.py --data_dir ../shared/data  # from the repo root

For every run (the 17 MMLU subjects and 12 BIG-bench tasks of MMLU_SUBJECTS and BIGBENCH_TASKS, TruthfulQA mc_single, BBQ, CNN/DailyMail, GSM8K) it
loads the local files through HELM's scenario classes (placed where HELM would have downloaded them), applies HELM's
runner steps (instance ids, seeded max_eval_instances sampling, the dialect/gender/mild_mix perturbations for MMLU
and TruthfulQA) and HELM's adapter (in-context example sampling, prompt construction; prompt fitting is left out, as
it needs the served model's tokenizer). Prompts are stored as SHA-256 digests (plus length) so that no dataset
text enters the repository; the request fields and the exact HTTP body of HELM's neurips/local client are stored
in full (prompt digested). tests/test_eval_helm.py compares our requests with these.

The dialect perturbation is given our own SAE->AAE word list (eval.perturbations.SAE_TO_AAE) as its mapping file,
since HELM's is downloaded; mild_mix uses HELM's own bundled lists (tests compare it only where crfm-helm is
installed, by passing HELM's lists to our code). HELM's person-name perturbation needs a download and is left out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# The runs the golden file covers: the first batch of shared data (17 MMLU subjects, 12 BIG-bench tasks). Fixed, so
# the file stays reproducible as ../shared/data grows; covering more runs means regenerating it.
MMLU_SUBJECTS = (
    "high_school_biology", "high_school_chemistry", "high_school_computer_science", "high_school_european_history",
    "high_school_geography", "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics", "high_school_psychology",
    "high_school_statistics", "high_school_us_history", "high_school_world_history", "moral_disputes",
    "moral_scenarios", "philosophy",
)
BIGBENCH_TASKS = (
    "analytic_entailment", "causal_judgment", "dark_humor_detection", "emoji_movie", "empirical_judgments",
    "known_unknowns", "logical_deduction/five_objects", "logical_deduction/seven_objects",
    "logical_deduction/three_objects", "snarks", "strange_stories/boolean", "strange_stories/multiple_choice",
)
LIMITS = {"mmlu": 3, "truthfulqa": 5, "bbq": 5, "cnn_dm": 3, "gsm8k": 3, "bigbench": 3}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def http_body(request) -> dict:
    """The JSON HELM's HTTPModelClient posts for `request` (captured, no server needed)."""
    import requests
    from helm.clients.http_model_client import HTTPModelClient
    from helm.common.cache import BlackHoleCacheConfig

    captured = {}

    class Response:
        def raise_for_status(self):
            pass

        def json(self):
            return {"text": "", "logprob": 0.0, "tokens": [], "request_time": 0.0}

    def fake_post(url, json=None, timeout=None):
        captured.update(json)
        return Response()

    original, requests.post = requests.post, fake_post
    try:
        HTTPModelClient(BlackHoleCacheConfig()).make_request(request)
    finally:
        requests.post = original
    captured["prompt"] = digest(captured["prompt"])
    return captured


def run_helm(scenario, run_spec, scratch: Path, limit: int, perturbations) -> list[dict]:
    from helm.benchmark.augmentations.data_augmenter import DataAugmenter
    from helm.benchmark.runner import downsample_eval_instances
    from helm.benchmark.scenarios.scenario import EVAL_SPLITS, TRAIN_SPLIT, with_instance_ids

    instances = with_instance_ids(scenario.get_instances(str(scratch)))
    instances = downsample_eval_instances(instances, limit, list(EVAL_SPLITS))
    if perturbations:
        train = [i for i in instances if i.split == TRAIN_SPLIT]
        evals = [i for i in instances if i.split != TRAIN_SPLIT]
        evals = DataAugmenter(perturbations).generate(evals, include_original=True, skip_unchanged=True)
        instances = train + evals
    spec = run_spec.adapter_spec
    # Build the adapter without a window service: prompt fitting needs the served model's tokenizer.
    from helm.benchmark.adaptation.adapters import generation_adapter, multiple_choice_joint_adapter

    cls = (multiple_choice_joint_adapter.MultipleChoiceJointAdapter if spec.method == "multiple_choice_joint"
           else generation_adapter.GenerationAdapter)
    adapter = cls.__new__(cls)
    adapter.adapter_spec = spec
    adapter._make_prompt_fit = lambda prompt: prompt
    states = adapter.adapt(instances, parallelism=1)
    out = []
    for k, s in enumerate(states):
        r = s.request
        row = {
            "id": s.instance.id,
            "perturbation": s.instance.perturbation.name if s.instance.perturbation else None,
            "prompt_sha256": digest(r.prompt), "prompt_chars": len(r.prompt),
            "num_train_instances": s.num_train_instances, "max_tokens": r.max_tokens, "temperature": r.temperature,
            "stop_sequences": list(r.stop_sequences), "top_k_per_token": r.top_k_per_token,
            "num_completions": r.num_completions,
            "output_mapping": {k: digest(v) for k, v in s.output_mapping.items()} if s.output_mapping else None,
        }
        if k == 0:
            row["http_body"] = http_body(r)
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "helm_golden.json")
    args = parser.parse_args()
    data = args.data_dir.resolve()

    import helm
    from helm.benchmark.augmentations.perturbation import PerturbationSpec, create_perturbation
    from helm.benchmark.run_specs.classic_run_specs import (
        get_bbq_spec, get_big_bench_spec, get_cnndm_summarization_spec, get_truthful_qa_spec,
    )
    from helm.benchmark.run_specs.lite_run_specs import get_gsm_spec, get_mmlu_spec
    from helm.benchmark.scenarios.bbq_scenario import BBQScenario
    from helm.benchmark.scenarios.big_bench_scenario import BIGBenchScenario
    from helm.benchmark.scenarios.gsm_scenario import GSM8KScenario
    from helm.benchmark.scenarios.mmlu_scenario import MMLUScenario
    from helm.benchmark.scenarios.summarization_scenario import SummarizationScenario
    from helm.benchmark.scenarios.truthful_qa_scenario import TruthfulQAScenario

    from eval.bbq import CATEGORIES
    from eval.perturbations import SAE_TO_AAE

    scratch = Path(tempfile.mkdtemp(prefix="helm_golden_"))
    dialect_file = scratch / "sae_to_aae.json"
    dialect_file.write_text(json.dumps(SAE_TO_AAE))
    aug = "helm.benchmark.augmentations."
    perturbations = [
        create_perturbation(PerturbationSpec(class_name=aug + "mild_mix_perturbation.MildMixPerturbation", args={})),
        create_perturbation(PerturbationSpec(
            class_name=aug + "dialect_perturbation.DialectPerturbation",
            args={"prob": 1.0, "source_class": "SAE", "target_class": "AAVE", "mapping_file_path": str(dialect_file)})),
        create_perturbation(PerturbationSpec(
            class_name=aug + "gender_perturbation.GenderPerturbation",
            args={"mode": "pronouns", "prob": 1.0, "source_class": "male", "target_class": "female"})),
    ]
    # HELM names the perturbations mild_mix / dialect / gender, as our eval.perturbations does.

    golden: dict = {"helm_version": getattr(helm, "__version__", None), "limits": LIMITS, "runs": {}}
    try:
        from importlib.metadata import version

        golden["helm_version"] = version("crfm-helm")
    except Exception:
        pass

    # MMLU: HELM reads <out>/data/{dev,val,test}/<subject>_<split>.csv
    mmlu_dir = scratch / "mmlu"
    for split in ("dev", "test"):
        link(data / "mmlu" / split, mmlu_dir / "data" / split)
    for subject in MMLU_SUBJECTS:
        golden["runs"][f"mmlu:subject={subject}"] = run_helm(
            MMLUScenario(subject), get_mmlu_spec(subject), mmlu_dir, LIMITS["mmlu"], perturbations)

    tqa_dir = scratch / "truthful_qa"
    link(data / "truthfulqa" / "TruthfulQA.csv", tqa_dir / "data" / "TruthfulQA.csv")
    golden["runs"]["truthful_qa:task=mc_single"] = run_helm(
        TruthfulQAScenario("mc_single"), get_truthful_qa_spec("mc_single"), tqa_dir, LIMITS["truthfulqa"], perturbations)

    bbq_dir = scratch / "bbq"
    (bbq_dir / "data").mkdir(parents=True)
    for category in CATEGORIES:
        src = data / "bbq" / f"{category}.jsonl"
        if src.is_file():
            link(src, bbq_dir / "data" / category)
        else:  # missing from the shared data: an empty file, so HELM skips it as our loader does
            (bbq_dir / "data" / category).write_text("")
    golden["runs"]["bbq:subject=all"] = run_helm(BBQScenario("all"), get_bbq_spec("all"), bbq_dir, LIMITS["bbq"], None)

    cnn_dir = scratch / "summarization"
    (cnn_dir / "data").mkdir(parents=True)

    def jsonl(path):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    with open(cnn_dir / "data" / "cnndm.pk", "wb") as f:
        pickle.dump({"train": jsonl(data / "cnn_dailymail" / "validation_first668.jsonl"), "validation": [],
                     "test": jsonl(data / "cnn_dailymail" / "test_first574.jsonl")}, f)
    golden["runs"]["summarization_cnndm"] = run_helm(
        SummarizationScenario("cnn-dm", sampling_min_length=50, sampling_max_length=150, doc_max_length=512),
        get_cnndm_summarization_spec(), cnn_dir, LIMITS["cnn_dm"], None)

    gsm_dir = scratch / "gsm"
    for split in ("train", "test"):
        link(data / "gsm8k" / f"{split}.jsonl", gsm_dir / f"gsm_data_{split}")
    golden["runs"]["gsm"] = run_helm(GSM8KScenario(), get_gsm_spec(), gsm_dir, LIMITS["gsm8k"], None)

    # BIG-bench: the run spec reads the task from ./benchmark_output/scenarios/big_bench/<task>[/<subtask>]/task.json
    os.chdir(scratch)
    bb_dir = scratch / "benchmark_output" / "scenarios" / "big_bench"
    for name in BIGBENCH_TASKS:
        link(data / "bigbench" / name / "task.json", bb_dir / name / "task.json")
        task, _, subtask = name.partition("/")
        run_name = f"big_bench:task={task}" + (f",subtask={subtask}" if subtask else "")
        golden["runs"][run_name] = run_helm(
            BIGBenchScenario(task, subtask), get_big_bench_spec(task, subtask), bb_dir, LIMITS["bigbench"], None)

    args.out.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {sum(len(v) for v in golden['runs'].values())} requests in {len(golden['runs'])} runs")


if __name__ == "__main__":
    main()
