"""LoRA / QLoRA finetuning on Lightning Fabric, resumable and inside a time budget.

    python finetune/lora.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        --data_dir data/gsm8k --out_dir out/lora/smollm2 --max_steps 300

Reads a dataset dir of `.pt` shards (lit_gpt.data), trains LoRA weights on the frozen (optionally 4-bit) base
model and writes `OUT/step-NNNNNN/` checkpoints (LoRA weights, optimizer, schedule, RNG and data position),
`OUT/final/lit_model.pth.lora` (also as `OUT/lit_model_lora_finetuned.pth`, the starter guide's name),
`OUT/hparams.yaml`, CSV logs under `OUT/logs/` (plus TensorBoard or W&B with --logger_name) and `OUT/loss.png`.
`scripts/merge_lora.py` turns the result into an ordinary checkpoint dir.
"""

from __future__ import annotations

import csv
import os
import math
import time
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm


from lit_gpt.batching import length_grouped_batches, pack_collate, packed_batches, pad_collate, truncate
from lit_gpt.config import Config
from lit_gpt.data import SplitDataset, shard_paths
from lit_gpt.lora import LoRAConfig, inject_lora, mark_only_lora_as_trainable
from lit_gpt.model import Block, packed_attention
from lit_gpt.quantize import QUANTIZE_MODES, build_model
from lit_gpt import training
from lit_gpt.training import HPARAMS_FILENAME, LORA_FILENAME, STATE_FILENAME  # noqa: F401  (names kept for callers)
from lit_gpt.utils import (
    CHECKPOINT_FILENAME,
    PRECISION_TO_DTYPE,
    UserError,
    atomic_path,
    check_valid_checkpoint_dir,
    cli,
    default_precision,
    num_parameters,
)

# The starter guide's name for the final LoRA weights, beside final/ (merge_lora.py finds OUT/hparams.yaml next to it).
FINAL_LORA_FILENAME = "lit_model_lora_finetuned.pth"
# Flags that must not change when resuming, or the continuation would not be the same run.
RESUME_INVARIANTS = (
    "checkpoint_dir", "data_dir", "quantize", "seed", "micro_batch_size", "global_batch_size", "packing",
    "max_seq_length", "lora_r", "lora_alpha", "lora_query", "lora_key", "lora_value", "lora_projection", "lora_mlp",
    "lora_head", "devices",
)


