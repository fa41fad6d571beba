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

from lit_gpt import trainer, training
from lit_gpt.batching import length_grouped_batches, pad_collate, truncate
from lit_gpt.config import Config
from lit_gpt.data import SplitDataset, shard_paths
from lit_gpt.preference import LOSSES, preference_loss, reference_logps, sequence_logps
from lit_gpt.utils import UserError, atomic_save, cli, num_parameters

REFERENCE_FILENAME = "reference_logps.pt"
RESUME_INVARIANTS = (
    "checkpoint_dir", "data_dir", "quantize", "seed", "micro_batch_size", "global_batch_size", "max_seq_length",
    "max_prompt_length", "loss", "beta", "reference", "lora_path", "lora", "devices", "num_nodes",
)


def setup(
    checkpoint_dir: Path,
    data_dir: Path,
    out_dir: Path = Path("out/dpo"),
    loss: Literal["sigmoid", "ipo", "orpo"] = "sigmoid",
    beta: float = 0.1,
    reference: Literal["auto", "adapters_off", "precomputed"] = "auto",
    lora_path: Optional[Path] = None,
    strategy: Literal["auto", "ddp"] = "auto",
    micro_batch_size: int = 2,
    global_batch_size: int = 8,
    learning_rate: float = 1e-4,
    warmup_steps: int = 10,
    max_seq_length: Optional[int] = None,
    max_prompt_length: Optional[int] = None,
    eval_interval: int = 50,
    save_interval: int = 50,
    **kwargs: Any,
) -> Any:
    """Preference-tunes a checkpoint with LoRA (QLoRA with --quantize).

    The flags finetune/lora.py shares (precision, quantize, devices, num_nodes, the LoRA layout, the schedule,
    --max_time, --resume...) are lit_gpt.trainer.run_flags's.

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
        strategy: "auto" or "ddp" (several devices).
        micro_batch_size: pairs per forward/backward on one device (twice as many sequences).
        global_batch_size: pairs per optimizer step over all devices.
        learning_rate: peak learning rate (AdamW).
        warmup_steps: linear warmup steps before the cosine decay.
        max_seq_length: each side (prompt + reply) is cut to this many tokens (default: the longest, at most the block
            size); pairs left without a reply token are dropped.
        max_prompt_length: prompts longer than this keep only their last this many tokens (before --max_seq_length
            cuts the reply), so long threads still leave room for the reply.
        eval_interval: validation loss, reward margin and accuracy every this many steps (0: only at the end).
        save_interval: checkpoint every this many steps (and always at the end).
    """
    t0 = time.perf_counter()
    shared = trainer.run_flags(**kwargs)
    hp = {k: (str(v) if isinstance(v, Path) else v) for k, v in {**locals(), **shared}.items()
          if k not in ("t0", "kwargs", "shared")}
    trainer.check_flags(hp)
    stats_path = Path(data_dir) / "stats.json"
    if not shard_paths(data_dir, "train") or not stats_path.is_file():
        raise UserError(f"{data_dir}: no train-*.pt shards and stats.json (run scripts/prepare_preferences.py first)")
    if json.loads(stats_path.read_text()).get("kind") != "preferences":
        raise UserError(f"{stats_path}: not a preference dataset (prepare it with scripts/prepare_preferences.py)")
    if loss not in LOSSES:
        raise UserError(f"--loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if beta <= 0:
        raise UserError(f"--beta {beta}: must be positive")
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
        hp["lora"] = trainer.lora_config(hp)
    fabric = trainer.launch(hp)
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
    """Loads the pairs and the model, then trains (lit_gpt.trainer.fit) with the preference loss of `Preference`."""
    out_dir, checkpoint_dir = Path(hp["out_dir"]), Path(hp["checkpoint_dir"])
    budget = training.TimeBudget(hp["max_time"], t0)
    resume_dir = training.find_resume_dir(fabric, hp, out_dir, RESUME_INVARIANTS)

    config = Config.from_checkpoint(checkpoint_dir)
    longest = int(SplitDataset(hp["data_dir"], "train").lengths().max())
    max_seq_length = min(hp["max_seq_length"] or longest, config.block_size)
    train = Pairs(hp["data_dir"], "train", max_seq_length, hp["max_prompt_length"])
    val = Pairs(hp["data_dir"], "val", train.max_seq_length, hp["max_prompt_length"]) if shard_paths(hp["data_dir"], "val") else None
    if train.dropped:
        fabric.print(f"{train.dropped} training pairs keep no reply token within {train.max_seq_length} tokens: left out")
    task = Preference(fabric, hp, train, val)
    max_steps = trainer.count_steps(fabric, task, hp, f"{len(train)} training pairs")

    model = trainer.build_lora_model(fabric, hp, config, train.max_seq_length, hp["lora_path"])
    fabric.print(f"{num_parameters(model, requires_grad=True):,} trainable LoRA parameters; {len(train)} training "
                 f"pairs, {max_steps} steps; loss {hp['loss']}, beta {hp['beta']}, reference {hp['reference']}")
    task.model, opt = trainer.setup_training(fabric, hp, model)
    if hp["reference"] == "precomputed":
        task.precomputed = precompute_reference(fabric, task.model, train, val, out_dir, hp, fabric.device)

    state, initial, final = trainer.fit(fabric, task.model, opt, task, hp, max_steps, resume_dir, budget, hp["loss"])
    if fabric.global_rank == 0:
        summary = f"done: {state['step']} steps in {budget.elapsed():.0f}s"
        if initial and final:
            summary += "".join(f"; {k} {initial[k]:.4f} -> {final[k]:.4f}" for k in
                               ("val_loss", "val_reward_margin", "val_reward_accuracy"))
        fabric.print(f"{summary}; LoRA weights in {out_dir / 'final' / training.LORA_FILENAME}")
    return getattr(task.model, "module", task.model)


class Preference:
    """Preference tuning for lit_gpt.trainer.fit: length-grouped batches of pairs, the DPO / IPO / ORPO loss against
    the reference (adapters off, precomputed, or none for ORPO), and the validation loss, reward margin and accuracy."""

    def __init__(self, fabric, hp: dict, train: Pairs, val: Optional[Pairs]) -> None:
        self.fabric, self.hp, self.train = fabric, hp, train
        self.val_batches = []
        if val is not None:
            n, mb = min(len(val), hp["micro_batch_size"] * hp["eval_iters"]), hp["micro_batch_size"]
            self.val_batches = [val.batch(list(range(i, min(i + mb, n)))) for i in range(0, n, mb)]
        self.model, self.precomputed = None, {}  # set once the model is built

    def batches(self, generator: torch.Generator) -> list:
        return length_grouped_batches(self.train.lengths, self.hp["micro_batch_size"], generator)

    def pair_loss(self, batch: dict, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = self.fabric.device
        logps, n_tokens = sequence_logps(self.model, batch, device)
        ref = None
        if self.hp["reference"] == "precomputed":
            ref = self.precomputed[split][batch["pairs"]].T.flatten().to(device)  # chosen rows, then rejected
        elif self.hp["reference"] is not None:
            ref = reference_logps(self.model, batch, device)
        return preference_loss(self.hp["loss"], self.hp["beta"], logps, n_tokens, ref)

    def step(self, micro_batches: list) -> list:
        """Each pair's loss counts 1 / (the pairs of a step on this rank), so the gradient is the step's mean."""
        parts = []
        for i, pairs in enumerate(micro_batches):
            with self.fabric.no_backward_sync(self.model, enabled=i < len(micro_batches) - 1):
                losses, chosen, rejected = self.pair_loss(self.train.batch(pairs), "train")
                self.fabric.backward(losses.sum() / (self.hp["global_batch_size"] // self.fabric.world_size))
            parts.append((losses.detach(), chosen, rejected))
        return parts

    def metrics(self, records: list, seconds: float, lr: float) -> tuple[dict, dict]:
        metrics = summarize(*(torch.cat(x) for x in zip(*records[-1])))  # the last step's pairs
        return metrics, {"loss": f"{metrics['loss']:.4f}", "acc": f"{metrics['reward_accuracy']:.2f}"}

    @torch.no_grad()
    def validate(self, step: int) -> Optional[dict]:
        if not self.val_batches:
            return None
        self.model.eval()
        losses, chosen, rejected = zip(*(self.pair_loss(b, "val") for b in self.val_batches))
        metrics = summarize(torch.cat(losses), torch.cat(chosen), torch.cat(rejected), "val_")
        self.fabric.print(f"step {step}: val loss {metrics['val_loss']:.4f}, reward margin "
                          f"{metrics['val_reward_margin']:.4f}, reward accuracy {metrics['val_reward_accuracy']:.3f}")
        return metrics


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
