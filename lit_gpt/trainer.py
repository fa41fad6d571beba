"""The LoRA training run finetune/lora.py and finetune/dpo.py share: the flags both take, Fabric on one or several
nodes, the LoRA model and its optimizer, and `fit`, the loop (schedule, time budget, gradient accumulation, logging,
evaluation, checkpoints, resume). A script brings its data, its loss and its validation as a task (see `fit`)."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

import torch
from tqdm import tqdm

from lit_gpt import training
from lit_gpt.config import Config
from lit_gpt.lora import LoRAConfig, inject_lora, load_lora_state_dict, mark_only_lora_as_trainable
from lit_gpt.model import Block
from lit_gpt.quantize import QUANTIZE_MODES, build_model
from lit_gpt.utils import (
    CHECKPOINT_FILENAME, PRECISION_TO_DTYPE, UserError, atomic_path, check_valid_checkpoint_dir, default_precision,
)


def run_flags(
    precision: Optional[str] = None,
    quantize: Optional[Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq"]] = None,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    seed: int = 1337,
    lora_r: int = 8,
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.05,
    lora_query: bool = True,
    lora_key: bool = False,
    lora_value: bool = True,
    lora_projection: bool = False,
    lora_mlp: bool = False,
    lora_head: bool = False,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.0,
    max_steps: Optional[int] = None,
    epochs: int = 1,
    max_time: Optional[str] = None,
    gradient_checkpointing: bool = False,
    optimizer: Literal["auto", "adamw", "paged_adamw"] = "auto",
    eval_iters: int = 20,
    log_interval: int = 1,
    resume: Optional[str] = None,
) -> dict:
    """The flags of a LoRA run that finetune/lora.py and finetune/dpo.py share (each script's setup() takes them as
    **kwargs, which jsonargparse resolves to this function's parameters and docs).

    Args:
        precision: Fabric precision; default bf16-true on a GPU with bf16, else 32-true.
        quantize: 4-bit base weights with bitsandbytes (QLoRA); works on CPU and GPU.
        accelerator: "auto", "cpu" or "cuda".
        devices: number of devices (processes) to train on, per node.
        num_nodes: number of machines (launched by torchrun or Slurm, one process per device: see the README).
        seed: seeds LoRA init, the data order, dropout (and finetune/lora.py's NEFTune noise).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha (the update is scaled by alpha / r).
        lora_dropout: dropout on the LoRA input.
        lora_query: LoRA on the query rows of the fused QKV layer.
        lora_key: LoRA on the key rows.
        lora_value: LoRA on the value rows.
        lora_projection: LoRA on the attention output projection.
        lora_mlp: LoRA on the MLP layers.
        lora_head: LoRA on the LM head.
        min_lr_ratio: the cosine schedule ends at this fraction of the peak.
        weight_decay: AdamW weight decay.
        max_steps: optimizer steps to run (default: --epochs over the training set).
        epochs: passes over the training set when --max_steps is not given.
        max_time: time budget (HH:MM:SS or DD:HH:MM:SS) from the start of the run, counting resumed runs: the LR
            schedule is re-planned from the measured step time to end on time, then the run saves and stops.
        gradient_checkpointing: recompute block activations in the backward pass to save memory.
        optimizer: "auto" (bitsandbytes PagedAdamW on a GPU, torch AdamW elsewhere), "adamw" or "paged_adamw".
        eval_iters: validation micro-batches per evaluation.
        log_interval: log metrics every this many steps.
        resume: "auto" to continue from the latest complete checkpoint in out_dir (if any), or a step-NNNNNN dir.
    """
    return dict(locals())


def check_flags(hp: dict) -> None:
    """The checks both scripts make before anything loads; fills in the default precision."""
    hp["precision"] = hp["precision"] or default_precision(None if hp["accelerator"] == "auto" else hp["accelerator"])
    check_valid_checkpoint_dir(Path(hp["checkpoint_dir"]))
    if hp["quantize"] is not None and hp["quantize"] not in QUANTIZE_MODES:
        raise UserError(f"--quantize {hp['quantize']!r}: choose one of {', '.join(QUANTIZE_MODES)}")
    if hp["precision"] not in PRECISION_TO_DTYPE:
        raise UserError(f"--precision {hp['precision']!r}: choose one of {', '.join(PRECISION_TO_DTYPE)}")
    if hp["num_nodes"] < 1:
        raise UserError(f"--num_nodes {hp['num_nodes']}: must be at least 1")
    per_step = hp["micro_batch_size"] * hp["devices"] * hp["num_nodes"]
    if hp["micro_batch_size"] < 1 or hp["global_batch_size"] % per_step:
        across = "devices" if hp["num_nodes"] == 1 else "devices * num_nodes"
        raise UserError(f"--global_batch_size {hp['global_batch_size']} must be a multiple of micro_batch_size * "
                        f"{across} = {per_step}")
    if hp["quantize"] is not None and hp["strategy"] == "fsdp":
        raise UserError("--quantize does not combine with --strategy fsdp; use ddp or a single device")
    if hp["max_time"] is not None:
        training.parse_duration(hp["max_time"])
    if hp["resume"] not in (None, "auto") and not Path(hp["resume"]).is_dir():
        raise UserError(f"--resume {hp['resume']!r}: expected 'auto' or a checkpoint dir (out_dir/step-NNNNNN)")


def lora_config(hp: dict) -> dict:
    return LoRAConfig(
        r=hp["lora_r"], alpha=hp["lora_alpha"], dropout=hp["lora_dropout"], query=hp["lora_query"],
        key=hp["lora_key"], value=hp["lora_value"], projection=hp["lora_projection"], mlp=hp["lora_mlp"],
        head=hp["lora_head"],
    ).asdict()


def launch(hp: dict, logger_name: str = "csv", project: str = "lit-gpt-lora") -> Any:
    """Fabric with the run's loggers (CSV always: loss.png is drawn from it), launched: it spawns the processes of
    one node itself, or joins the ones torchrun or Slurm started (then devices * num_nodes must be their number)."""
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import CSVLogger

    out_dir = Path(hp["out_dir"])
    loggers = [CSVLogger(root_dir=out_dir, name="logs", flush_logs_every_n_steps=10)]
    if logger_name == "tensorboard":
        from lightning.fabric.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(root_dir=out_dir, name="tensorboard"))
    elif logger_name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        # Offline by default: the run's files stay in OUT/wandb/ (`wandb sync` uploads them later).
        offline = os.environ.get("WANDB_MODE", "offline") != "online"
        loggers.append(WandbLogger(project=project, name=out_dir.name, save_dir=str(out_dir), offline=offline,
                                   config=hp))
    elif logger_name != "csv":
        raise UserError(f"--logger_name {logger_name!r}: choose csv, tensorboard or wandb")
    strategy = hp["strategy"]
    if strategy == "fsdp":
        from lightning.fabric.strategies import FSDPStrategy

        strategy = FSDPStrategy(
            auto_wrap_policy={Block}, state_dict_type="full", limit_all_gathers=True, use_orig_params=True
        )
    fabric = Fabric(accelerator=hp["accelerator"], devices=hp["devices"], num_nodes=hp["num_nodes"],
                    strategy=strategy, precision=hp["precision"], loggers=loggers)
    fabric.launch()
    return fabric


def build_lora_model(fabric: Any, hp: dict, config: Config, max_seq_length: int, lora_path: Optional[str] = None
                     ) -> torch.nn.Module:
    """The base model (4-bit with --quantize) with LoRA injected, the same initial LoRA weights on every rank (or
    those of `lora_path`), only they trainable. Not yet set up by Fabric (see `setup_training`)."""
    fabric.seed_everything(hp["seed"])  # identical LoRA init on every rank
    build_device = torch.device("cpu") if hp["strategy"] == "fsdp" else fabric.device
    path = Path(hp["checkpoint_dir"]) / CHECKPOINT_FILENAME
    model = build_model(config, path, build_device, PRECISION_TO_DTYPE[hp["precision"]], hp["quantize"])
    inject_lora(model, LoRAConfig.from_dict(hp["lora"]))
    if lora_path:
        weights = torch.load(lora_path, weights_only=True)
        load_lora_state_dict(model, weights.get("model", weights), lora_path)
    mark_only_lora_as_trainable(model)
    model.max_seq_length = max_seq_length
    model.gradient_checkpointing = hp["gradient_checkpointing"]
    return model


def setup_training(fabric: Any, hp: dict, model: torch.nn.Module) -> tuple[torch.nn.Module, Any]:
    """The model and an optimizer over its trainable weights, both set up by Fabric."""
    model = fabric.setup_module(model)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, fabric.setup_optimizers(make_optimizer(hp["optimizer"], params, hp["learning_rate"],
                                                         hp["weight_decay"], fabric.device))


def make_optimizer(kind: str, params: list, lr: float, weight_decay: float, device: torch.device):
    if kind == "paged_adamw" or (kind == "auto" and device.type == "cuda"):
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# ----------------------------------------------------------------------------- the loop
class Task(Protocol):
    """What a script brings to `fit`."""

    def batches(self, generator: torch.Generator) -> list:
        """One epoch's micro-batches over all ranks (lists of example indices), shuffled with `generator`."""

    def step(self, micro_batches: list) -> Any:
        """Forward and backward over one optimizer step's micro-batches; returns what `metrics` reads."""

    def metrics(self, records: list, seconds: float, lr: float) -> tuple[dict, dict]:
        """(logged metrics, progress-bar postfix) from the `step` records since the last log and their seconds."""

    def validate(self, step: int) -> Optional[dict]:
        """Validation metrics (None without a validation set), the model in eval mode."""


def epoch_plan(task: Task, hp: dict, epoch: int, rank: int, world: int) -> list:
    """This rank's micro-batches of an epoch: the same shuffle on every rank, dealt round-robin."""
    batches = task.batches(torch.Generator().manual_seed(hp["seed"] * 1000 + epoch))
    batches = batches[: len(batches) - len(batches) % world]
    return batches[rank::world]


def count_steps(fabric: Any, task: Task, hp: dict, what: str) -> int:
    """--max_steps, or the optimizer steps of --epochs (a UserError if the data gives no full step)."""
    world = fabric.world_size
    grad_accum = hp["global_batch_size"] // (hp["micro_batch_size"] * world)
    steps_per_epoch = len(epoch_plan(task, hp, 0, fabric.global_rank, world)) // grad_accum
    if steps_per_epoch == 0:
        raise UserError(f"{hp['data_dir']}: {what} give no full optimizer step of "
                        f"global_batch_size={hp['global_batch_size']}")
    return hp["max_steps"] or hp["epochs"] * steps_per_epoch


def fit(fabric: Any, model: torch.nn.Module, optimizer: Any, task: Task, hp: dict, max_steps: int,
        resume_dir: Optional[Path], budget: training.TimeBudget, desc: str
        ) -> tuple[dict, Optional[dict], Optional[dict]]:
    """Trains to `max_steps` (fewer if --max_time says so) from scratch or from `resume_dir`: warmup + cosine LR,
    `global_batch_size // (micro_batch_size * world)` micro-batches per step, metrics every --log_interval steps,
    validation every --eval_interval steps and at both ends, a checkpoint every --save_interval steps and at the
    end (OUT/final). Returns (the run's state, the first validation's metrics, the last one's)."""
    out_dir = Path(hp["out_dir"])
    rank, world = fabric.global_rank, fabric.world_size
    grad_accum = hp["global_batch_size"] // (hp["micro_batch_size"] * world)
    state = {"step": 0, "epoch": 0, "batch_idx": 0, "total_steps": max_steps, "elapsed": 0.0}
    if resume_dir is not None:
        training.load_checkpoint(fabric, resume_dir, model, optimizer, state)
        fabric.print(f"resumed from {resume_dir} at step {state['step']} (epoch {state['epoch']})")
    else:
        fabric.seed_everything(hp["seed"] + rank)  # dropout/NEFTune noise differ per rank
    budget.start(state["step"], state["elapsed"] if resume_dir is not None else 0.0)
    plan = epoch_plan(task, hp, state["epoch"], rank, world)

    def evaluate() -> Optional[dict]:
        t = time.perf_counter()
        metrics = task.validate(state["step"])
        if metrics is not None:
            fabric.log_dict(metrics, step=state["step"])
            budget.eval_time = time.perf_counter() - t
        model.train()
        return metrics

    def save(final: bool = False) -> None:
        state["elapsed"] = budget.elapsed()
        budget.save_time = training.save_checkpoint(fabric, out_dir, model, optimizer, state, hp, final)

    initial = evaluate() if resume_dir is None else None
    model.train()
    pbar = tqdm(total=state["total_steps"], initial=state["step"], disable=rank != 0, desc=desc, dynamic_ncols=True)
    records, t_log = [], time.perf_counter()
    if budget.no_time_for_a_step():
        fabric.print(f"--max_time {hp['max_time']}: no time left for a training step")
        state["total_steps"] = state["step"]
    while state["step"] < state["total_steps"]:
        total = budget.total_steps(fabric, state["step"], max_steps)
        if total is not None:
            if total != state["total_steps"]:
                state["total_steps"] = pbar.total = total
                pbar.refresh()
            if state["step"] >= total:
                fabric.print(f"--max_time {hp['max_time']}: stopping at step {state['step']} to save in time")
                break
        budget.step_started()
        if state["batch_idx"] + grad_accum > len(plan):
            state["epoch"], state["batch_idx"] = state["epoch"] + 1, 0
            plan = epoch_plan(task, hp, state["epoch"], rank, world)
        lr = training.lr_at(state["step"] + 1, hp["learning_rate"], hp["warmup_steps"], state["total_steps"],
                            hp["min_lr_ratio"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        records.append(task.step(plan[state["batch_idx"]: state["batch_idx"] + grad_accum]))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["batch_idx"] += grad_accum
        pbar.update(1)
        budget.step_done()

        if state["step"] % hp["log_interval"] == 0:
            metrics, postfix = task.metrics(records, time.perf_counter() - t_log, lr)
            fabric.log_dict({**metrics, "lr": lr, "epoch": state["epoch"]}, step=state["step"])
            pbar.set_postfix(postfix)
            records, t_log = [], time.perf_counter()
        last = state["step"] >= state["total_steps"]
        if hp["eval_interval"] and state["step"] % hp["eval_interval"] == 0 and not last:
            evaluate()
        if state["step"] % hp["save_interval"] == 0 and not last:
            save()
    pbar.close()

    final = evaluate()
    save(final=True)
    for logger in fabric.loggers:
        logger.finalize("success")
    if rank == 0:
        plot_losses(out_dir)
    return state, initial, final


def plot_losses(out_dir: Path) -> Optional[Path]:
    """OUT/loss.png from every CSV log of the run (resumed runs log into new versions; the latest value wins)."""
    train, val = {}, {}
    for path in sorted((out_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = int(float(row["step"]))
                if row.get("loss"):
                    train[step] = float(row["loss"])
                if row.get("val_loss"):
                    val[step] = float(row["val_loss"])
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*sorted(train.items())), label="train loss", linewidth=0.8)
    if val:
        ax.plot(*zip(*sorted(val.items())), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    path = out_dir / "loss.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
