"""eval/suites.yaml is the fork's final-ranking conf (perlitz/private-helm configs/run_specs_final_full_eval.conf @
b5ad109f90294f4312a64d6e64b8092bdf020c4c), --budget arithmetic, and runs without data reported as skipped."""

import json
from collections import Counter
from dataclasses import replace

import pytest

from eval import suites

MATH_SUBJECTS = ("number_theory", "intermediate_algebra", "algebra", "prealgebra", "geometry",
                 "counting_and_probability", "precalculus")


def test_suite_entries_are_the_confs():
    open_, closed = suites.entries("open"), suites.entries("closed")
    assert suites.entries("full") == open_ + closed
    scenario = lambda entries: Counter(e.split(":")[0] for e in entries)  # noqa: E731
    assert scenario(open_) == {"big_bench": 29, "mmlu": 55, "truthful_qa": 1, "summarization_cnndm": 1, "gsm": 1, "bbq": 1}
    assert scenario(closed) == {"sam_sum": 1, "corr2cause": 1, "ethics_justice": 1, "ethics_commonsense": 1,
                                "ethics_virtue": 1, "ethics_deontology": 1, "ethics_utilitarianism": 1, "math": 14}
    count = lambda entries: sum(int(e.split("max_eval_instances=")[1]) for e in entries)  # noqa: E731
    assert (count(open_), count(closed)) == (2000, 5000)
    assert all(e.startswith(("mmlu:", "truthful_qa:", "ethics_")) == ("data_augmentation=canonical" in e) for e in open_ + closed)
    assert "corr2cause:model=neurips/local,max_train_instances=1,max_eval_instances=1250" in closed
    assert "sam_sum:model=neurips/local,max_eval_instances=1250" in closed
    assert "bbq:subject=all,model=neurips/local,max_eval_instances=61" in open_
    assert "mmlu:model=neurips/local,subject=jurisprudence,data_augmentation=canonical,max_eval_instances=21" in open_


def test_runs_of_the_closed_suite():
    runs = suites.load("closed")
    by_name = {r.name: r for r in runs}
    assert len(runs) == 21 and len(by_name) == 21
    assert [r.name for r in runs if r.family == "math"] == [
        f"math:subject={s},level={level},use_official_examples=False,use_chain_of_thought=True"
        for level in (1, 5) for s in MATH_SUBJECTS]
    assert [r.max_eval_instances for r in runs if r.family == "math"] == [89] * 10 + [90] * 4
    c2c = by_name["corr2cause"]
    assert (c2c.family, c2c.max_train_instances, c2c.max_eval_instances, c2c.perturbed) == ("corr2cause", 1, 1250, False)
    justice = by_name["ethics_justice"]
    assert (justice.family, justice.selector, justice.max_eval_instances, justice.perturbed) == ("ethics", "justice", 250, True)
    assert by_name["sam_sum"].family == "samsum" and by_name["sam_sum"].max_train_instances is None


def test_open_suite_expands_big_bench_few_shot_setting():
    runs = suites.load("open")
    bb = [r for r in runs if r.family == "bigbench"]
    assert len(bb) == 29 * 4 and len(runs) == 29 * 4 + 55 + 4
    three = [r for r in bb if r.scenario == "big_bench:task=logical_deduction,subtask=three_objects"]
    assert [(r.name, r.max_train_instances, r.max_eval_instances) for r in three] == [
        (f"big_bench:task=logical_deduction,subtask=three_objects,max_train_instances={k}", k, 20) for k in range(4)]
    assert three[0].selector == "logical_deduction/three_objects"
    auto = next(r for r in bb if r.scenario == "big_bench:task=auto_debugging")
    assert auto.selector == "auto_debugging"
    mmlu = {r.name: r for r in runs if r.family == "mmlu"}
    assert mmlu["mmlu:subject=anatomy"].selector == "anatomy" and mmlu["mmlu:subject=anatomy"].perturbed
    assert {r.name for r in runs if r.family in ("truthfulqa", "bbq", "cnn_dm", "gsm8k")} == {
        "truthful_qa:task=mc_single", "bbq:subject=all", "summarization_cnndm", "gsm"}


def test_budget_scales_each_entry():
    full = suites.load("full")
    scaled = suites.load("full", budget=700)  # a tenth of the conf's 7000
    assert [r.name for r in scaled] == [r.name for r in full]
    n = {r.name: r.max_eval_instances for r in scaled}
    assert n["sam_sum"] == 125 and n["ethics_virtue"] == 25 and n["big_bench:task=winowhy,max_train_instances=2"] == 6
    assert n["mmlu:subject=anatomy"] == 2  # round(1.5) = 2 (half to even)
    assert n["mmlu:subject=business_ethics"] == 1  # 10 / 10
    assert n["math:subject=precalculus,level=5,use_official_examples=False,use_chain_of_thought=True"] == 9
    tiny = suites.load("closed", budget=30)
    # round(c * 30 / 5000) with at least one: sam_sum 7.5 -> 8, ethics 1.5 -> 2, math 0.53 -> 1
    assert [r.max_eval_instances for r in tiny] == [8, 8] + [2] * 5 + [1] * 14
    per_entry = {r.entry: r.max_eval_instances for r in suites.load("full", budget=100)}
    assert len(per_entry) == 109 and min(per_entry.values()) == 1
    with pytest.raises(ValueError, match="at least 1"):
        suites.load("open", budget=0)


