"""Training-step throughput and peak memory: our LoRA / QLoRA against HF transformers + peft, same shape; our DPO
step (finetune/dpo.py's) against TRL's DPOTrainer (`--modes dpo`).

    python bench/finetune.py                                   # CPU, SmolLM2-135M shape, fp32
    python bench/finetune.py --device cuda --shape mistral-7b --seq_len 2048 --batch_size 1   # a GPU, bf16
    python bench/finetune.py --device cuda --shape llama-2-13b --seq_len 2048 --batch_size 1 --gradient_checkpointing

Both sides get random weights of the same shape, the same LoRA (r=8, alpha=16, dropout 0.05 on query and value),
the same batch of random tokens, AdamW on the LoRA weights, and a full step (forward, loss over all positions,
backward, optimizer step). Contenders alternate round by round in one process so machine load hits them alike;
tokens/s is the median over rounds. Peak memory: on CUDA, what a contender allocates for its model and its steps;
on CPU, the peak RSS of a fresh subprocess that builds the contender and runs two steps.
A DPO step: `--batch_size` pairs of `--seq_len` tokens a side (prompt `--prompt_fraction`), the policy's forward and
backward on both sides, the reference's forward with the adapters switched off (TRL: PEFT's disabled adapter), the
sigmoid loss (beta 0.1) and AdamW; TRL's step is its own `DPOTrainer._compute_loss`, on the same LoRA.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lit_gpt.config import Config
from lit_gpt.lora import LoRAConfig, inject_lora, mark_only_lora_as_trainable
from lit_gpt.quantize import build_model, quantized_linear
from lit_gpt.training import peak_rss_bytes


wd = Path(__file__).parent.parent.resolve()
# finetune/lora.py's loss (this file's own name shadows the `finetune` dir, so load it by path)
_spec = importlib.util.spec_from_file_location("finetune_lora", wd / "finetune" / "lora.py")
_finetune_lora = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_finetune_lora)
loss_sum = _finetune_lora.loss_sum

SHAPES = {"smollm2-135m": "SmolLM2-135M", "mistral-7b": "Mistral-7B-v0.1", "llama-2-13b": "Llama-2-13b-hf",
          "qwen-14b": "Qwen-14B", "tiny-llama": "tiny-llama"}
LORA = dict(r=8, alpha=16, dropout=0.05)
BETA = 0.1


def hf_config(config: Config):
    """The HF config of the same shape (Qwen-1 has the Qwen2 layout: bias on q/k/v only)."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        vocab_size=config.padded_vocab_size, hidden_size=config.n_embd, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head, num_key_value_heads=config.n_query_groups,
        rms_norm_eps=config.norm_eps, rope_theta=config.rope_base, max_position_embeddings=config.block_size,
        tie_word_embeddings=config.tie_embeddings, head_dim=config.head_size,
    )
    if config.mlp_class_name != "LLaMAMLP" or config.norm_class_name != "RMSNorm":
        raise SystemExit(f"error: {config.name} is not a Llama-style shape")
    if config.attn_bias:
        return Qwen2Config(**common, use_sliding_window=False)
    if config.sliding_window_size:
        return MistralConfig(**common, sliding_window=config.sliding_window_size)
    return LlamaConfig(**common, attention_bias=False, mlp_bias=False)


def build_ours(config: Config, device: str, dtype: torch.dtype, quantize: str | None, ckpt: bool = False):
    torch.manual_seed(0)
    model = build_model(config, None, device, dtype, quantize)
    inject_lora(model, LoRAConfig(**LORA, query=True, value=True))
    mark_only_lora_as_trainable(model)
    model.gradient_checkpointing = ckpt
    return model.train()


