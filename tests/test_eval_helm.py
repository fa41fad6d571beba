"""Our prompts and requests equal the ones HELM's own code builds from the same local data.

tests/data/eval/helm_golden.json was written by crfm-helm itself (tests/data/eval/make_helm_golden.py, run in a
separate venv); it holds SHA-256 digests of HELM's prompts, so these tests need no crfm-helm. Where crfm-helm is
importable (`make test-helm`), the golden file is regenerated on the fly and the robustness perturbation is also
compared using HELM's own word lists.
"""

import hashlib
import json
from pathlib import Path

import pytest

from eval import bbq, bigbench, cnn_dm, gsm8k, mmlu, truthfulqa
from eval.backends import HTTPBackend
from eval.helm import adapt, downsample_eval_instances, with_instance_ids
from eval.perturbations import augment, canonical, mild_mix

GOLDEN = Path(__file__).parent / "data" / "eval" / "helm_golden.json"
PERTURBED = {"mmlu", "truthfulqa"}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def our_runs(data: Path) -> dict:
    runs = {}
    for family, module in (("mmlu", mmlu), ("truthfulqa", truthfulqa), ("bbq", bbq), ("cnn_dm", cnn_dm),
                           ("gsm8k", gsm8k), ("bigbench", bigbench)):
        for name, (instances, spec) in module.scenarios(data).items():
            runs[name] = (family, instances, spec)
    return runs


def our_rows(family, instances, spec, limit, perturbations) -> dict:
    instances = downsample_eval_instances(with_instance_ids(instances), limit)
    if family in PERTURBED:
        instances = augment(instances, perturbations)
    rows = {}
    for k, s in enumerate(adapt(spec, instances)):
        r = s.request
        rows[(s.instance.id, s.instance.perturbation)] = {
            "prompt_sha256": digest(r.prompt), "prompt_chars": len(r.prompt), "num_train_instances": s.num_train_instances,
            "max_tokens": r.max_tokens, "temperature": r.temperature, "stop_sequences": list(r.stop_sequences),
            "top_k_per_token": r.top_k_per_token, "num_completions": r.num_completions,
            "output_mapping": {k: digest(v) for k, v in s.output_mapping.items()} if s.output_mapping else None,
            "http_body": {**HTTPBackend.raw_request(r), "prompt": digest(r.prompt)},
            "prompt": r.prompt,
        }
    return rows


def compare(golden: dict, data: Path, perturbations, compared_perturbations) -> int:
    runs = our_runs(data)
    # the shared data has grown past the golden file's runs (57 MMLU subjects, 35 BIG-bench tasks): compare those
    assert set(golden["runs"]) <= set(runs)
    checked = 0
    for name, helm_rows in golden["runs"].items():
        family, instances, spec = runs[name]
        ours = our_rows(family, instances, spec, golden["limits"][family], perturbations)
        helm_keys = {(r["id"], r["perturbation"]) for r in helm_rows if r["perturbation"] in compared_perturbations}
        our_keys = {k for k in ours if k[1] in compared_perturbations}
        assert our_keys == helm_keys, name
        for i, row in enumerate(helm_rows):
            key = (row["id"], row["perturbation"])
            if key not in helm_keys:
                continue
            mine = ours[key]
            for field in ("prompt_chars", "prompt_sha256", "num_train_instances", "max_tokens", "temperature",
                          "stop_sequences", "top_k_per_token", "num_completions", "output_mapping"):
                assert mine[field] == row[field], (name, key, field, mine["prompt"][-300:])
            if "http_body" in row:
                assert mine["http_body"] == row["http_body"], name
            checked += 1
    return checked


def test_prompts_equal_helm_golden(shared_data):
    golden = json.loads(GOLDEN.read_text())
    # mild_mix uses HELM's bundled word lists in the golden file; ours are a subset, so it is compared below.
    checked = compare(golden, shared_data, canonical(), {None, "dialect", "gender"})
    assert checked >= 150


def test_robustness_perturbation_equals_helm_with_its_lists(shared_data, tmp_path):
    """With HELM's own misspelling and contraction lists, our mild_mix gives HELM's perturbed prompts."""
    pytest.importorskip("helm.benchmark.augmentations.mild_mix_perturbation")
    import helm.benchmark.augmentations as aug
    from helm.benchmark.augmentations.contraction_expansion_perturbation import CONTRACTION_MAP

    golden = json.loads(GOLDEN.read_text())
    misspellings = json.loads((Path(aug.__file__).parent / "correct_to_misspelling.json").read_text())
    contractions = {}
    for contracted, expanded in CONTRACTION_MAP.items():  # HELM contracts with the reversed map
        contractions[expanded] = contracted
    perturbations = canonical()
    perturbations["mild_mix"] = ("robustness", False, lambda t, r: mild_mix(t, r, contractions, misspellings))
    checked = compare(golden, shared_data, perturbations, {None, "mild_mix", "dialect", "gender"})
    assert checked >= 150


def test_golden_file_is_reproducible(shared_data, tmp_path):
    """Where crfm-helm is installed, regenerating the golden file gives the committed one."""
    pytest.importorskip("helm.benchmark.scenarios.mmlu_scenario")
    import os
    import subprocess
    import sys

    out = tmp_path / "golden.json"
    subprocess.run([sys.executable, str(GOLDEN.parent / "make_helm_golden.py"), "--data_dir", str(shared_data),
                    "--out", str(out)], check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(GOLDEN.parents[3])})
    assert json.loads(out.read_text())["runs"] == json.loads(GOLDEN.read_text())["runs"]