def setup(
    checkpoint_dir: Path,
    data_dir: Path,
    out_dir: Path = Path("out/lora"),
    precision: Optional[str] = None,
    quantize: Optional[Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq"]] = None,
    accelerator: str = "auto",
    devices: int = 1,
    strategy: Literal["auto", "ddp", "fsdp"] = "auto",
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
    micro_batch_size: int = 4,
    global_batch_size: int = 16,
    learning_rate: float = 3e-4,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.0,
    warmup_steps: int = 100,
    max_steps: Optional[int] = None,
    epochs: int = 1,
    max_time: Optional[str] = None,
    max_seq_length: Optional[int] = None,
    packing: bool = False,
    neftune_alpha: Optional[float] = None,
    gradient_checkpointing: bool = False,
    optimizer: Literal["auto", "adamw", "paged_adamw"] = "auto",
    eval_interval: int = 100,
    eval_iters: int = 20,
    eval_max_new_tokens: int = 48,
    save_interval: int = 100,
    log_interval: int = 1,
    resume: Optional[str] = None,
    logger_name: Literal["csv", "tensorboard", "wandb"] = "csv",
) -> Any:
    """Finetunes a checkpoint with LoRA (QLoRA with --quantize).

    Args:
        checkpoint_dir: the base model (lit_model.pth, model_config.yaml, tokenizer files).
        data_dir: a dataset dir with train-*.pt (and val-*.pt) shards from a scripts/prepare_*.py.
        out_dir: where checkpoints, logs, hparams.yaml and loss.png go.
        precision: Fabric precision; default bf16-true on a GPU with bf16, else 32-true.
        quantize: 4-bit base weights with bitsandbytes (QLoRA); works on CPU and GPU.
        accelerator: "auto", "cpu" or "cuda".
        devices: number of devices (processes) to train on.
        strategy: "auto", "ddp" or "fsdp" (several devices).
        seed: seeds LoRA init, the data order, dropout and NEFTune noise.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha (the update is scaled by alpha / r).
        lora_dropout: dropout on the LoRA input.
        lora_query: LoRA on the query rows of the fused QKV layer.
        lora_key: LoRA on the key rows.
        lora_value: LoRA on the value rows.
        lora_projection: LoRA on the attention output projection.
        lora_mlp: LoRA on the MLP layers.
        lora_head: LoRA on the LM head.
        micro_batch_size: sequences per forward/backward on one device.
        global_batch_size: sequences per optimizer step over all devices (gradient accumulation makes up the rest).
        learning_rate: peak learning rate (AdamW).
        min_lr_ratio: the cosine schedule ends at this fraction of the peak.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warmup steps before the cosine decay.
        max_steps: optimizer steps to run (default: --epochs over the training set).
        epochs: passes over the training set when --max_steps is not given.
        max_time: time budget (HH:MM:SS or DD:HH:MM:SS) from the start of the run, counting resumed runs: the LR
            schedule is re-planned from the measured step time to end on time, then the run saves and stops.
        max_seq_length: longer examples are truncated (default: the longest example, at most the block size).
        packing: pack several examples per sequence (attention and positions restart per example).
        neftune_alpha: NEFTune noise scale on the embeddings during training (e.g. 5).
        gradient_checkpointing: recompute block activations in the backward pass to save memory.
        optimizer: "auto" (bitsandbytes PagedAdamW on a GPU, torch AdamW elsewhere), "adamw" or "paged_adamw".
        eval_interval: validation loss and a sample generation every this many steps (0: only at the end).
        eval_iters: validation micro-batches per evaluation.
        eval_max_new_tokens: length of the sample generation.
        save_interval: checkpoint every this many steps (and always at the end).
        log_interval: log metrics every this many steps.
        resume: "auto" to continue from the latest complete checkpoint in out_dir (if any), or a step-NNNNNN dir.
        logger_name: where metrics go besides OUT/logs/ (CSV, always written: loss.png is drawn from it):
            "tensorboard" (OUT/tensorboard/) or "wandb" (OUT/wandb/, offline unless WANDB_MODE=online).
    """
    t0 = time.perf_counter()
    hp = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items() if k != "t0"}
    hp["precision"] = precision = precision or default_precision(None if accelerator == "auto" else accelerator)
    check_valid_checkpoint_dir(checkpoint_dir)
    if not shard_paths(data_dir, "train"):
        raise UserError(f"{data_dir}: no train-*.pt shards (run a scripts/prepare_*.py first)")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise UserError(f"--quantize {quantize!r}: choose one of {', '.join(QUANTIZE_MODES)}")
    if precision not in PRECISION_TO_DTYPE:
        raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISION_TO_DTYPE)}")
    if micro_batch_size < 1 or global_batch_size % (micro_batch_size * devices):
        raise UserError(
            f"--global_batch_size {global_batch_size} must be a multiple of micro_batch_size * devices "
            f"= {micro_batch_size * devices}"
        )
    if quantize is not None and strategy == "fsdp":
        raise UserError("--quantize does not combine with --strategy fsdp; use ddp or a single device")
    if max_time is not None:
        training.parse_duration(max_time)
    if resume not in (None, "auto") and not Path(resume).is_dir():
        raise UserError(f"--resume {resume!r}: expected 'auto' or a checkpoint dir (out_dir/step-NNNNNN)")
    hp["lora"] = LoRAConfig(
        r=lora_r, alpha=lora_alpha, dropout=lora_dropout, query=lora_query, key=lora_key, value=lora_value,
        projection=lora_projection, mlp=lora_mlp, head=lora_head,
    ).asdict()

    from lightning.fabric import Fabric
    from lightning.fabric.loggers import CSVLogger

    loggers = [CSVLogger(root_dir=out_dir, name="logs", flush_logs_every_n_steps=10)]
    if logger_name == "tensorboard":
        from lightning.fabric.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(root_dir=out_dir, name="tensorboard"))
    elif logger_name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        # Offline by default: the run's files stay in OUT/wandb/ (`wandb sync` uploads them later).
        offline = os.environ.get("WANDB_MODE", "offline") != "online"
        loggers.append(WandbLogger(project="lit-gpt-lora", name=Path(out_dir).name, save_dir=str(out_dir),
                                   offline=offline, config=hp))
    elif logger_name != "csv":
        raise UserError(f"--logger_name {logger_name!r}: choose csv, tensorboard or wandb")
    if strategy == "fsdp":
        from lightning.fabric.strategies import FSDPStrategy

        strategy = FSDPStrategy(
            auto_wrap_policy={Block}, state_dict_type="full", limit_all_gathers=True, use_orig_params=True
        )
    fabric = Fabric(accelerator=accelerator, devices=devices, strategy=strategy, precision=precision, loggers=loggers)
    fabric.launch()
    return main(fabric, hp, t0)


