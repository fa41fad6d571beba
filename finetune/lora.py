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

import math
import os
import time
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lit_gpt import trainer, training
from lit_gpt.batching import length_grouped_batches, pack_collate, packed_batches, pad_collate, truncate
from lit_gpt.config import Config
from lit_gpt.data import SplitDataset, shard_paths
from lit_gpt.model import packed_attention
from lit_gpt.training import HPARAMS_FILENAME, LORA_FILENAME, STATE_FILENAME  # noqa: F401  (names kept for callers)
from lit_gpt.utils import UserError, cli, num_parameters

# The starter guide's name for the final LoRA weights, beside final/ (merge_lora.py finds OUT/hparams.yaml next to it).
FINAL_LORA_FILENAME = "lit_model_lora_finetuned.pth"
# Flags that must not change when resuming, or the continuation would not be the same run.
RESUME_INVARIANTS = (
    "checkpoint_dir", "data_dir", "quantize", "seed", "micro_batch_size", "global_batch_size", "packing",
    "max_seq_length", "lora_r", "lora_alpha", "lora_query", "lora_key", "lora_value", "lora_projection", "lora_mlp",
    "lora_head", "devices", "num_nodes",
)


def setup(
    checkpoint_dir: Path,
    data_dir: Path,
    out_dir: Path = Path("out/lora"),
    strategy: Literal["auto", "ddp", "fsdp"] = "auto",
    micro_batch_size: int = 4,
    global_batch_size: int = 16,
    learning_rate: float = 3e-4,
    warmup_steps: int = 100,
    max_seq_length: Optional[int] = None,
    packing: bool = False,
    neftune_alpha: Optional[float] = None,
    eval_interval: int = 100,
    eval_max_new_tokens: int = 48,
    save_interval: int = 100,
    logger_name: Literal["csv", "tensorboard", "wandb"] = "csv",
    **kwargs: Any,
) -> Any:
    """Finetunes a checkpoint with LoRA (QLoRA with --quantize).

    The flags finetune/dpo.py shares (precision, quantize, devices, num_nodes, the LoRA layout, the schedule,
    --max_time, --resume...) are lit_gpt.trainer.run_flags's.

    Args:
        checkpoint_dir: the base model (lit_model.pth, model_config.yaml, tokenizer files).
        data_dir: a dataset dir with train-*.pt (and val-*.pt) shards from a scripts/prepare_*.py.
        out_dir: where checkpoints, logs, hparams.yaml and loss.png go.
        strategy: "auto", "ddp" or "fsdp" (several devices).
        micro_batch_size: sequences per forward/backward on one device.
        global_batch_size: sequences per optimizer step over all devices (gradient accumulation makes up the rest).
        learning_rate: peak learning rate (AdamW).
        warmup_steps: linear warmup steps before the cosine decay.
        max_seq_length: longer examples are truncated (default: the longest example, at most the block size).
        packing: pack several examples per sequence (attention and positions restart per example).
        neftune_alpha: NEFTune noise scale on the embeddings during training (e.g. 5).
        eval_interval: validation loss and a sample generation every this many steps (0: only at the end).
        eval_max_new_tokens: length of the sample generation.
        save_interval: checkpoint every this many steps (and always at the end).
        logger_name: where metrics go besides OUT/logs/ (CSV, always written: loss.png is drawn from it):
            "tensorboard" (OUT/tensorboard/) or "wandb" (OUT/wandb/, offline unless WANDB_MODE=online).
    """
    t0 = time.perf_counter()
    shared = trainer.run_flags(**kwargs)
    hp = {k: (str(v) if isinstance(v, Path) else v) for k, v in {**locals(), **shared}.items()
          if k not in ("t0", "kwargs", "shared")}
    trainer.check_flags(hp)
    if not shard_paths(data_dir, "train"):
        raise UserError(f"{data_dir}: no train-*.pt shards (run a scripts/prepare_*.py first)")
    hp["lora"] = trainer.lora_config(hp)
    fabric = trainer.launch(hp, logger_name)
    return main(fabric, hp, t0)


