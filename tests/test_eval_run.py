"""eval/run.py end to end on a tiny model over a small copy of the shared data layout (all six families)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.model import GPT

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture
def tiny_checkpoint(tiny_smol_checkpoint) -> Path:
    """A 2-layer model with SmolLM2's real tokenizer (tests/conftest.py)."""
    return tiny_smol_checkpoint


@pytest.fixture
def small_data(shared_data, tmp_path) -> Path:
    """The shared layout with two MMLU subjects and two BIG-bench tasks (the rest linked as is)."""
    data = tmp_path / "data"
    data.mkdir()
    for sub in ("truthfulqa", "bbq", "cnn_dailymail", "gsm8k"):
        (data / sub).symlink_to(shared_data / sub)
    for split in ("dev", "test"):
        (data / "mmlu" / split).mkdir(parents=True)
        for subject in ("philosophy", "high_school_geography"):
            (data / "mmlu" / split / f"{subject}_{split}.csv").symlink_to(shared_data / "mmlu" / split / f"{subject}_{split}.csv")
    for task in ("snarks", "logical_deduction/three_objects"):
        (data / "bigbench" / task).mkdir(parents=True)
        (data / "bigbench" / task / "task.json").symlink_to(shared_data / "bigbench" / task / "task.json")
    return data


def test_run_writes_results_table_and_chart(tiny_checkpoint, small_data, tmp_path):
    from eval.compare import main as compare
    from eval.run import main as run

    out = tmp_path / "out"
    results = run(checkpoint_dir=tiny_checkpoint, limit=1, out=out, data_dir=small_data, cnn_dm_temperature=0.0)
    assert set(results["families"]) == {"mmlu", "truthfulqa", "bbq", "cnn_dm", "gsm8k", "bigbench"}
    assert results["families"]["mmlu"]["num_runs"] == 2 and results["families"]["bigbench"]["num_runs"] == 2
    for fam in ("mmlu", "truthfulqa"):
        assert "exact_match (robustness)" in results["families"][fam]
        assert "exact_match (fairness)" in results["families"][fam]
    assert "bbq_metric_ambiguous_bias" in results["families"]["bbq"]
    assert any("Gender_identity" in n for n in results["notes"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["families"] == json.loads(json.dumps(results["families"]))
    table = (out / "results.md").read_text()
    for row in ("MMLU - EM", "CNN/DailyMail - ROUGE-2", "TruthfulQA - EM", "BBQ - EM", "GSM8K - EM", "BIG-bench - EM",
                "MMLU - EM (Robustness)", "TruthfulQA - EM (Fairness)"):
        assert row in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {p["run"] for p in preds} >= {"gsm", "summarization_cnndm", "bbq:subject=all"}
    assert any(p["perturbation"] for p in preds)

    text = compare(runs=f"{out},{out / 'results.json'}", out=tmp_path / "cmp", names="a,b")
    assert text.splitlines()[0].endswith("|a|b|")
    assert (tmp_path / "cmp" / "compare.png").is_file()


def test_run_user_errors(tmp_path):
    from eval.run import main as run
    from lit_gpt.utils import UserError

    with pytest.raises(UserError, match="exactly one"):
        run(out=tmp_path)
    with pytest.raises(UserError, match="unknown task"):
        run(server_url="http://x", tasks="mmlu,nope", out=tmp_path)


def test_demo_sample_data_reads_as_each_family():
    """examples/eval_data (what `make demo` evaluates on without ../shared) parses as HELM's layouts."""
    from eval import bbq, mmlu, truthfulqa

    data = Path(__file__).resolve().parents[1] / "examples" / "eval_data"
    (mmlu_instances, _), = mmlu.scenarios(data, "philosophy").values()
    assert [i.split for i in mmlu_instances].count("test") == 6 and len(mmlu_instances) == 11
    (tqa_instances, _), = truthfulqa.scenarios(data).values()
    assert len(tqa_instances) == 10 and all(len(i.correct) == 1 for i in tqa_instances)
    instances, missing = bbq.load(data)
    assert len(instances) == 12 and "Age" not in missing
    # the target (stereotyped: old), non-target and unknown letters are all found
    assert all(all(i.tags[3:6]) for i in instances)


def test_run_over_two_servers_equals_one(smollm2_checkpoint, tmp_path):
    """--server_url URL1,URL2 spreads the requests over both servers and writes the results one server gives."""
    import httpx

    from eval.run import main as run
    from submission.launch import start_server, stop_server

    env = {"CHECKPOINT_DIR": smollm2_checkpoint, "DEVICE": "cpu", "PRECISION": "32-true"}
    servers = [start_server(env, tmp_path / f"server{i}.log") for i in range(2)]
    try:
        urls = [url for _, url in servers]
        kw = dict(tasks="mmlu,truthfulqa", mmlu_subjects="philosophy", limit=6, perturb="", cnn_dm_temperature=0.0,
                  data_dir=ROOT / "examples" / "eval_data")
        one = run(server_url=urls[0], out=tmp_path / "one", **kw)
        served = [httpx.get(u + "/health").json()["prefill_tokens"] for u in urls]
        two = run(server_url=",".join(urls), out=tmp_path / "two", **kw)
        after = [httpx.get(u + "/health").json()["prefill_tokens"] for u in urls]
    finally:
        for proc, _ in servers:
            stop_server(proc)
    assert after[1] > served[1] and after[0] > served[0]  # both servers answered part of the second run
    assert one["runs"] == two["runs"] and one["families"] == two["families"] and one["num_requests"] > 4
    preds = [(tmp_path / d / "predictions.jsonl").read_text().splitlines() for d in ("one", "two")]
    assert preds[0] == preds[1]
