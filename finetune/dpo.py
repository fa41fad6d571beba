"""Preference tuning (DPO, IPO, ORPO) with LoRA / QLoRA on Lightning Fabric, resumable and inside a time budget.

    python scripts/prepare_preferences.py --source ../shared/data/oasst --out_dir data/oasst_pairs
    python finetune/dpo.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        --data_dir data/oasst_pairs --out_dir out/dpo/smollm2 --max_steps 300

Reads a preference dataset (chosen and rejected as consecutive examples, scripts/prepare_preferences.py) and trains
LoRA weights. The reference model is the same model with its adapters switched off (no second copy), or its
log-probabilities are computed once before training (`--reference precomputed`, needed when `--lora_path` starts from
an SFT run's LoRA: the reference is then that SFT model). Checkpoints, resume, `--max_time` and the outputs are
finetune/lora.py's (lit_gpt/training.py): `OUT/final/lit_model.pth.lora`, which `scripts/merge_lora.py` merges.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from tqdm import tqdm


from finetune.lora import make_optimizer, plot_losses
from lit_gpt import training
from lit_gpt.batching import length_grouped_batches, pad_collate, truncate
from lit_gpt.config import Config
from lit_gpt.data import SplitDataset, shard_paths
from lit_gpt.lora import LoRAConfig, inject_lora, load_lora_state_dict, mark_only_lora_as_trainable
from lit_gpt.preference import LOSSES, preference_loss, reference_logps, sequence_logps
from lit_gpt.quantize import QUANTIZE_MODES, build_model
from lit_gpt.utils import (
    CHECKPOINT_FILENAME, PRECISION_TO_DTYPE, UserError, atomic_save, check_valid_checkpoint_dir, cli, default_precision,
    num_parameters,
)

REFERENCE_FILENAME = "reference_logps.pt"
RESUME_INVARIANTS = (
    "checkpoint_dir", "data_dir", "quantize", "seed", "micro_batch_size", "global_batch_size", "max_seq_length",
    "max_prompt_length", "loss", "beta", "reference", "lora_path", "lora", "devices",
)


def setup(
    checkpoint_dir: Path,
    data_dir: Path,
    out_dir: Path = Path("out/dpo"),
    loss: Literal["sigmoid", "ipo", "orpo"] = "sigmoid",
    beta: float = 0.1,
    reference: Literal["auto", "adapters_off", "precomputed"] = "auto",
    lora_path: Optional[Path] = None,
    precision: Optional[str] = None,
    quantize: Optional[Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq"]] = None,
    accelerator: str = "auto",
    devices: int = 1,
    strategy: Literal["auto", "ddp"] = "auto",
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
    micro_batch_size: int = 2,
    global_batch_size: int = 8,
    learning_rate: float = 1e-4,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.0,
    warmup_steps: int = 10,
    max_steps: Optional[int] = None,
    epochs: int = 1,
    max_time: Optional[str] = None,
    max_seq_length: Optional[int] = None,
    max_prompt_length: Optional[int] = None,
    gradient_checkpointing: bool = False,
    optimizer: Literal["auto", "adamw", "paged_adamw"] = "auto",
    eval_interval: int = 50,
    eval_iters: int = 20,
    save_interval: int = 50,
    log_interval: int = 1,
    resume: Optional[str] = None,
) -> Any:
    """Preference-tunes a checkpoint with LoRA (QLoRA with --quantize).

    Args:
        checkpoint_dir: the base model (lit_model.pth, model_config.yaml, tokenizer files).
        data_dir: a preference dataset dir from scripts/prepare_preferences.py (or prepare_mix.py on pair sources).
        out_dir: where checkpoints, logs, hparams.yaml and loss.png go.
        loss: "sigmoid" (DPO), "ipo" or "orpo" (odds ratio with an NLL term, no reference model).
        beta: DPO's KL weight beta, IPO's tau, ORPO's lambda.
        reference: "adapters_off" (the model with its LoRA switched off, computed each step), "precomputed" (once,
            before training, with the starting adapters) or "auto" (precomputed with --lora_path, else adapters_off).
        lora_path: start from these LoRA weights (an SFT run's OUT/final/lit_model.pth.lora); their run's hparams.yaml
            sets the LoRA layout, overriding the --lora_* flags.
        precision: Fabric precision; default bf16-true on a GPU with bf16, else 32-true.
        quantize: 4-bit base weights with bitsandbytes (QLoRA).
        accelerator: "auto", "cpu" or "cuda".
        devices: number of devices (processes) to train on.
        strategy: "auto" or "ddp" (several devices).
        seed: seeds LoRA init, the data order and dropout.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha (the update is scaled by alpha / r).
        lora_dropout: dropout on the LoRA input.
        lora_query: LoRA on the query rows of the fused QKV layer.
        lora_key: LoRA on the key rows.
        lora_value: LoRA on the value rows.
        lora_projection: LoRA on the attention output projection.
        lora_mlp: LoRA on the MLP layers.
        lora_head: LoRA on the LM head.
        micro_batch_size: pairs per forward/backward on one device (twice as many sequences).
        global_batch_size: pairs per optimizer step over all devices.
        learning_rate: peak learning rate (AdamW).
        min_lr_ratio: the cosine schedule ends at this fraction of the peak.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warmup steps before the cosine decay.
        max_steps: optimizer steps to run (default: --epochs over the training pairs).
        epochs: passes over the training pairs when --max_steps is not given.
        max_time: time budget (HH:MM:SS or DD:HH:MM:SS) from the start of the run, counting resumed runs.
        max_seq_length: each side (prompt + reply) is cut to this many tokens (default: the longest, at most the block
            size); pairs left without a reply token are dropped.
        max_prompt_length: prompts longer than this keep only their last this many tokens (before --max_seq_length
            cuts the reply), so long threads still leave room for the reply.
        gradient_checkpointing: recompute block activations in the backward pass to save memory.
        optimizer: "auto" (bitsandbytes PagedAdamW on a GPU, torch AdamW elsewhere), "adamw" or "paged_adamw".
        eval_interval: validation loss, reward margin and accuracy every this many steps (0: only at the end).
        eval_iters: validation micro-batches per evaluation.
        save_interval: checkpoint every this many steps (and always at the end).
        log_interval: log metrics every this many steps.
        resume: "auto" to continue from the latest complete checkpoint in out_dir (if any), or a step-NNNNNN dir.
    """
    t0 = time.perf_counter()
    hp = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items() if k != "t0"}
    hp["precision"] = precision = precision or default_precision(None if accelerator == "auto" else accelerator)
    check_valid_checkpoint_dir(checkpoint_dir)
    stats_path = Path(data_dir) / "stats.json"
    if not shard_paths(data_dir, "train") or not stats_path.is_file():
        raise UserError(f"{data_dir}: no train-*.pt shards and stats.json (run scripts/prepare_preferences.py first)")
    if json.loads(stats_path.read_text()).get("kind") != "preferences":
        raise UserError(f"{stats_path}: not a preference dataset (prepare it with scripts/prepare_preferences.py)")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise UserError(f"--quantize {quantize!r}: choose one of {', '.join(QUANTIZE_MODES)}")
    if precision not in PRECISION_TO_DTYPE:
        raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISION_TO_DTYPE)}")
    if loss not in LOSSES:
        raise UserError(f"--loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if beta <= 0:
        raise UserError(f"--beta {beta}: must be positive")
    if micro_batch_size < 1 or global_batch_size % (micro_batch_size * devices):
        raise UserError(
            f"--global_batch_size {global_batch_size} must be a multiple of micro_batch_size * devices "
            f"= {micro_batch_size * devices}"
        )
    if max_time is not None:
        training.parse_duration(max_time)
    if resume not in (None, "auto") and not Path(resume).is_dir():
        raise UserError(f"--resume {resume!r}: expected 'auto' or a checkpoint dir (out_dir/step-NNNNNN)")
    if reference == "auto":
        hp["reference"] = "precomputed" if lora_path else "adapters_off"
    if loss == "orpo":
        hp["reference"] = None
    elif lora_path and hp["reference"] == "adapters_off":
        raise UserError("--reference adapters_off with --lora_path would compare against the base model, not the SFT "
                        "model: use --reference precomputed")
    if lora_path:
        from lit_gpt.lora import read_lora_run

        hp["lora"] = read_lora_run(Path(lora_path))[0]["lora"]
    else:
        hp["lora"] = LoRAConfig(
            r=lora_r, alpha=lora_alpha, dropout=lora_dropout, query=lora_query, key=lora_key, value=lora_value,
            projection=lora_projection, mlp=lora_mlp, head=lora_head,
        ).asdict()

    from lightning.fabric import Fabric
    from lightning.fabric.loggers import CSVLogger

    loggers = [CSVLogger(root_dir=out_dir, name="logs", flush_logs_every_n_steps=10)]
    fabric = Fabric(accelerator=accelerator, devices=devices, strategy=strategy, precision=precision, loggers=loggers)
    fabric.launch()
    return main(fabric, hp, t0)


class Pairs:
    """The pairs of one split (examples 2i and 2i+1: chosen and rejected), each prompt cut to its last
    max_prompt_length tokens and each side to max_seq_length; pairs that keep no reply token on a side are left out."""

    def __init__(self, data_dir: str, split: str, max_seq_length: Optional[int] = None,
                 max_prompt_length: Optional[int] = None) -> None:
        self.data = SplitDataset(data_dir, split)
        self.max_prompt_length = max_prompt_length
        if len(self.data) % 2:
            raise UserError(f"{data_dir}: {split} holds an odd number of examples, not chosen/rejected pairs")
        lengths = self.data.lengths().view(-1, 2)
        self.max_seq_length = max_seq_length or int(lengths.max())
        self.index = [i for i in range(len(lengths)) if all(self._has_target(2 * i + j) for j in (0, 1))]
        self.dropped = len(lengths) - len(self.index)
        self.lengths = lengths[self.index].clamp(max=self.max_seq_length).max(1).values

    def side(self, k: int) -> dict:
        ex = self.data[k]
        labelled = (ex["labels"] != -100).nonzero()
        cut = int(labelled[0]) - self.max_prompt_length if self.max_prompt_length and len(labelled) else 0
        if cut > 0:
            ex = {"input_ids": ex["input_ids"][cut:], "labels": ex["labels"][cut:]}
        return truncate(ex, self.max_seq_length)

    def _has_target(self, k: int) -> bool:
        return bool((self.side(k)["labels"][1:] != -100).any())

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, pairs: list[int]) -> dict[str, torch.Tensor]:
        """The pairs (positions in this split) as 2B rows: every chosen reply, then every rejected one."""
        sides = [self.side(2 * self.index[p] + j) for j in (0, 1) for p in pairs]
        return {**pad_collate(sides), "pairs": torch.tensor(pairs)}


def main(fabric, hp: dict, t0: float) -> torch.nn.Module:
    out_dir, checkpoint_dir = Path(hp["out_dir"]), Path(hp["checkpoint_dir"])
    rank, world = fabric.global_rank, fabric.world_size
    grad_accum = hp["global_batch_size"] // (hp["micro_batch_size"] * world)
    clock = training.RunClock(hp["max_time"], t0)
    device, dtype = fabric.device, PRECISION_TO_DTYPE[hp["precision"]]
    resume_dir = training.find_resume_dir(fabric, hp, out_dir, RESUME_INVARIANTS)

    # ------------------------------------------------------------------ data
    config = Config.from_checkpoint(checkpoint_dir)
    longest = int(SplitDataset(hp["data_dir"], "train").lengths().max())
    max_seq_length = min(hp["max_seq_length"] or longest, config.block_size)
    train = Pairs(hp["data_dir"], "train", max_seq_length, hp["max_prompt_length"])
    val = Pairs(hp["data_dir"], "val", train.max_seq_length, hp["max_prompt_length"]) if shard_paths(hp["data_dir"], "val") else None
    if train.dropped:
        fabric.print(f"{train.dropped} training pairs keep no reply token within {train.max_seq_length} tokens: left out")

    def epoch_plan(epoch: int) -> list:
        g = torch.Generator().manual_seed(hp["seed"] * 1000 + epoch)
        batches = length_grouped_batches(train.lengths, hp["micro_batch_size"], g)
        batches = batches[: len(batches) - len(batches) % world]
        return batches[rank::world]

    plan = epoch_plan(0)
    steps_per_epoch = len(plan) // grad_accum
    if steps_per_epoch == 0:
        raise UserError(f"{hp['data_dir']}: {len(train)} training pairs give no full optimizer step of "
                        f"global_batch_size={hp['global_batch_size']}")
    max_steps = hp["max_steps"] or hp["epochs"] * steps_per_epoch

    # ------------------------------------------------------------------ model
    fabric.seed_everything(hp["seed"])
    model = build_model(config, checkpoint_dir / CHECKPOINT_FILENAME, device, dtype, hp["quantize"])
    inject_lora(model, LoRAConfig.from_dict(hp["lora"]))
    if hp["lora_path"]:
        weights = torch.load(hp["lora_path"], weights_only=True)
        load_lora_state_dict(model, weights.get("model", weights), hp["lora_path"])
    mark_only_lora_as_trainable(model)
    model.max_seq_length = train.max_seq_length
    model.gradient_checkpointing = hp["gradient_checkpointing"]
    fabric.print(f"{num_parameters(model, requires_grad=True):,} trainable LoRA parameters; {len(train)} training "
                 f"pairs, {max_steps} steps; loss {hp['loss']}, beta {hp['beta']}, reference {hp['reference']}")
    model = fabric.setup_module(model)
    opt = fabric.setup_optimizers(make_optimizer(hp["optimizer"], [p for p in model.parameters() if p.requires_grad],
                                                 hp["learning_rate"], hp["weight_decay"], device))
    val_batches = []
    if val is not None:
        n = min(len(val), hp["micro_batch_size"] * hp["eval_iters"])
        val_batches = [val.batch(list(range(i, min(i + hp["micro_batch_size"], n))))
                       for i in range(0, n, hp["micro_batch_size"])]

    # ------------------------------------------------------------------ reference log-probabilities, once
    precomputed = {}
    if hp["reference"] == "precomputed":
        precomputed = precompute_reference(fabric, model, train, val, out_dir, hp, device)

    def ref_for(split: str, batch: dict) -> Optional[torch.Tensor]:
        if hp["reference"] is None:
            return None
        if hp["reference"] == "precomputed":
            return precomputed[split][batch["pairs"]].T.flatten().to(device)  # chosen rows, then rejected
        return reference_logps(model, batch, device)

    def pair_loss(batch: dict, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logps, n_tokens = sequence_logps(model, batch, device)
        return preference_loss(hp["loss"], hp["beta"], logps, n_tokens, ref_for(split, batch))

    # ------------------------------------------------------------------ state
    state = {"step": 0, "epoch": 0, "batch_idx": 0, "total_steps": max_steps, "elapsed": 0.0}
    if resume_dir is not None:
        training.load_checkpoint(fabric, resume_dir, model, opt, state)
        plan = epoch_plan(state["epoch"])
        fabric.print(f"resumed from {resume_dir} at step {state['step']} (epoch {state['epoch']})")
    else:
        fabric.seed_everything(hp["seed"] + rank)
    clock.start(state["step"], state["elapsed"] if resume_dir is not None else 0.0)

    @torch.no_grad()
    def evaluate() -> Optional[dict]:
        if not val_batches:
            return None
        t = time.perf_counter()
        model.eval()
        losses, chosen, rejected = zip(*(pair_loss(b, "val") for b in val_batches))
        model.train()
        metrics = summarize(torch.cat(losses), torch.cat(chosen), torch.cat(rejected), "val_")
        fabric.log_dict(metrics, step=state["step"])
        fabric.print(f"step {state['step']}: val loss {metrics['val_loss']:.4f}, reward margin "
                     f"{metrics['val_reward_margin']:.4f}, reward accuracy {metrics['val_reward_accuracy']:.3f}")
        clock.eval_time = time.perf_counter() - t
        return metrics

    def save(final: bool = False) -> None:
        state["elapsed"] = clock.elapsed()
        clock.save_time = training.save_checkpoint(fabric, out_dir, model, opt, state, hp, final)

    # ------------------------------------------------------------------ train
    initial = evaluate() if resume_dir is None else None
    model.train()
    pbar = tqdm(total=state["total_steps"], initial=state["step"], disable=rank != 0, desc=hp["loss"], dynamic_ncols=True)
    if clock.no_time_for_a_step():
        fabric.print(f"--max_time {hp['max_time']}: no time left for a training step")
        state["total_steps"] = state["step"]
    while state["step"] < state["total_steps"]:
        total = clock.plan(state["step"], max_steps)  # the time budget: re-planned so the schedule ends on time
        if total is not None:
            state["total_steps"] = pbar.total = int(fabric.broadcast(total))
            if state["step"] >= state["total_steps"]:
                fabric.print(f"--max_time {hp['max_time']}: stopping at step {state['step']} to save in time")
                break
        clock.step_started()
        if state["batch_idx"] + grad_accum > len(plan):
            state["epoch"], state["batch_idx"] = state["epoch"] + 1, 0
            plan = epoch_plan(state["epoch"])
        lr = training.lr_at(state["step"] + 1, hp["learning_rate"], hp["warmup_steps"], state["total_steps"],
                            hp["min_lr_ratio"])
        for group in opt.param_groups:
            group["lr"] = lr
        parts = []
        for i in range(grad_accum):
            batch = train.batch(plan[state["batch_idx"] + i])
            with fabric.no_backward_sync(model, enabled=i < grad_accum - 1):
                losses, chosen, rejected = pair_loss(batch, "train")
                fabric.backward(losses.sum() / (hp["global_batch_size"] // world))
            parts.append((losses.detach(), chosen, rejected))
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        state["batch_idx"] += grad_accum
        pbar.update(1)
        clock.step_done()
        if state["step"] % hp["log_interval"] == 0:
            metrics = {**summarize(*(torch.cat(x) for x in zip(*parts))), "lr": lr, "epoch": state["epoch"]}
            fabric.log_dict(metrics, step=state["step"])
            pbar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['reward_accuracy']:.2f}")
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
        summary = f"done: {state['step']} steps in {clock.elapsed():.0f}s"
        if initial and final:
            summary += "".join(f"; {k} {initial[k]:.4f} -> {final[k]:.4f}" for k in
                               ("val_loss", "val_reward_margin", "val_reward_accuracy"))
        fabric.print(f"{summary}; LoRA weights in {out_dir / 'final' / training.LORA_FILENAME}")
    return getattr(model, "module", model)


def summarize(losses: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, prefix: str = "") -> dict:
    """Mean loss, rewards, reward margin and reward accuracy (the fraction of pairs whose chosen reward is higher)."""
    return {f"{prefix}loss": float(losses.mean()), f"{prefix}reward_margin": float((chosen - rejected).mean()),
            f"{prefix}reward_accuracy": float((chosen > rejected).float().mean()),
            f"{prefix}chosen_reward": float(chosen.mean()), f"{prefix}rejected_reward": float(rejected.mean())}


@torch.no_grad()
def precompute_reference(fabric, model, train: Pairs, val: Optional[Pairs], out_dir: Path, hp: dict,
                         device: torch.device) -> dict[str, torch.Tensor]:
    """(pairs, 2) chosen/rejected log-probabilities of the starting model for each split, computed once (in eval
    mode, adapters as loaded) and kept in OUT/reference_logps.pt, which a resumed run reads back."""
    path = out_dir / REFERENCE_FILENAME
    if path.is_file():
        return torch.load(path, weights_only=True)
    out = {}
    model.eval()
    for split, pairs in (("train", train), ("val", val)):
        if pairs is None:
            continue
        rows = []
        for i in tqdm(range(0, len(pairs), hp["micro_batch_size"]), desc=f"reference {split}", disable=fabric.global_rank != 0):
            batch = pairs.batch(list(range(i, min(i + hp["micro_batch_size"], len(pairs)))))
            rows.append(sequence_logps(model, batch, device)[0].view(2, -1).T.cpu())
        out[split] = torch.cat(rows)
    model.train()
    if fabric.global_rank == 0:
        atomic_save(out, path)
    fabric.barrier()
    return out


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    cli(setup, as_positional=False)