def main(fabric, hp: dict, t0: float) -> torch.nn.Module:
    """Loads the data and the model, then trains (lit_gpt.trainer.fit) with the next-token loss of `SFT`."""
    out_dir, checkpoint_dir = Path(hp["out_dir"]), Path(hp["checkpoint_dir"])
    budget = training.TimeBudget(hp["max_time"], t0)
    resume_dir = training.find_resume_dir(fabric, hp, out_dir, RESUME_INVARIANTS)

    train_data = SplitDataset(hp["data_dir"], "train")
    val_data = SplitDataset(hp["data_dir"], "val") if shard_paths(hp["data_dir"], "val") else None
    config = Config.from_checkpoint(checkpoint_dir)
    lengths = train_data.lengths()
    max_seq_length = min(hp["max_seq_length"] or int(lengths.max()), config.block_size)
    n_truncated = int((lengths > max_seq_length).sum())
    if n_truncated:
        fabric.print(f"{n_truncated} training examples are longer than {max_seq_length} tokens and get truncated")
    task = SFT(fabric, hp, train_data, val_data, max_seq_length)
    max_steps = trainer.count_steps(fabric, task, hp, f"{len(train_data)} training examples")

    t_load = time.perf_counter()
    model = trainer.build_lora_model(fabric, hp, config, max_seq_length)
    if hp["neftune_alpha"]:
        training.add_neftune_hook(model, hp["neftune_alpha"])
    n_trainable = num_parameters(model, requires_grad=True)
    n_frozen = sum(p.numel() * (2 if p.dtype == torch.uint8 else 1) for p in model.parameters() if not p.requires_grad)
    fabric.print(
        f"loaded {checkpoint_dir} in {time.perf_counter() - t_load:.1f}s"
        f"{' (' + hp['quantize'] + ')' if hp['quantize'] else ''}: {n_trainable:,} trainable LoRA parameters, "
        f"{n_frozen:,} frozen"
    )
    model, opt = trainer.setup_training(fabric, hp, model)
    task.model = model
    task.tokenizer = load_tokenizer(checkpoint_dir)
    task.flops_per_token = training.lora_flops_per_token(n_frozen, n_trainable, config.n_layer, config.n_embd,
                                                         max_seq_length)

    state, initial, final = trainer.fit(fabric, model, opt, task, hp, max_steps, resume_dir, budget, "lora")
    if fabric.global_rank == 0:
        guide = out_dir / FINAL_LORA_FILENAME
        link = guide.with_name(f".{guide.name}.tmp")
        link.unlink(missing_ok=True)
        os.link(out_dir / "final" / LORA_FILENAME, link)
        os.replace(link, guide)
        summary = f"done: {state['step']} steps in {budget.elapsed():.0f}s"
        if initial is not None and final is not None:
            summary += f"; val loss {initial['val_loss']:.4f} -> {final['val_loss']:.4f}"
        fabric.print(f"{summary}; LoRA weights in {out_dir / 'final' / LORA_FILENAME}")
    return getattr(model, "module", model)


class SFT:
    """Supervised finetuning for lit_gpt.trainer.fit: length-grouped (or packed) batches of examples, the summed
    next-token loss over a step's targets, the validation loss and a sample generation."""

    def __init__(self, fabric, hp: dict, train_data: SplitDataset, val_data: Optional[SplitDataset],
                 max_seq_length: int) -> None:
        self.fabric, self.hp, self.train_data, self.val_data = fabric, hp, train_data, val_data
        self.lengths, self.max_seq_length = train_data.lengths(), max_seq_length
        self.val_batches = make_val_batches(val_data, hp["micro_batch_size"], hp["eval_iters"], max_seq_length)
        self.peak = training.peak_flops(fabric.device)
        self.model = self.tokenizer = self.flops_per_token = None  # set once the model is built

    def batches(self, generator: torch.Generator) -> list:
        if self.hp["packing"]:
            return packed_batches(self.lengths, self.hp["micro_batch_size"], self.max_seq_length, generator)
        return length_grouped_batches(self.lengths, self.hp["micro_batch_size"], generator)

    def collate(self, batch: list) -> dict[str, torch.Tensor]:
        if self.hp["packing"]:
            return pack_collate([[truncate(self.train_data[i], self.max_seq_length) for i in b] for b in batch])
        return pad_collate([truncate(self.train_data[i], self.max_seq_length) for i in batch])

    def step(self, micro_batches: list) -> tuple[float, int]:
        """(the step's mean loss per target token, tokens over all ranks): the loss of every micro-batch is divided
        by the step's target count, so accumulated gradients are those of the whole step's mean."""
        fabric, model = self.fabric, self.model
        micro = [self.collate(b) for b in micro_batches]
        n_target = sum(int((m["targets"] != -100).sum()) for m in micro)
        step_loss = 0.0
        for i, mb in enumerate(micro):
            with fabric.no_backward_sync(model, enabled=i < len(micro) - 1):
                loss = loss_sum(model, mb, fabric.device) / max(n_target, 1)
                fabric.backward(loss)
            step_loss += loss.item()
        return step_loss, sum(int(m["num_tokens"]) for m in micro) * self.fabric.world_size

    def metrics(self, records: list, seconds: float, lr: float) -> tuple[dict, dict]:
        tps = sum(n for _, n in records) / max(seconds, 1e-9)
        device = self.fabric.device
        metrics = {"loss": sum(loss for loss, _ in records) / len(records), "tokens_per_sec": tps,
                   "tflops": tps * self.flops_per_token / 1e12,
                   "peak_memory_gb": training.peak_memory_bytes(device) / 1e9}
        if self.peak:
            metrics["mfu"] = tps * self.flops_per_token / (self.peak * self.fabric.world_size)
        return metrics, {"loss": f"{metrics['loss']:.4f}", "lr": f"{lr:.2e}", "tok_s": f"{tps:.0f}"}

    def validate(self, step: int) -> Optional[dict]:
        if not self.val_batches:
            return None
        t = time.perf_counter()
        loss = validate(self.model, self.val_batches, self.fabric.device)
        if self.fabric.global_rank == 0:
            raw = getattr(self.model, "module", self.model)
            sample = sample_generation(raw, self.val_data, self.tokenizer, self.hp["eval_max_new_tokens"],
                                       self.fabric.device)
            tqdm.write(f"step {step}: val loss {loss:.4f} ({time.perf_counter() - t:.1f}s)\n  sample: {sample!r}")
        self.fabric.barrier()
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50))}


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


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    cli(setup, as_positional=False)