@pytest.mark.parametrize("entry, message", [
    ("narrative_qa:model=neurips/local,max_eval_instances=5", "unknown scenario 'narrative_qa'"),
    ("gsm:model=neurips/local", "needs max_eval_instances"),
    ("gsm:max_eval_instances=5,max_train_instances=lots", "neither a number nor one of"),
    ("gsm:max_eval_instances=5,data_augmentation=robustness", "only data_augmentation=canonical"),
    ("mmlu:max_eval_instances=5", "missing subject="),
    ("sam_sum:max_eval_instances=5,color=red", "unexpected argument"),
    ("sam_sum:max_eval_instances=5,oops", "is not key=value"),
])
def test_bad_entries(entry, message):
    with pytest.raises(ValueError, match=message):
        suites.parse_entry(entry)


def test_absent_data_is_skipped_with_a_reason(tmp_path):
    from eval.run import FAMILIES, Skipped, family_loaders, suite_run_data

    loaders = family_loaders(tmp_path, "all", "all", 0.3)
    cache: dict = {}
    for run in suites.load("full"):
        with pytest.raises(Skipped) as e:
            suite_run_data(run, loaders, cache)
        reason = str(e.value)
        if run.family in FAMILIES:
            assert reason.startswith("data absent: "), (run.name, reason)
        else:
            assert run.family == "math" and "math_cot.py" in reason
    # one load per (family, selector)
    assert len(cache) == len({(r.family, r.selector) for r in suites.load("full") if r.family in FAMILIES})


def test_every_suite_big_bench_run_builds_requests(shared_data):
    """All BIG-bench tasks the final conf lists are in the shared data and adapt with their shot counts."""
    from eval import bigbench
    from eval.helm import adapt, downsample_eval_instances, with_instance_ids

    loaded = {}
    for run in [r for r in suites.load("open") if r.family == "bigbench"]:
        if run.selector not in loaded:
            loaded[run.selector] = bigbench.scenarios(shared_data, run.selector)
        instances, spec = loaded[run.selector][run.scenario]
        states = adapt(replace(spec, max_train_instances=run.max_train_instances),
                       downsample_eval_instances(with_instance_ids(instances), run.max_eval_instances))
        assert 0 < len(states) <= run.max_eval_instances
        assert all(s.num_train_instances <= run.max_train_instances for s in states)
    assert len(loaded) == 29


def test_suite_run_writes_results_and_lists_skipped(tmp_path, shared_data, tiny_smol_checkpoint):
    """--suite closed on a 2-layer model over SAMSum and ETHICS only: corr2cause (no data) and MATH (no module in
    this checkout, or no data here) are listed as skipped in results.json and under the table."""
    from eval.run import main as run

    ckpt = tiny_smol_checkpoint
    data = tmp_path / "data"
    data.mkdir()
    for sub in ("samsum", "ethics", "helm_perturbations"):
        (data / sub).symlink_to(shared_data / sub)

    out = tmp_path / "out"
    results = run(checkpoint_dir=ckpt, suite="closed", budget=12, out=out, data_dir=data, cnn_dm_temperature=0.0)
    assert set(results["runs"]) == {"sam_sum", "ethics_justice", "ethics_commonsense", "ethics_virtue",
                                    "ethics_deontology", "ethics_utilitarianism"}
    assert results["runs"]["sam_sum"]["num_instances"] == 3  # round(1250 * 12 / 5000)
    assert results["runs"]["ethics_justice"]["num_instances"] == 1
    assert "exact_match (robustness)" in results["families"]["ethics"] and "rouge_2" in results["families"]["samsum"]
    skipped = {s["run"]: s["reason"] for s in results["skipped"]}
    assert len(skipped) == 15 and "corr2cause.csv" in skipped["corr2cause"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["skipped"] == results["skipped"] and saved["config"]["suite"] == "closed"
    assert saved["config"]["misspellings_file"].endswith("correct_to_misspelling.json")
    table = (out / "results.md").read_text()
    assert "SAMSum - ROUGE-2" in table and "ETHICS - EM (Fairness)" in table
    assert "Skipped runs (15)" in table and "- corr2cause (corr2cause): data absent" in table


def test_suite_user_errors(tmp_path):
    from eval.run import main as run
    from lit_gpt.utils import UserError

    with pytest.raises(UserError, match="unknown suite 'bogus'"):
        run(server_url="http://x", suite="bogus", out=tmp_path)
    with pytest.raises(UserError, match="--budget needs --suite"):
        run(server_url="http://x", budget=10, out=tmp_path)
    with pytest.raises(UserError, match="--budget must be at least 1"):
        run(server_url="http://x", suite="open", budget=0, out=tmp_path)