def main(fabric, hp: dict, t0: float) -> torch.nn.Module:
    out_dir = Path(hp["out_dir"])
    checkpoint_dir = Path(hp["checkpoint_dir"])
    rank, world = fabric.global_rank, fabric.world_size
    grad_accum = hp["global_batch_size"] // (hp["micro_batch_size"] * world)
    clock = training.RunClock(hp["max_time"], t0)
    device = fabric.device
    dtype = PRECISION_TO_DTYPE[hp["precision"]]

    # ------------------------------------------------------------------ resume: find the checkpoint, check flags
    resume_dir = training.find_resume_dir(fabric, hp, out_dir, RESUME_INVARIANTS)

    # ------------------------------------------------------------------ data
    train_data = SplitDataset(hp["data_dir"], "train")
    val_data = SplitDataset(hp["data_dir"], "val") if shard_paths(hp["data_dir"], "val") else None
    config = Config.from_checkpoint(checkpoint_dir)
    train_lengths = train_data.lengths()
    max_seq_length = min(hp["max_seq_length"] or int(train_lengths.max()), config.block_size)
    n_truncated = int((train_lengths > max_seq_length).sum())
    if n_truncated:
        fabric.print(f"{n_truncated} training examples are longer than {max_seq_length} tokens and get truncated")

    def epoch_plan(epoch: int) -> list:
        """This rank's micro-batches (lists of example indices, or of bins when packing) for one epoch."""
        g = torch.Generator().manual_seed(hp["seed"] * 1000 + epoch)
        if hp["packing"]:
            batches = packed_batches(train_lengths, hp["micro_batch_size"], max_seq_length, g)
        else:
            batches = length_grouped_batches(train_lengths, hp["micro_batch_size"], g)
        batches = batches[: len(batches) - len(batches) % world]
        return batches[rank::world]

    def collate(batch: list) -> dict[str, torch.Tensor]:
        if hp["packing"]:
            return pack_collate([[truncate(train_data[i], max_seq_length) for i in b] for b in batch])
        return pad_collate([truncate(train_data[i], max_seq_length) for i in batch])

    plan = epoch_plan(0)
    steps_per_epoch = len(plan) // grad_accum
    if steps_per_epoch == 0:
        raise UserError(
            f"{hp['data_dir']}: {len(train_data)} training examples give no full optimizer step of "
            f"global_batch_size={hp['global_batch_size']}"
        )
    max_steps = hp["max_steps"] or hp["epochs"] * steps_per_epoch

    # ------------------------------------------------------------------ model
    fabric.seed_everything(hp["seed"])  # identical LoRA init on every rank
    t_load = time.perf_counter()
    build_device = torch.device("cpu") if hp["strategy"] == "fsdp" else device
    model = build_model(config, checkpoint_dir / CHECKPOINT_FILENAME, build_device, dtype, hp["quantize"])
    lora = LoRAConfig.from_dict(hp["lora"])
    inject_lora(model, lora)
    mark_only_lora_as_trainable(model)
    model.max_seq_length = max_seq_length
    model.gradient_checkpointing = hp["gradient_checkpointing"]
    if hp["neftune_alpha"]:
        training.add_neftune_hook(model, hp["neftune_alpha"])
    n_trainable = num_parameters(model, requires_grad=True)
    n_frozen = sum(p.numel() * (2 if p.dtype == torch.uint8 else 1) for p in model.parameters() if not p.requires_grad)
    fabric.print(
        f"loaded {checkpoint_dir} in {time.perf_counter() - t_load:.1f}s"
        f"{' (' + hp['quantize'] + ')' if hp['quantize'] else ''}: {n_trainable:,} trainable LoRA parameters, "
        f"{n_frozen:,} frozen"
    )
    model = fabric.setup_module(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(hp["optimizer"], trainable, hp["learning_rate"], hp["weight_decay"], device)
    opt = fabric.setup_optimizers(opt)

    # ------------------------------------------------------------------ state
    state = {"step": 0, "epoch": 0, "batch_idx": 0, "total_steps": max_steps, "elapsed": 0.0}
    if resume_dir is not None:
        training.load_checkpoint(fabric, resume_dir, model, opt, state)
        plan = epoch_plan(state["epoch"])
        fabric.print(f"resumed from {resume_dir} at step {state['step']} (epoch {state['epoch']})")
    else:
        fabric.seed_everything(hp["seed"] + rank)  # dropout/NEFTune noise differ per rank

    clock.start(state["step"], state["elapsed"] if resume_dir is not None else 0.0)
    elapsed = clock.elapsed
    raw_model = model.module if hasattr(model, "module") else model
    tokenizer = load_tokenizer(checkpoint_dir)
    val_batches = make_val_batches(val_data, hp["micro_batch_size"], hp["eval_iters"], max_seq_length)
    flops_per_token = training.lora_flops_per_token(n_frozen, n_trainable, config.n_layer, config.n_embd, max_seq_length)
    peak = training.peak_flops(device)

    def evaluate() -> Optional[float]:
        if not val_batches:
            return None
        t = time.perf_counter()
        loss = validate(model, val_batches, device)
        metrics = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50))}
        fabric.log_dict(metrics, step=state["step"])
        if rank == 0:
            sample = sample_generation(raw_model, val_data, tokenizer, hp["eval_max_new_tokens"], device)
            tqdm.write(f"step {state['step']}: val loss {loss:.4f} ({time.perf_counter() - t:.1f}s)\n  sample: {sample!r}")
        fabric.barrier()
        return loss

    def save(final: bool = False) -> None:
        state["elapsed"] = elapsed()
        clock.save_time = training.save_checkpoint(fabric, out_dir, model, opt, state, hp, final)
        if final and rank == 0:
            guide = out_dir / FINAL_LORA_FILENAME
            link = guide.with_name(f".{guide.name}.tmp")
            link.unlink(missing_ok=True)
            os.link(out_dir / "final" / LORA_FILENAME, link)
            os.replace(link, guide)

    # ------------------------------------------------------------------ train
    initial_val = None
    if resume_dir is None and val_batches:
        t = time.perf_counter()
        initial_val = evaluate()
        clock.eval_time = time.perf_counter() - t
    model.train()
    pbar = tqdm(total=state["total_steps"], initial=state["step"], disable=rank != 0, desc="lora", dynamic_ncols=True)
    tokens_since_log, t_log = 0, time.perf_counter()
    loss_since_log, n_since_log = 0.0, 0
    if clock.no_time_for_a_step():
        fabric.print(f"--max_time {hp['max_time']}: no time left for a training step")
        state["total_steps"] = state["step"]
    while state["step"] < state["total_steps"]:
        # the time budget: re-plan the total so the schedule ends on time; stop once no further step fits
        total = clock.plan(state["step"], max_steps)
        if total is not None:
            total = int(fabric.broadcast(total))
            if total != state["total_steps"]:
                state["total_steps"] = total
                pbar.total = total
                pbar.refresh()
            if state["step"] >= total:
                fabric.print(f"--max_time {hp['max_time']}: stopping at step {state['step']} to save in time")
                break
        clock.step_started()
        if state["batch_idx"] + grad_accum > len(plan):
            state["epoch"] += 1
            state["batch_idx"] = 0
            plan = epoch_plan(state["epoch"])
        micro = [collate(plan[state["batch_idx"] + i]) for i in range(grad_accum)]
        n_target = sum(int((m["targets"] != -100).sum()) for m in micro)
        lr = training.lr_at(state["step"] + 1, hp["learning_rate"], hp["warmup_steps"], state["total_steps"],
                            hp["min_lr_ratio"])
        for group in opt.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for i, mb in enumerate(micro):
            with fabric.no_backward_sync(model, enabled=i < grad_accum - 1):
                loss = loss_sum(model, mb, device) / max(n_target, 1)
                fabric.backward(loss)
            step_loss += loss.item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        state["batch_idx"] += grad_accum
        pbar.update(1)
        tokens_since_log += sum(int(m["num_tokens"]) for m in micro) * world
        loss_since_log += step_loss
        n_since_log += 1
        clock.step_done()

        if state["step"] % hp["log_interval"] == 0:
            dt = time.perf_counter() - t_log
            tps = tokens_since_log / max(dt, 1e-9)
            metrics = {
                "loss": loss_since_log / n_since_log, "lr": lr, "epoch": state["epoch"], "tokens_per_sec": tps,
                "tflops": tps * flops_per_token / 1e12, "peak_memory_gb": training.peak_memory_bytes(device) / 1e9,
            }
            if peak:
                metrics["mfu"] = tps * flops_per_token / (peak * world)
            fabric.log_dict(metrics, step=state["step"])
            pbar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}")
            tokens_since_log, t_log, loss_since_log, n_since_log = 0, time.perf_counter(), 0.0, 0
        last = state["step"] >= state["total_steps"]
        if hp["eval_interval"] and state["step"] % hp["eval_interval"] == 0 and not last:
            t = time.perf_counter()
            evaluate()
            clock.eval_time = time.perf_counter() - t
            model.train()
        if state["step"] % hp["save_interval"] == 0 and not last:
            save()
    pbar.close()

    final_val = evaluate()
    save(final=True)
    for logger in fabric.loggers:
        logger.finalize("success")
    if rank == 0:
        plot_losses(out_dir)
        summary = f"done: {state['step']} steps in {elapsed():.0f}s"
        if initial_val is not None and final_val is not None:
            summary += f"; val loss {initial_val:.4f} -> {final_val:.4f}"
        fabric.print(f"{summary}; LoRA weights in {out_dir / 'final' / LORA_FILENAME}")
    return raw_model


