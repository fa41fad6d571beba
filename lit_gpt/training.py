"""Helpers the training scripts share: LR schedule, time budget, a frozen head's chunked loss, RNG state, checkpoint
directories and the resume / save / load of a LoRA run's checkpoints, throughput."""

from __future__ import annotations

import math
import os
import random
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import torch

from lit_gpt.utils import UserError, atomic_path

STEP_DIR_RE = re.compile(r"^step-(\d{6,})$")


# ----------------------------------------------------------------------------- schedule and time budget
def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio * base_lr` at `total_steps`.
    `step` counts from 1 (the first optimizer step)."""
    if warmup_steps > 0 and step <= warmup_steps:
        return base_lr * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def parse_duration(text: str) -> float:
    """'23:30:00' (HH:MM:SS), 'DD:HH:MM:SS' or a number of seconds -> seconds."""
    parts = text.strip().split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not values or len(values) > 4 or any(v < 0 for v in values):
        raise UserError(f"--max_time {text!r}: expected HH:MM:SS, DD:HH:MM:SS or seconds")
    seconds = 0.0
    for v, unit in zip(reversed(values), (1, 60, 3600, 86400)):
        seconds += v * unit
    return seconds


def plan_total_steps(
    step: int, elapsed: float, step_time: float, budget: float, reserve: float, max_steps: int
) -> int:
    """How many optimizer steps fit in the time budget: the steps done plus what the remaining time (minus a
    reserve for the final checkpoint) allows at the measured seconds per step, capped by `max_steps`."""
    left = budget - elapsed - reserve
    return max(step, min(max_steps, step + int(left // max(step_time, 1e-9))))


# ----------------------------------------------------------------------------- NEFTune
def add_neftune_hook(model: torch.nn.Module, alpha: float) -> torch.utils.hooks.RemovableHandle:
    """NEFTune (Jain et al. 2023): uniform noise of scale alpha / sqrt(T * d) on the token embeddings, only while
    the model is in training mode. A forward hook on `transformer.wte`, so the model code stays untouched."""

    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        magnitude = alpha / math.sqrt(output.shape[-2] * output.shape[-1])
        return output + torch.empty_like(output).uniform_(-magnitude, magnitude)

    return model.transformer.wte.register_forward_hook(hook)


# ----------------------------------------------------------------------------- loss of a frozen LM head
class _HeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `targets` (-100 ignored), chunk by chunk, for a frozen head.

    The forward also computes the gradient for `hidden` ((softmax - one_hot) @ weight, per chunk, in place), so no
    (tokens x vocab) logits, log-probabilities or their gradients are ever held: each chunk is written once and read
    back while still in cache. Same matrix products as autograd, a fraction of its memory traffic and memory.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for s in range(0, hidden.shape[0], chunk):
            logits = (hidden[s : s + chunk] @ weight.T).float()
            t = targets[s : s + chunk]
            valid = t != -100
            t = t.clamp(min=0)
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, t.unsqueeze(1)).squeeze(1)
            loss += torch.where(valid, lse - picked, 0.0).sum()
            if grad is not None:
                probs = logits.sub_(lse.unsqueeze(1)).exp_()
                probs.scatter_add_(1, t.unsqueeze(1), -torch.ones_like(lse).unsqueeze(1))
                probs.mul_(valid.unsqueeze(1))
                torch.mm(probs.to(weight.dtype), weight, out=grad[s : s + chunk])
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None, None


def head_cross_entropy(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                       chunk_elements: int = 1 << 22) -> torch.Tensor:
    """Summed next-token cross-entropy (targets -100 ignored) of the head's logits on `hidden` (N, C).

    A frozen plain `nn.Linear` head without bias takes the chunked path (`_HeadCrossEntropy`); any other head (LoRA
    on the head, a trainable or biased one) goes through autograd."""
    weight = getattr(head, "weight", None)
    if type(head) is torch.nn.Linear and head.bias is None and not weight.requires_grad:
        chunk = max(16, chunk_elements // weight.shape[0])
        return _HeadCrossEntropy.apply(hidden, weight, targets, chunk)
    return torch.nn.functional.cross_entropy(head(hidden).float(), targets, ignore_index=-100, reduction="sum")


# ----------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoint directories
def step_dir(out_dir: Path, step: int) -> Path:
    return out_dir / f"step-{step:06d}"


def complete_checkpoints(out_dir: Path, required: tuple[str, ...]) -> list[tuple[int, Path]]:
    """(step, dir) of every checkpoint dir holding all `required` files, oldest first. A checkpoint dir only gets
    its final name once fully written (see `commit_dir`), so anything named step-N is complete."""
    found = []
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            m = STEP_DIR_RE.match(p.name)
            if m and p.is_dir() and all((p / f).is_file() for f in required):
                found.append((int(m.group(1)), p))
    return sorted(found)


def staging_dir(final: Path) -> Path:
    """A fresh temporary dir beside `final` to write a checkpoint into before `commit_dir`."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """Makes a fully written staging dir visible under its final name in one rename (replacing an older one)."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Deletes staging dirs and temp files a killed run left behind; returns what was removed."""
    removed = []
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            if p.name.startswith(".") and (".tmp" in p.name or ".old-" in p.name):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(p)
    return removed


# ----------------------------------------------------------------------------- a LoRA run: resume, save, load, time budget
# finetune/lora.py and finetune/dpo.py write the same checkpoints: OUT/step-NNNNNN/{LoRA weights, optimizer + schedule +
# RNG + data position, hparams.yaml}, each dir committed in one rename, and OUT/final/ with the last one's weights.
LORA_FILENAME = "lit_model.pth.lora"
STATE_FILENAME = "state.pt"
HPARAMS_FILENAME = "hparams.yaml"


def find_resume_dir(fabric: Any, hp: dict, out_dir: Path, invariants: tuple[str, ...]) -> Optional[Path]:
    """The checkpoint to continue from (`hp["resume"]`: "auto" for the latest complete one in out_dir, or a dir),
    after removing what a killed run left half-written and checking that the flags in `invariants` are those of the
    saved run (a UserError names the ones that differ). Then writes OUT/hparams.yaml."""
    import yaml

    resume_dir = None
    if hp["resume"] == "auto":
        found = complete_checkpoints(out_dir, (LORA_FILENAME, STATE_FILENAME))
        resume_dir = found[-1][1] if found else None
        if resume_dir is None:
            fabric.print(f"--resume auto: no checkpoint in {out_dir}, starting from scratch")
    elif hp["resume"]:
        resume_dir = Path(hp["resume"])
    if fabric.global_rank == 0:
        removed = remove_stale_staging(out_dir)
        if removed:
            fabric.print(f"removed {len(removed)} partial checkpoint(s) left by a killed run")
    fabric.barrier()
    if resume_dir is not None:
        saved = yaml.safe_load((resume_dir / HPARAMS_FILENAME).read_text()) if (resume_dir / HPARAMS_FILENAME).is_file() else {}
        changed = [k for k in invariants if k in saved and saved[k] != hp[k]]
        if changed:
            raise UserError(
                f"--resume {resume_dir}: flags differ from the saved run: "
                + ", ".join(f"{k}={hp[k]!r} (was {saved[k]!r})" for k in changed)
            )
    if fabric.global_rank == 0:
        with atomic_path(out_dir / HPARAMS_FILENAME) as tmp:
            tmp.write_text(yaml.safe_dump(hp, sort_keys=False))
    return resume_dir


def save_checkpoint(fabric: Any, out_dir: Path, model: torch.nn.Module, optimizer: Any, state: dict, hp: dict,
                    final: bool = False) -> float:
    """Writes OUT/step-NNNNNN (`state["step"]`) through a staging dir committed in one rename, so a killed run leaves
    either the whole checkpoint or none; `final` also (re)links OUT/final. Returns the seconds it took."""
    import yaml

    from lit_gpt.lora import lora_filter

    t = time.perf_counter()
    rank, world = fabric.global_rank, fabric.world_size
    rng = [capture_rng_state()]
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, rng[0])
        rng = gathered
    target = step_dir(out_dir, state["step"])
    tmp = staging_dir(target) if rank == 0 else None
    tmp = Path(fabric.broadcast(str(tmp)))
    fabric.save(tmp / LORA_FILENAME, {"model": model}, filter={"model": lora_filter})
    fabric.save(tmp / STATE_FILENAME, {"optimizer": optimizer, "rng": rng, "hparams": hp, **state})
    if rank == 0:
        with atomic_path(tmp / HPARAMS_FILENAME) as h:
            h.write_text(yaml.safe_dump(hp, sort_keys=False))
        commit_dir(tmp, target)
        if final:
            final_dir = out_dir / "final"
            ftmp = staging_dir(final_dir)
            for name in (LORA_FILENAME, HPARAMS_FILENAME):
                os.link(target / name, ftmp / name)
            commit_dir(ftmp, final_dir)
    fabric.barrier()
    return time.perf_counter() - t


def load_checkpoint(fabric: Any, resume_dir: Path, model: torch.nn.Module, optimizer: Any, state: dict) -> None:
    """Restores a `save_checkpoint` dir: LoRA weights, optimizer, the keys of `state` and this rank's RNG."""
    from lit_gpt.lora import load_lora_state_dict

    load_lora_state_dict(getattr(model, "module", model),
                         torch.load(resume_dir / LORA_FILENAME, weights_only=True)["model"], f"{resume_dir / LORA_FILENAME}")
    saved = fabric.load(resume_dir / STATE_FILENAME, {"optimizer": optimizer}, strict=False, weights_only=False)
    for k in state:
        state[k] = saved[k]
    restore_rng_state(saved["rng"][fabric.global_rank])


class TimeBudget:
    """--max_time: seconds used by the run (setup and earlier, resumed runs included), the measured step time, and
    how many optimizer steps still fit once the final evaluation and checkpoint are reserved for."""

    def __init__(self, max_time: Optional[str], t0: float) -> None:
        self.budget = parse_duration(max_time) if max_time else None
        self.t0 = t0
        self.save_time = self.eval_time = 0.0  # the last checkpoint's and evaluation's durations, for the reserve
        self.first_step_time: Optional[float] = None  # step times are measured after the first (longest) step

    def start(self, step: int, prev_elapsed: float) -> None:
        self.run_start, self.prev_elapsed, self.start_step = time.perf_counter(), prev_elapsed, step

    def elapsed(self) -> float:
        return self.prev_elapsed + (self.run_start - self.t0) + (time.perf_counter() - self.run_start)

    def no_time_for_a_step(self) -> bool:
        return self.budget is not None and self.elapsed() + self.eval_time + 1.0 > self.budget

    def step_started(self) -> None:
        self.t_step = time.perf_counter()

    def step_done(self) -> None:
        if self.first_step_time is None:
            self.t_first = time.perf_counter()
            self.first_step_time = self.t_first - self.t_step

    def plan(self, step: int, max_steps: int) -> Optional[int]:
        """The total steps that end the run on time (None before a step was measured or without a budget)."""
        if self.budget is None or self.first_step_time is None:
            return None
        done = step - self.start_step
        step_time = self.first_step_time if done == 1 else (time.perf_counter() - self.t_first) / (done - 1)
        # the final eval and checkpoint, with slack for a slower machine at the end
        reserve = 2 * self.save_time + 2 * self.eval_time + 1.0 + min(0.02 * self.budget, 300.0)
        return plan_total_steps(step, self.elapsed(), step_time, self.budget, reserve, max_steps)

    def total_steps(self, fabric: Any, step: int, max_steps: int) -> Optional[int]:
        """`plan`, rank 0's on every rank (their clocks differ slightly)."""
        total = self.plan(step, max_steps)
        return None if total is None else int(fabric.broadcast(total))


# ----------------------------------------------------------------------------- throughput and memory
# Dense bf16 tensor-core peak of GPUs the challenge uses, for the MFU estimate.
GPU_PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12, "4090": 165.2e12, "A10G": 125e12, "L4": 121e12}


def peak_flops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_PEAK_FLOPS.items() if k in name), None)


def lora_flops_per_token(n_frozen: int, n_trainable: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """Forward (2N) plus backward through the activations (2N) for every weight, weight gradients (2N) only for
    the trainable ones, plus attention scores (2 * 2 * n_layer * seq_len * n_embd forward, twice that backward)."""
    n = n_frozen + n_trainable
    attention = 12 * n_layer * seq_len * n_embd
    return 4 * n + 2 * n_trainable + attention


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: peak allocated tensor memory; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak RSS. /proc's VmHWM is per address space; getrusage's ru_maxrss survives exec, so a
    subprocess would report its parent's peak if the parent was bigger."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
