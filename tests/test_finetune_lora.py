import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.training import add_neftune_hook, lr_at, parse_duration, plan_total_steps
from lit_gpt.utils import UserError
from tests.lora_fixtures import make_checkpoint, make_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "finetune" / "lora.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_checkpoint(root / "ckpt"), make_dataset(root / "data", n_train=64, n_val=8)


def flags(ckpt, data, out, **extra):
    base = dict(checkpoint_dir=ckpt, data_dir=data, out_dir=out, accelerator="cpu", precision="32-true",
                micro_batch_size=2, global_batch_size=4, learning_rate=5e-3, warmup_steps=3, lora_dropout=0.1,
                neftune_alpha=5, lora_mlp="true", eval_interval=0, eval_iters=2, eval_max_new_tokens=4,
                save_interval=1, seed=7)
    base.update(extra)
    return [a for k, v in base.items() for a in (f"--{k}", str(v))]


def run(args, env=ENV, **kw):
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, **kw)


def lora_weights(out: Path) -> dict:
    return torch.load(out / "final" / "lit_model.pth.lora", weights_only=True)["model"]


def test_resume_after_sigkill_is_exact(tiny, tmp_path):
    ckpt, data = tiny
    max_steps = 20  # 16 steps per epoch: crosses an epoch boundary
    unbroken = run(flags(ckpt, data, tmp_path / "a", max_steps=max_steps))
    assert unbroken.returncode == 0, unbroken.stderr[-2000:]
    a = tmp_path / "a"
    assert (a / "loss.png").stat().st_size > 0 and (a / "hparams.yaml").is_file()
    assert list((a / "logs").glob("version_*/metrics.csv"))

    b = tmp_path / "b"
    kill_at = random.Random().randint(2, 8)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *flags(ckpt, data, b, max_steps=max_steps)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (b / f"step-{kill_at:06d}").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    # every checkpoint visible under its final name is complete and loadable
    steps = sorted(b.glob("step-*"))
    assert steps
    for d in steps:
        torch.load(d / "lit_model.pth.lora", weights_only=True)
        torch.load(d / "state.pt", weights_only=False)

    resumed = run(flags(ckpt, data, b, max_steps=max_steps, resume="auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    wa, wb = lora_weights(a), lora_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() <= 1e-6, k
    assert not any(wa[k].equal(torch.zeros_like(wa[k])) for k in wa if "lora_B" in k)  # it did train
    # nothing partial left behind once the resumed run is through
    assert not [p for p in b.rglob("*") if p.name.startswith(".")]


def test_resume_refuses_changed_flags(tiny, tmp_path):
    ckpt, data = tiny
    first = run(flags(ckpt, data, tmp_path, max_steps=2))
    assert first.returncode == 0, first.stderr[-2000:]
    again = run(flags(ckpt, data, tmp_path, max_steps=4, resume="auto", lora_r=4))
    assert again.returncode == 2
    assert "lora_r=4 (was 8)" in again.stderr


def test_ddp_two_cpu_processes_end_with_identical_weights(tiny, tmp_path):
    ckpt, data = tiny
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import torch, torch.distributed as dist\n"
        "from finetune.lora import setup\n"
        "from lit_gpt.lora import lora_state_dict\n"
        f"model = setup(checkpoint_dir={str(ckpt)!r}, data_dir={str(data)!r}, out_dir={str(tmp_path / 'out')!r},\n"
        "              accelerator='cpu', devices=2, strategy='ddp', precision='32-true', micro_batch_size=2,\n"
        "              global_batch_size=8, max_steps=4, learning_rate=1e-2, warmup_steps=1, lora_dropout=0.1,\n"
        "              eval_interval=0, eval_iters=1, eval_max_new_tokens=2, save_interval=2)\n"
        f"torch.save(lora_state_dict(model), {str(tmp_path)!r} + f'/rank{{dist.get_rank()}}.pt')\n"
    )
    proc = subprocess.run([sys.executable, str(driver)], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys() and w0
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert any(w0[k].abs().sum() > 0 for k in w0 if "lora_B" in k)
    saved = torch.load(tmp_path / "out" / "final" / "lit_model.pth.lora", weights_only=True)["model"]
    for k in w0:
        assert torch.equal(saved[k], w0[k])


def test_two_nodes_end_with_the_weights_of_one_node_of_two_processes(tiny, tmp_path):
    """The README's 2-node torchrun command, run as written on two "nodes" of one CPU process each on localhost
    (gloo), and one node of two processes (Fabric's own launcher) reach the same weights."""
    ckpt, data = tiny
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^torchrun --nnodes 2 (?:.*\\\n)*.*$", readme, re.M).group(0)
    tiny_run = dict(max_steps=4, global_batch_size=8, learning_rate=1e-2, warmup_steps=1, save_interval=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ENV['PATH']}", "DEVICES": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "CKPT": str(ckpt)}
    # the README's flags come first; the tiny run's (data, out_dir, CPU, a few steps) override them
    two_nodes = f"{command} {shlex.join(flags(ckpt, data, tmp_path / 'two_nodes', **tiny_run))}"
    runs = [(["bash", "-c", two_nodes], {**env, "NODE_RANK": str(rank)}, f"node{rank}") for rank in (0, 1)]
    runs.append(([sys.executable, str(SCRIPT), "--devices", "2", "--strategy", "ddp",
                  *flags(ckpt, data, tmp_path / "one_node", **tiny_run)], ENV, "one_node"))
    procs = []
    try:
        for args, run_env, name in runs:
            with open(tmp_path / f"{name}.log", "w") as log:
                procs.append(subprocess.Popen(args, env=run_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # torchrun's workers too
    logs = {f.name: f.read_text()[-2000:] for f in tmp_path.glob("*.log")}
    assert codes == [0, 0, 0], logs
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs["node1.log"], logs  # the second node joined as rank 1 of 2
    two, one = lora_weights(tmp_path / "two_nodes"), lora_weights(tmp_path / "one_node")
    assert two.keys() == one.keys() and two
    for k in two:
        assert torch.equal(two[k], one[k]), k
    assert any(two[k].abs().sum() > 0 for k in two if "lora_B" in k)


def test_max_time_stops_inside_the_budget_with_a_usable_checkpoint(tiny, tmp_path):
    ckpt, data = tiny
    budget = 15.0  # from the start of setup(), imports and model loading included
    proc = run(flags(ckpt, data, tmp_path, max_steps=100000, max_time="00:00:15", save_interval=20))
    assert proc.returncode == 0, proc.stderr[-2000:]
    step_dirs = sorted(tmp_path.glob("step-*"))
    state = torch.load(step_dirs[-1] / "state.pt", weights_only=False)
    assert 0 < state["step"] < 100000
    assert state["elapsed"] <= budget, proc.stdout[-1500:]
    # the schedule was planned to end on time: the last step ran at (close to) the minimum learning rate
    assert state["total_steps"] == state["step"]
    final = torch.load(tmp_path / "final" / "lit_model.pth.lora", weights_only=True)["model"]
    assert final and all(torch.isfinite(v).all() for v in final.values())


@pytest.mark.parametrize("logger, pattern", [
    ("wandb", "wandb/offline-run-*/run-*.wandb"),  # offline by default: no network, no account
    ("tensorboard", "tensorboard/version_0/events.out.tfevents.*"),
])
def test_logger_writes_its_files(tiny, tmp_path, logger, pattern):
    pytest.importorskip(logger if logger == "wandb" else "tensorboardX")
    ckpt, data = tiny
    env = {k: v for k, v in ENV.items() if not k.startswith("WANDB_")}
    proc = run(flags(ckpt, data, tmp_path, max_steps=2, save_interval=10, logger_name=logger), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = list(tmp_path.glob(pattern))
    assert files and files[0].stat().st_size > 0
    if logger == "wandb":  # the run's records (what `wandb sync` uploads): its hyper-parameters and metrics
        records = files[0].read_bytes()
        assert b"lora_r" in records and b"tokens_per_sec" in records
    assert list((tmp_path / "logs").glob("version_*/metrics.csv"))  # CSV is always written (loss.png)
    # the starter guide's name for the final LoRA weights, beside final/
    final = tmp_path / "final" / "lit_model.pth.lora"
    assert (tmp_path / "lit_model_lora_finetuned.pth").read_bytes() == final.read_bytes()


def test_user_errors_are_one_line(tiny, tmp_path):
    ckpt, data = tiny
    proc = run(flags(ckpt, data, tmp_path, global_batch_size=3))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --global_batch_size 3")
    proc = run(flags(ckpt, tmp_path / "nope", tmp_path))
    assert proc.returncode == 2 and "no train-*.pt shards" in proc.stderr


def test_neftune_noise_only_in_training_mode():
    torch.manual_seed(0)
    model = GPT(Config.from_name("tiny-llama"))
    x = torch.randint(0, 256, (2, 8))
    clean = model.transformer.wte(x)
    add_neftune_hook(model, alpha=5.0)
    model.eval()
    assert torch.equal(model.transformer.wte(x), clean)
    model.train()
    noisy = model.transformer.wte(x)
    noise = noisy - clean
    bound = 5.0 / (8 * 64) ** 0.5
    assert noise.abs().max() <= bound + 1e-6 and noise.abs().max() > bound / 2
    # and the model output follows: deterministic in eval, noisy in training
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_schedule_and_time_helpers():
    assert lr_at(1, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 10, 100, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_at(55, 1.0, 10, 100, min_lr_ratio=0.0) == pytest.approx(0.5)
    assert parse_duration("23:30:00") == 23.5 * 3600
    assert parse_duration("1:00:00:00") == 86400
    assert parse_duration("90") == 90
    with pytest.raises(UserError):
        parse_duration("soon")
    # 100 s left after 10 steps at 2 s/step with a 10 s reserve: 45 more steps
    assert plan_total_steps(10, 900, 2.0, 1000, 10, 10_000) == 55
    assert plan_total_steps(10, 900, 2.0, 1000, 10, 20) == 20
    assert plan_total_steps(10, 999, 2.0, 1000, 10, 20) == 10