def make_optimizer(kind: str, params: list, lr: float, weight_decay: float, device: torch.device):
    if kind == "paged_adamw" or (kind == "auto" and device.type == "cuda"):
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """Summed next-token cross-entropy of a batch (targets are pre-shifted, -100 ignored).

    The LM head runs only on the positions that have a target: prompt and padding tokens need no logits, which
    saves the head's compute and its (tokens x vocab) activations. Under FSDP the head is called through the
    wrapped forward instead (its parameters live in the root FSDP unit).
    """
    input_ids = batch["input_ids"].to(device)
    targets = batch["targets"].to(device)
    kwargs = {}
    if "segment_ids" in batch:
        mask, position_ids = packed_attention(batch["segment_ids"].to(device))
        kwargs = {"mask": mask, "position_ids": position_ids}
    raw = getattr(model, "module", model)
    if type(getattr(model, "_forward_module", model)).__name__.startswith("FullyShardedDataParallel"):
        logits = model(input_ids, **kwargs).flatten(0, 1)
        return F.cross_entropy(logits.float(), targets.flatten(), ignore_index=-100, reduction="sum")
    hidden = model(input_ids, return_hidden=True, **kwargs)
    keep = targets != -100
    # Fabric hands back outputs in fp32 under bf16-true: feed the head its own dtype
    return training.head_cross_entropy(hidden[keep].to(raw.transformer.wte.weight.dtype), raw.lm_head, targets[keep])


