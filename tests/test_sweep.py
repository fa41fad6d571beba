"""scripts/sweep.py end to end on a tiny model with SmolLM2's tokenizer: two arms, scored checkpoints, the base;
resume after SIGKILL in training and in scoring; cache keys; a column equals eval/run.py alone."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sweep.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
EVAL = {"tasks": "mmlu", "mmlu_subjects": "philosophy", "limit": 2, "perturb": "",
        "data_dir": str(ROOT / "examples" / "eval_data")}


def write_config(root: Path, base: Path, out: Path, b_lr: float = 5e-3) -> Path:
    (root / "mix_a.yaml").write_text(yaml.safe_dump({
        "seed": 1, "val_fraction": 0.2, "max_seq_length": 96,
        "sources": [{"prepare": "jsonl", "source": str(ROOT / "examples" / "sample_instructions.jsonl"),
                     "args": {"instruction_key": "instruction", "input_key": "input", "response_key": "output"},
                     "records": 24}]}))
    (root / "mix_b.yaml").write_text(yaml.safe_dump({
        "seed": 2, "val_fraction": 0.2, "max_seq_length": 96,
        "sources": [{"prepare": "jsonl", "source": str(ROOT / "examples" / "sample_chats.jsonl"),
                     "args": {"messages_key": "messages"}, "records": 20}]}))
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "base": str(base), "out_dir": str(out),
        "finetune": {"accelerator": "cpu", "precision": "32-true", "micro_batch_size": 2, "global_batch_size": 2,
                     "learning_rate": 5e-3, "warmup_steps": 1, "max_steps": 4, "eval_iters": 1,
                     "eval_max_new_tokens": 2, "lora_mlp": True},
        "eval": EVAL,
        "score": {"every": 2},
        "arms": [{"name": "a", "mix": "mix_a.yaml"},
                 {"name": "b", "mix": "mix_b.yaml", "finetune": {"max_steps": 2, "learning_rate": b_lr}}],
    }))
    return path


def sweep(config: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--config", str(config), *extra], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, tiny_smol_checkpoint):
    root = tmp_path_factory.mktemp("sweep")
    out = root / "out"
    config = write_config(root, tiny_smol_checkpoint, out)
    done = sweep(config)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, config, out


def test_sweep_writes_table_chart_json_and_winner(unbroken):
    root, config, out = unbroken
    summary = json.loads((out / "sweep.json").read_text())
    assert list(summary["columns"]) == ["base", "a@2", "a@4", "b@2"]
    assert summary["winner"] in summary["columns"]
    assert set(summary["picks"]) == {"challenge score", "open score alone", "validation loss"}
    assert summary["picks"]["validation loss"] in ("a@2", "a@4", "b@2")
    for c in ("a@2", "a@4", "b@2"):
        assert summary["columns"][c]["val_loss"] is not None
    table = (out / "table.md").read_text()
    assert table.splitlines()[0].startswith("|") and "a@4" in table.splitlines()[0]
    for row in ("MMLU - EM", "Challenge score", "Winner"):
        assert row in table
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (out / "logs" / "a.log").read_text()
    assert "prepare_mix" in log and "finetune" in log and "eval" in log

    # a second run recomputes nothing: no stage is started
    again = sweep(config)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "logs" / "a.log").read_text() == log


def test_a_column_equals_eval_run_alone(unbroken, tmp_path):
    from eval.run import main as run

    root, config, out = unbroken
    summary = json.loads((out / "sweep.json").read_text())
    lora = Path(summary["arms"]["a"]["run_dir"]) / "step-000004" / "lit_model.pth.lora"
    base = yaml.safe_load(config.read_text())["base"]
    alone = run(checkpoint_dir=Path(base), lora_path=lora, out=tmp_path / "alone", **EVAL)
    column = json.loads(Path(summary["columns"]["a@4"]["results"]).read_text())
    assert alone["families"] == column["families"] and alone["runs"] == column["runs"]

    # ... and equals the checkpoint merged on disk
    from scripts.merge_lora import setup as merge

    merged = merge(checkpoint_dir=Path(base), lora_path=lora, out_dir=tmp_path / "merged")
    on_disk = run(checkpoint_dir=merged, out=tmp_path / "merged_eval", **EVAL)
    assert on_disk["families"] == column["families"]


def test_changed_flag_reruns_only_what_it_affects(unbroken, tmp_path):
    root, config, out = unbroken
    before = json.loads((out / "sweep.json").read_text())
    stamps = {c: Path(v["results"]).stat().st_mtime_ns for c, v in before["columns"].items()}
    changed = write_config(root, Path(yaml.safe_load(config.read_text())["base"]), out, b_lr=1e-3)
    done = sweep(changed, "--dry_run", "true")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "arm a: " in done.stdout and "(0 to train)" in done.stdout.split("arm b")[0]
    assert "arm b: " in done.stdout and "(2 to train)" in done.stdout and "eval requests per scored checkpoint" in done.stdout
    done = sweep(changed)
    assert done.returncode == 0, done.stderr[-2000:]
    after = json.loads((out / "sweep.json").read_text())
    assert after["arms"]["a"]["keys"] == before["arms"]["a"]["keys"]
    assert after["arms"]["b"]["keys"]["mix"] == before["arms"]["b"]["keys"]["mix"]  # same mix, new training
    assert after["arms"]["b"]["keys"]["train"] != before["arms"]["b"]["keys"]["train"]
    for c in ("base", "a@2", "a@4"):
        assert Path(after["columns"][c]["results"]).stat().st_mtime_ns == stamps[c]
    assert after["columns"]["b@2"]["results"] != before["columns"]["b@2"]["results"]
    write_config(root, Path(yaml.safe_load(config.read_text())["base"]), out)  # back, for the other tests


def _wait_for(predicate, proc, what: str, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the sweep ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sigkill_in_training_and_in_scoring_then_resume_equals_unbroken(unbroken, tmp_path, tiny_smol_checkpoint):
    _, _, reference = unbroken
    out = tmp_path / "out"
    config = write_config(tmp_path, tiny_smol_checkpoint, out)
    log = out / "logs" / "a.log"

    def start():
        return subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(config)], env=ENV, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    proc = start()  # killed while training arm a, once its step-2 checkpoint is written
    _wait_for(lambda: any((out / "runs").glob("a-*/step-000002/lit_model.pth.lora")), proc, "a training checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not any((out / "runs").glob("a-*/final"))

    proc = start()  # killed while scoring arm a's first checkpoint
    _wait_for(lambda: any((out / "scores").glob("a-2-*.partial")), proc, "scoring")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    done = sweep(config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "table.md").read_text() == (reference / "table.md").read_text()
    assert log.read_text().count("a: finetune") == 2  # resumed, not restarted from nothing


def test_cli_config_error_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("base: nowhere\narms: []\n")
    done = sweep(tmp_path / "bad.yaml")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: ")
