import hashlib
import io
import json
from pathlib import Path

import pytest

from eval import math_cot
from eval.helm import TEST, TRAIN, Instance, Request, RequestState, adapt, downsample_eval_instances, with_instance_ids
from test_eval_helm import our_rows

GOLDEN = Path(__file__).parent / "data" / "eval" / "helm_golden_math.json"
FINAL_RUNS = [f"math:subject={s},level={lv},use_official_examples=False,use_chain_of_thought=True" for lv in "15" for s in (
    "number_theory", "intermediate_algebra", "algebra", "prealgebra", "geometry", "counting_and_probability", "precalculus")]


def record(problem, solution, subject="Algebra", level="Level 1"):
    return {"problem": problem, "level": level, "type": subject, "solution": solution}


def write_data(root: Path, train: list[dict], test: list[dict]) -> Path:
    for i, r in enumerate(train):
        folder = root / "math" / "train" / r["type"].lower().replace(" & ", "_and_").replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.json").write_text(json.dumps(r, indent=4))
    (root / "math" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return root


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    train = [record("What is $1+1$?", "$1+1=\\boxed{2}$."),
             record("What is $2+2$?", "$2+2=\\boxed{4}$."),
             record("Hard one", "$\\boxed{7}$", level="Level 5"),
             record("Count the ways to pick 1 of 3.", "$\\boxed{3}$", subject="Counting & Probability")]
    test = [record("What is $3+3$?", "So $3+3=\\boxed{6}$."),
            record("What is $4+4$?", "So $4+4=\\boxed{8}$."),
            record("What is $\\frac{1}{2}+\\frac{1}{2}$?", "$\\boxed{1}$", level="Level 5"),
            record("How many ways to pick 2 of 3?", "$\\binom32=\\boxed{3}$", subject="Counting & Probability")]
    return write_data(tmp_path, train, test)


def test_run_names_spec_and_filtering(tiny_data):
    runs = math_cot.scenarios(tiny_data)
    assert list(runs) == FINAL_RUNS
    instances, spec = runs[FINAL_RUNS[2]]  # algebra, level 1
    assert sorted((i.split, i.input) for i in instances) == [
        (TEST, "What is $3+3$?"), (TEST, "What is $4+4$?"), (TRAIN, "What is $1+1$?"), (TRAIN, "What is $2+2$?")]
    assert [i.split for i in instances] == [TRAIN, TRAIN, TEST, TEST]  # train first, as HELM lists them
    assert all(i.first_correct.endswith("}$.") for i in instances)  # the reference is the whole solution
    assert [i.input for i in runs[FINAL_RUNS[9]][0]] == ["Hard one", "What is $\\frac{1}{2}+\\frac{1}{2}$?"]
    assert runs[FINAL_RUNS[0]][0] == []  # number theory: no records
    assert (spec.max_train_instances, spec.max_tokens, spec.temperature, spec.stop_sequences) == (8, 400, 0.0, ("###",))
    assert list(math_cot.scenarios(tiny_data, "algebra", "3")) == [FINAL_RUNS[2].replace("level=1", "level=3")]


def test_prompt_format(tiny_data):
    instances, spec = math_cot.scenarios(tiny_data, "counting_and_probability", "1")[FINAL_RUNS[5]]
    [state] = adapt(spec, with_instance_ids(instances))
    assert state.request.prompt == (
        "Given a mathematics problem, determine the answer. Simplify your answer as much as possible.\n"
        "###\nProblem: Count the ways to pick 1 of 3.\nAnswer: $\\boxed{3}$\n"
        "###\nProblem: How many ways to pick 2 of 3?\nAnswer:")
    assert state.request.stop_sequences == ("###",) and state.request.max_tokens == 400
    assert state.num_train_instances == 1


def test_helm_order_sorts_then_permutes():
    import numpy as np

    records = [record(p, "") for p in ("b", "a", "d", "c", "e")]
    perm = np.random.default_rng(42).permutation(5)
    assert [r["problem"] for r in math_cot.helm_order(records)] == [sorted("badce")[i] for i in perm]


def test_user_errors(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="unknown MATH subjects \\['calculus'\\]"):
        math_cot.scenarios(tiny_data, "calculus")
    with pytest.raises(ValueError, match="unknown MATH levels \\['6'\\]"):
        math_cot.scenarios(tiny_data, levels="1,6")
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        math_cot.scenarios(tmp_path / "nowhere")
    (tiny_data / "math" / "test.jsonl").write_text('{"problem": "p", "level": "Level 1", "type": "Algebra"}\n')
    with pytest.raises(ValueError, match="test.jsonl:1: expected a JSON object with string fields"):
        math_cot.scenarios(tiny_data)


def test_score():
    state = RequestState(Instance("q", ("So $x=\\boxed{\\frac{1}{2}}$.",), (0,), TEST), Request("p", 400, 0.0))
    for completion, expected in ((" We get $\\boxed{\\dfrac12}$.\n", 1.0), ("$\\boxed{2}$", 0.0), (None, 0.0)):
        state.completion = completion
        assert math_cot.score(state) == {"math_equiv_chain_of_thought": expected}


class FakeBackend:
    """Answers each MATH prompt with a chain of thought boxing the right answer for problems with '3' in them."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, max_tokens: int) -> str:
        return " ".join(text.split()[:max_tokens])

    def complete(self, requests, update, deciders):
        out = []
        for r in requests:
            problem = r.prompt.rsplit("Problem: ", 1)[1].split("\nAnswer:")[0]
            out.append(f" Let us add. The answer is $\\boxed{{{self.answers.get(problem, '0')}}}$.\n")
            update(1)
        return out


def test_end_to_end_with_fake_completions(tiny_data):
    from eval.run import FAMILIES, MAIN_METRIC, eval_instances, evaluate_runs

    def evaluate_run(name, family, instances, spec, backend, limit, perturbations, context_window, seen, preds):
        jobs = [(name, family, eval_instances(instances, limit, perturbations), spec, perturbations)]
        return evaluate_runs(jobs, backend, context_window, preds)[name]

    assert FAMILIES["math"] is math_cot and MAIN_METRIC["math"] == "math_equiv_chain_of_thought"
    instances, spec = math_cot.scenarios(tiny_data, "algebra", "1")[FINAL_RUNS[2]]
    backend, preds, seen = FakeBackend({"What is $3+3$?": "6", "What is $4+4$?": "9"}), io.StringIO(), {}
    metrics = evaluate_run(FINAL_RUNS[2], "math", instances, spec, backend, None, None, 2048, seen, preds)
    assert metrics["math_equiv_chain_of_thought"] == 0.5 and metrics["num_instances"] == 2
    assert metrics["num_train_instances"] == 2
    lines = [json.loads(line) for line in preds.getvalue().splitlines()]
    assert sorted(row["math_equiv_chain_of_thought"] for row in lines) == [0.0, 1.0]
    # a context window too small for the examples: HELM drops them all and keeps the question
    metrics = evaluate_run(FINAL_RUNS[2], "math", instances, spec, backend, None, None, 420, seen, io.StringIO())
    assert metrics["num_train_instances"] == 0 and metrics["math_equiv_chain_of_thought"] == 0.5


def math_data(shared_data) -> Path:
    if not (shared_data / "math" / "test.jsonl").is_file():
        pytest.skip(f"{shared_data / 'math'} is absent")
    return shared_data


def test_reader_on_shared_data(shared_data):
    runs = math_cot.scenarios(math_data(shared_data))
    assert list(runs) == FINAL_RUNS
    sizes = {name: (sum(i.split == TRAIN for i in inst), sum(i.split == TEST for i in inst)) for name, (inst, _) in runs.items()}
    # the MANIFEST's counts: level 1 has 564 train and 437 test records, all subjects together
    assert sum(tr for n, (tr, _) in sizes.items() if "level=1" in n) == 564
    assert sum(te for n, (_, te) in sizes.items() if "level=1" in n) == 437
    assert sizes[FINAL_RUNS[2]] == (178, 135)


def test_requests_equal_helm_golden(shared_data):
    """tests/data/eval/helm_golden_math.json was written by crfm-helm's MATH code (make_helm_golden_math.py)."""
    golden = json.loads(GOLDEN.read_text())
    runs = math_cot.scenarios(math_data(shared_data))
    assert set(golden["runs"]) == set(runs) == set(FINAL_RUNS)
    checked = 0
    for name, helm_rows in golden["runs"].items():
        instances, spec = runs[name]
        ours = our_rows("math", instances, spec, golden["limit"], None)
        assert set(ours) == {(r["id"], r["perturbation"]) for r in helm_rows}, name
        for row in helm_rows:
            mine = ours[row["id"], row["perturbation"]]
            for field in ("prompt_chars", "prompt_sha256", "num_train_instances", "max_tokens", "temperature",
                          "stop_sequences", "top_k_per_token", "num_completions", "output_mapping"):
                assert mine[field] == row[field], (name, row["id"], field)
            if "http_body" in row:
                assert mine["http_body"] == row["http_body"], name
            checked += 1
        # eval instance selection at the final ranking's max_eval_instances
        sel = golden["selection"][name]
        assert (sum(i.split == TRAIN for i in instances), sum(i.split == TEST for i in instances)) == (
            sel["num_train"], sel["num_eval"])
        kept = [i for i in downsample_eval_instances(with_instance_ids(instances), sel["max_eval_instances"]) if i.split == TEST]
        assert [i.id for i in kept] == sel["eval_ids"], name
        assert hashlib.sha256("\n".join(i.input for i in kept).encode()).hexdigest() == sel["eval_inputs_sha256"]
    assert checked == 14 * golden["limit"]


def test_golden_file_is_reproducible(shared_data, tmp_path):
    """Where crfm-helm is installed (its venv), regenerating the golden file gives the committed one."""
    pytest.importorskip("helm.benchmark.scenarios.math_scenario")
    import os
    import subprocess
    import sys

    out = tmp_path / "golden.json"
    subprocess.run([sys.executable, str(GOLDEN.parent / "make_helm_golden_math.py"), "--data_dir",
                    str(math_data(shared_data)), "--out", str(out)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(GOLDEN.parents[3])})
    fresh, committed = json.loads(out.read_text()), json.loads(GOLDEN.read_text())
    assert (fresh["runs"], fresh["selection"]) == (committed["runs"], committed["selection"])