def make_val_batches(val_data, micro_batch_size: int, eval_iters: int, max_seq_length: int) -> list[dict]:
    if val_data is None:
        return []
    n = min(len(val_data), micro_batch_size * eval_iters)
    examples = [truncate(val_data[i], max_seq_length) for i in range(n)]
    return [pad_collate(examples[i:i + micro_batch_size]) for i in range(0, n, micro_batch_size)]


@torch.no_grad()
def validate(model: torch.nn.Module, batches: list[dict], device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        total += float(loss_sum(model, b, device))
        count += int((b["targets"] != -100).sum())
    model.train()
    return total / max(count, 1)


def load_tokenizer(checkpoint_dir: Path) -> Any:
    try:
        from lit_gpt.tokenizer import Tokenizer

        return Tokenizer(checkpoint_dir)
    except Exception:
        pass
    if (checkpoint_dir / "tokenizer.json").is_file():
        from tokenizers import Tokenizer as HFTokenizer

        return HFTokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    return None  # tiny test checkpoints have no tokenizer: samples show token ids


@torch.no_grad()
def sample_generation(model, val_data, tokenizer, max_new_tokens: int, device: torch.device) -> str:
    """Greedy continuation of the first validation example's prompt (its tokens before the first label)."""
    if val_data is None or max_new_tokens <= 0:
        return ""
    ex = val_data[0]
    labelled = (ex["labels"] != -100).nonzero()
    n_prompt = int(labelled[0]) if len(labelled) else ex["input_ids"].numel()
    prompt = ex["input_ids"][: max(n_prompt, 1)]
    max_new_tokens = min(max_new_tokens, model.max_seq_length - prompt.numel())
    if max_new_tokens <= 0:
        return ""
    stop_ids = set(getattr(tokenizer, "stop_ids", ()) or ())
    model.eval()
    try:
        from lit_gpt.generation import generate

        new = list(generate(model, prompt.to(device), max_new_tokens, stop_ids=stop_ids))
    except ImportError:
        new, ids = [], prompt.to(device)
        for _ in range(max_new_tokens):  # no KV cache: a short sample only
            nxt = int(model(ids.unsqueeze(0))[0, -1].argmax())
            new.append(nxt)
            if nxt in stop_ids:
                break
            ids = torch.cat((ids, ids.new_tensor([nxt])))
    finally:
        model.clear_kv_cache()
        model.train()
    if tokenizer is None:
        return " ".join(map(str, new))
    return tokenizer.decode(new)


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


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    cli(setup, as_positional=False)