def build_hf(config: Config, device: str, dtype: torch.dtype, quantize: str | None, ckpt: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    hf_cfg = hf_config(config)
    hf_cfg._attn_implementation = "sdpa"
    with torch.device("meta" if quantize else device):
        model = AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype)
    if quantize:
        # The same bitsandbytes Linear4bit layers HF's BitsAndBytesConfig would create, built layer by layer
        # (from_pretrained would need the random 7B-14B weights written to disk first).
        for name, module in list(model.named_modules()):
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                w = torch.empty(module.weight.shape, dtype=dtype, device=device).normal_(0, 0.02)
                b = torch.zeros(module.out_features, dtype=dtype, device=device) if module.bias is not None else None
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, quantized_linear(w, b, quantize, device, dtype))
        # the embeddings, norms and head are still on the meta device
        for module in model.modules():
            for pname, p in list(module.named_parameters(recurse=False)):
                if p.is_meta:
                    t = torch.empty(p.shape, dtype=dtype, device=device)
                    t.normal_(0, 0.02) if p.ndim == 2 else t.fill_(1.0)
                    setattr(module, pname, torch.nn.Parameter(t, requires_grad=False))
        if model.config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        with torch.device(device):
            model.model.rotary_emb = type(model.model.rotary_emb)(hf_cfg)
        meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
        assert not meta, f"left on the meta device: {meta[:3]}"
        model.is_loaded_in_4bit = True
    model.config.use_cache = False
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(
        model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    return model.train()


def build_trl(config: Config, device: str, dtype: torch.dtype, quantize: str | None, ckpt: bool = False):
    """TRL's DPOTrainer on the HF model with the same LoRA (its reference: the model with the adapter disabled)."""
    import transformers
    from datasets import Dataset
    from peft import LoraConfig
    from tokenizers import Tokenizer, models
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    hf_cfg = hf_config(config)
    hf_cfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype)
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1}, unk_token="<pad>")),
        pad_token="<pad>", eos_token="<eos>")
    args = DPOConfig(output_dir="/tmp/bench_trl", beta=BETA, loss_type=["sigmoid"], report_to="none",
                     use_cpu=device == "cpu", bf16=dtype == torch.bfloat16, gradient_checkpointing=ckpt)
    trainer = DPOTrainer(model=model, args=args, processing_class=tok,
                         train_dataset=Dataset.from_dict({"prompt": ["a"], "chosen": [" b"], "rejected": [" c"]}),
                         peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainer.model.train()
    return trainer


def make_dpo_step(name: str, model, batch: torch.Tensor, prompt_fraction: float):
    """One DPO step on `batch` (2B rows: chosen, then rejected; targets -100 on the prompt)."""
    from lit_gpt.preference import preference_loss, reference_logps, sequence_logps

    inputs, targets = batch[:, :-1], batch[:, 1:].clone()
    targets[:, : int(prompt_fraction * targets.shape[1])] = -100
    if name == "ours":
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        data = {"input_ids": inputs, "targets": targets}

        def step() -> None:
            logps, n = sequence_logps(model, data, inputs.device)
            loss = preference_loss("sigmoid", BETA, logps, n, reference_logps(model, data, inputs.device))[0].mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step
    trainer = model
    opt = torch.optim.AdamW([p for p in trainer.model.parameters() if p.requires_grad], lr=1e-4)
    completion = torch.cat((torch.zeros_like(inputs[:, :1]), (targets != -100).long()), dim=1)  # token t is a reply
    data = {"input_ids": batch, "attention_mask": torch.ones_like(batch), "completion_mask": completion}

    def step() -> None:
        trainer._compute_loss(trainer.model, data, return_outputs=False).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def make_step(name: str, model, batch: torch.Tensor, prompt_fraction: float = 0.0):
    """One training step. The first `prompt_fraction` of each sequence is prompt (target -100), as in instruction
    data: our step runs the LM head only where there is a target (as finetune/lora.py does), HF computes every
    position's logits and ignores the masked ones (as its models' loss does)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    inputs, targets = batch[:, :-1], batch[:, 1:].clone()
    targets[:, : int(prompt_fraction * targets.shape[1])] = -100

    def step() -> None:
        if name == "ours":
            n = int((targets != -100).sum())
            loss = loss_sum(model, {"input_ids": inputs, "targets": targets}, inputs.device) / n
        else:
            logits = model(input_ids=inputs).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def probe_memory(args) -> None:
    """Subprocess mode: build one contender, run two steps, print the peak RSS (CPU)."""
    config = Config.from_name(SHAPES[args.shape])
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    name, mode = args.probe.split(":")
    quantize = None if mode in ("lora", "dpo") else args.quantize
    (_, build), = [(n, b) for n, b in contenders_of(mode) if n.startswith(name)]
    model = build(config, args.device, dtype, quantize, args.gradient_checkpointing)
    rows = args.batch_size * (2 if mode == "dpo" else 1)
    batch = torch.randint(0, config.vocab_size, (rows, args.seq_len + 1), device=args.device)
    step = (make_dpo_step if mode == "dpo" else make_step)(name, model, batch, args.prompt_fraction)
    for _ in range(2):
        step()
    print(json.dumps({"peak_rss_bytes": peak_rss_bytes()}))


def contenders_of(mode: str) -> tuple:
    return (("ours", build_ours), ("trl", build_trl)) if mode == "dpo" else (("ours", build_ours), ("hf+peft", build_hf))


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the comparison (argv: the command-line flags, default sys.argv) and returns one row per mode and
    contender: mode, contender, tokens_per_s (median), peak_memory_bytes (None when not measured)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median counts")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per contender per round")
    parser.add_argument("--modes", default="lora,qlora", help="comma-separated: lora, qlora, dpo")
    parser.add_argument("--quantize", default="bnb.nf4", help="QLoRA mode for both sides")
    parser.add_argument("--prompt_fraction", type=float, default=0.0,
                        help="share of each sequence that is prompt (no loss); GSM8K chat data: about 0.4")
    parser.add_argument("--gradient_checkpointing", action="store_true",
                        help="both sides recompute activations (13B/14B shapes at seq 2048 on an 80 GB GPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no_memory_probe", action="store_true", help="CPU: skip the peak-RSS subprocesses")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's table of one step of each contender (ops by self time)")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        probe_memory(args)
        return []
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU")

    config = Config.from_name(SHAPES[args.shape])
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    print(f"shape {args.shape} ({config.name}), device {args.device}, {dtype}, batch {args.batch_size} x "
          f"{args.seq_len} tokens ({args.prompt_fraction:.0%} prompt), {torch.get_num_threads()} threads, "
          f"LoRA r={LORA['r']} on q,v")
    results = []
    for mode in args.modes.split(","):
        quantize = None if mode in ("lora", "dpo") else args.quantize
        rows = args.batch_size * (2 if mode == "dpo" else 1)  # DPO: a chosen and a rejected row per pair
        batch = torch.randint(0, config.vocab_size, (rows, args.seq_len + 1), device=args.device)
        contenders, memory = {}, {}
        for name, build in contenders_of(mode):
            if args.device == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
                before = torch.cuda.memory_allocated()
            model = build(config, args.device, dtype, quantize, args.gradient_checkpointing)
            step = (make_dpo_step if mode == "dpo" else make_step)(name, model, batch, args.prompt_fraction)
            step()  # warm-up (allocator, kernels, optimizer state)
            sync(args.device)
            if args.device == "cuda":
                # this contender's model + its step's peak, whatever else is resident
                resident = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                step()
                sync(args.device)
                memory[name] = torch.cuda.max_memory_allocated() - resident + (resident - before)
            contenders[name] = step
            if args.profile:
                from torch.profiler import profile

                with profile() as prof:
                    step()
                    sync(args.device)
                print(f"  {mode} {name}: one step, ops by self time")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        times = {name: [] for name in contenders}
        for r in range(args.rounds):
            for name, step in contenders.items():
                sync(args.device)
                t = time.perf_counter()
                for _ in range(args.steps):
                    step()
                sync(args.device)
                times[name].append((time.perf_counter() - t) / args.steps)
            print(f"  {mode} round {r + 1}: " + ", ".join(f"{n} {rows * args.seq_len / t[-1]:.0f} tok/s"
                                                          for n, t in times.items()))
        names = list(contenders)
        del contenders, model, step
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
        if args.device == "cpu" and not args.no_memory_probe:
            for name in names:
                cmd = [sys.executable, __file__, "--probe", f"{'hf' if name == 'hf+peft' else name}:{mode}",
                       "--shape", args.shape, "--device", "cpu", "--batch_size", str(args.batch_size),
                       "--seq_len", str(args.seq_len), "--quantize", args.quantize, "--threads", str(args.threads)]
                cmd += ["--gradient_checkpointing"] if args.gradient_checkpointing else []
                cmd += ["--prompt_fraction", str(args.prompt_fraction)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                memory[name] = json.loads(out.strip().splitlines()[-1])["peak_rss_bytes"]
        other = [n for n in names if n != "ours"][0]
        for name in ("ours", other):
            med = statistics.median(times[name])
            results.append((mode if not quantize else f"qlora ({quantize})", name, rows * args.seq_len / med,
                            memory.get(name)))
        speedup = statistics.median(times[other]) / statistics.median(times["ours"])
        print(f"  {mode}: ours / {other} speed = {speedup:.2f}x")

    print("\n| mode | contender | tokens/s (median) | peak memory |")
    print("|---|---|---:|---:|")
    for mode, name, tps, mem in results:
        mem_s = f"{mem / 2**30:.2f} GiB" if mem else "n/a"
        print(f"| {mode} | {name} | {tps:,.0f} | {mem_s} |")
    return [dict(mode=mode, contender=name, tokens_per_s=tps, peak_memory_bytes=mem) for mode, name, tps, mem in results]


if __name__ == "__main__":
    main()
