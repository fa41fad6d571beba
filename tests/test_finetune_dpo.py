"""finetune/dpo.py end to end on a tiny model: exact resume after SIGKILL, the time budget, merging, starting from an
SFT LoRA with a precomputed reference, and its one-line errors."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.lora_fixtures import make_checkpoint, make_dataset, make_preference_dataset

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "finetune" / "dpo.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_checkpoint(root / "ckpt"), make_preference_dataset(root / "pairs", n_train=32, n_val=4)


def flags(ckpt, data, out, **extra):
    base = dict(checkpoint_dir=ckpt, data_dir=data, out_dir=out, accelerator="cpu", precision="32-true",
                micro_batch_size=2, global_batch_size=4, learning_rate=2e-2, warmup_steps=3, lora_dropout=0.1,
                lora_mlp="true", beta=0.5, eval_interval=0, eval_iters=2, save_interval=1, seed=7)
    base.update(extra)
    return [a for k, v in base.items() for a in (f"--{k}", str(v))]


def run(args, script=SCRIPT):
    return subprocess.run([sys.executable, str(script), *args], env=ENV, capture_output=True, text=True, timeout=300)


def lora_weights(out):
    return torch.load(out / "final" / "lit_model.pth.lora", weights_only=True)["model"]


def test_resume_after_sigkill_is_exact(tiny, tmp_path):
    ckpt, data = tiny
    max_steps = 12  # 8 steps per epoch: crosses an epoch boundary
    unbroken = run(flags(ckpt, data, tmp_path / "a", max_steps=max_steps))
    assert unbroken.returncode == 0, unbroken.stderr[-2000:]
    a = tmp_path / "a"
    assert "reward accuracy" in unbroken.stdout and (a / "loss.png").is_file()

    b = tmp_path / "b"
    kill_at = random.Random().randint(2, 6)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *flags(ckpt, data, b, max_steps=max_steps)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (b / f"step-{kill_at:06d}").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    for d in sorted(b.glob("step-*")):  # whatever is visible under a final name is complete
        torch.load(d / "lit_model.pth.lora", weights_only=True)
        torch.load(d / "state.pt", weights_only=False)

    resumed = run(flags(ckpt, data, b, max_steps=max_steps, resume="auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    wa, wb = lora_weights(a), lora_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() <= 1e-6, k
    assert any(wa[k].abs().sum() > 0 for k in wa if "lora_B" in k)  # it did train
    assert not [p for p in b.rglob("*") if p.name.startswith(".")]

    # the result merges into an ordinary checkpoint
    merged = run(["--checkpoint_dir", str(ckpt), "--lora_path", str(a / "final" / "lit_model.pth.lora"),
                  "--out_dir", str(tmp_path / "merged")], ROOT / "scripts" / "merge_lora.py")
    assert merged.returncode == 0, merged.stderr[-2000:]
    assert (tmp_path / "merged" / "lit_model.pth").is_file()


def test_max_time_stops_inside_the_budget(tiny, tmp_path):
    ckpt, data = tiny
    budget = 40.0  # from the start of setup(), imports and model loading included (slow on a busy machine)
    proc = run(flags(ckpt, data, tmp_path, max_steps=100000, max_time="00:00:40", save_interval=20))
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = torch.load(sorted(tmp_path.glob("step-*"))[-1] / "state.pt", weights_only=False)
    assert 0 < state["step"] < 100000
    assert state["elapsed"] <= budget, proc.stdout[-1500:]
    assert state["total_steps"] == state["step"]  # the schedule was re-planned to end on time


def test_start_from_an_sft_lora_with_a_precomputed_reference(tiny, tmp_path):
    ckpt, pairs = tiny
    sft_data = make_dataset(tmp_path / "sft_data", n_train=8, n_val=0)
    sft = subprocess.run([sys.executable, str(ROOT / "finetune" / "lora.py"), "--checkpoint_dir", str(ckpt),
                          "--data_dir", str(sft_data), "--out_dir", str(tmp_path / "sft"), "--accelerator", "cpu",
                          "--precision", "32-true", "--max_steps", "2", "--micro_batch_size", "2",
                          "--global_batch_size", "4", "--lora_r", "4", "--eval_interval", "0",
                          "--eval_max_new_tokens", "0"], env=ENV, capture_output=True, text=True, timeout=300)
    assert sft.returncode == 0, sft.stderr[-2000:]
    start = tmp_path / "sft" / "final" / "lit_model.pth.lora"
    proc = run(flags(ckpt, pairs, tmp_path / "dpo", max_steps=2, lora_path=start, lora_mlp="false"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reference precomputed" in proc.stdout
    ref = torch.load(tmp_path / "dpo" / "reference_logps.pt", weights_only=True)
    assert ref["train"].shape == (32, 2) and ref["val"].shape == (4, 2)
    out = lora_weights(tmp_path / "dpo")
    assert out.keys() == torch.load(start, weights_only=True)["model"].keys()  # the SFT run's layout (r=4)

    refused = run(flags(ckpt, pairs, tmp_path / "x", max_steps=2, lora_path=start, reference="adapters_off"))
    assert refused.returncode == 2 and "use --reference precomputed" in refused.stderr


def test_user_errors_are_one_line(tiny, tmp_path):
    ckpt, pairs = tiny
    sft_data = make_dataset(tmp_path / "sft_data", n_train=8, n_val=0)
    proc = run(flags(ckpt, sft_data, tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not a preference dataset" in proc.stderr or "stats.json" in proc.stderr
    proc = run(flags(ckpt, pairs, tmp_path, beta=0))
    assert proc.returncode == 2 and "--beta 0" in proc.stderr


@pytest.mark.parametrize("loss, quantize", [("orpo", "bnb.nf4-dq"), ("ipo", None)])
def test_other_losses_and_qlora_train(tiny, tmp_path, loss, quantize):
    ckpt, pairs = tiny
    extra = {"quantize": quantize} if quantize else {}
    proc = run(flags(ckpt, pairs, tmp_path, max_steps=3, loss=loss, save_interval=10, **extra))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"loss {loss}" in proc.stdout and ("reference None" if loss == "orpo" else "reference adapters_off") in proc.stdout
    assert any(v.abs().sum() > 0 for k, v in lora_weights(tmp_path).items() if "lora_B" in k)
