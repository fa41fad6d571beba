"""Our LoRA weights as a PEFT adapter (adapter_config.json + adapter_model.safetensors) for the HF export.

`peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_export), adapter_dir)` then computes what
our unmerged LoRA model computes. The HF module of each of our LoRA layers comes from the weight-name tables of
lit_gpt.families, and each layer's parts (which rows of the fused QKV have an update) from lit_gpt.lora itself:
- a plain layer (projection, MLP, head) is one PEFT module with the same A and B;
- a fused QKV exported as separate q/k/v projections (Llama, Mistral, Qwen2, Phi, StableLM) gives each enabled
  part its own PEFT module with that part's rank-r A and its rows of B;
- a fused QKV that stays fused in HF ("grouped": GPT-NeoX, Falcon) becomes one module of rank n_parts * r whose
  B is block-diagonal over the parts, rows reordered to the HF layout; its rank and alpha (keeping alpha / r)
  go into PEFT's `rank_pattern` / `alpha_pattern`.
PEFT scales by lora_alpha / r, as we do.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from lit_gpt.config import Config
from lit_gpt.families import family, hf_architecture
from lit_gpt.families.base import GROUPED, K, Q, V
from lit_gpt.hf_weights import lit_to_grouped
from lit_gpt.lora import LoRAConfig, LoRALinear, inject_lora
from lit_gpt.utils import UserError

ADAPTER_CONFIG_FILENAME = "adapter_config.json"
ADAPTER_WEIGHTS_FILENAME = "adapter_model.safetensors"
PREFIX = "base_model.model."  # PeftModel wraps a LoraModel that wraps the transformers model


def lora_layout(config: Config, lora: LoRAConfig) -> dict[str, tuple[list[int], list[bool]]]:
    """{our module name: (parts, enabled)} of every layer `inject_lora` wraps (built on the meta device)."""
    from lit_gpt.model import GPT

    with torch.device("meta"):
        model = inject_lora(GPT(config), lora)
    return {n: (m.parts, m.enabled) for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _module_targets(config: Config, arch: str) -> dict[str, list[tuple[str, Optional[str]]]]:
    """{our module name: [(HF module name, piece), ...]} from the architecture's weight table."""
    out: dict[str, list[tuple[str, Optional[str]]]] = {}
    fam = family(arch)
    for hf_pattern, target in fam.export_table(config).items():
        lit_pattern, piece = (target, None) if isinstance(target, str) else target
        if not hf_pattern.endswith(".weight"):
            continue
        layers = range(config.n_layer) if "{l}" in hf_pattern else [None]
        for layer in layers:
            lit = lit_pattern.format(l=layer).removesuffix(".weight")
            hf = hf_pattern.format(l=layer).removesuffix(".weight")
            out.setdefault(lit, []).append((fam.module_renames.get(hf, hf), piece))
    return out


def convert_lora_to_peft(
    lora_weights: dict[str, torch.Tensor], config: Config, lora: LoRAConfig, architecture: Optional[str] = None,
    base_model_name_or_path: Optional[str] = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(adapter weights under PEFT's names, adapter_config.json dict) for our LoRA state dict."""
    arch = architecture or hf_architecture(config)
    layout = lora_layout(config, lora)
    targets = _module_targets(config, arch)
    expected = {f"{n}.lora_{x}" for n in layout for x in "AB"}
    if set(lora_weights) != expected:
        missing, extra = sorted(expected - set(lora_weights))[:3], sorted(set(lora_weights) - expected)[:3]
        raise UserError(f"the LoRA weights do not match the run's LoRA config (missing {missing}, unexpected {extra})")
    r = lora.r
    weights: dict[str, torch.Tensor] = {}
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    for lit, (parts, enabled) in layout.items():
        a, b = lora_weights[f"{lit}.lora_A"].float(), lora_weights[f"{lit}.lora_B"].float()
        if lit not in targets:
            raise UserError(f"{arch} has no module for our LoRA layer {lit}")
        for hf, piece in targets[lit]:
            if piece is None:
                pairs = [(hf, a, b)]
            elif piece == GROUPED:
                # one module: rank n_on * r, B block-diagonal over the enabled parts, rows in HF's grouped layout
                n_on = sum(enabled)
                full = b.new_zeros(sum(parts), n_on * r)
                i, row, start = 0, 0, 0
                for size, on in zip(parts, enabled):
                    if on:
                        full[start:start + size, i * r:(i + 1) * r] = b[row:row + size]
                        i, row = i + 1, row + size
                    start += size
                pairs = [(hf, a, lit_to_grouped(full, config))]
                leaf = hf.rsplit(".", 1)[-1]
                rank_pattern[leaf], alpha_pattern[leaf] = n_on * r, lora.alpha * n_on
            else:
                k = (Q, K, V).index(piece)
                if not enabled[k]:
                    continue
                i = sum(enabled[:k])
                row = sum(p for p, e in zip(parts[:k], enabled[:k]) if e)
                pairs = [(hf, a[i * r:(i + 1) * r], b[row:row + parts[k]])]
            for name, pa, pb in pairs:
                weights[f"{PREFIX}{name}.lora_A.weight"] = pa.contiguous().clone()
                weights[f"{PREFIX}{name}.lora_B.weight"] = pb.contiguous().clone()
    leaves = sorted({k[len(PREFIX):].removesuffix(".lora_A.weight").rsplit(".", 1)[-1]
                     for k in weights if k.endswith(".lora_A.weight")})
    selected = {k[len(PREFIX):].removesuffix(".lora_A.weight") for k in weights if k.endswith(".lora_A.weight")}
    every = {hf for hfs in targets.values() for hf, _ in hfs}
    # PEFT matches a target name against the end of each module name: every match must have weights here.
    stray = [m for m in every - selected if m.rsplit(".", 1)[-1] in leaves]
    target_modules: Any = leaves
    if stray:
        target_modules = "|".join(sorted(selected)).replace(".", r"\.")
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": target_modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "modules_to_save": None,
    }
    return weights, adapter_config
