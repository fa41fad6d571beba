"""Hugging Face checkpoints <-> lit_gpt.model.GPT: config mapping, weight-name tables and conversion both ways.

Each family has one table from the Hugging Face weight name to ours (`{l}` stands for the layer index); the same
table drives both directions. A value is either our name, or (our name, piece) where the piece says how the
Hugging Face tensor relates to our fused QKV weight, laid out [all query heads | all key heads | all value heads]:
- "q" / "k" / "v": a separate projection that is one third of ours (Llama, Mistral, Qwen2, Phi, StableLM);
- "grouped": a fused projection interleaved per query group, [q_1..q_r, k, v] for each of the n_query_groups
  groups (GPT-NeoX is the case r = 1, i.e. per head; Falcon-7b is one group; Falcon-40b is n_kv_heads groups).
Qwen-1's fused `c_attn` already has our layout, so it is a plain rename.

Conversion from Hugging Face reads the weight files lazily (one shard at a time, one tensor at a time) and keeps
separate q/k/v pieces only until all three of a layer have arrived, so a checkpoint converts in about one copy of
its weights in memory.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch

from lit_gpt.config import Config
from lit_gpt.utils import UserError

Q, K, V, GROUPED = "q", "k", "v", "grouped"

########################
# Weight-name tables: Hugging Face name -> lit name
########################
LLAMA = {  # LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
    "model.embed_tokens.weight": "transformer.wte.weight",
    "model.layers.{l}.input_layernorm.weight": "transformer.h.{l}.norm_1.weight",
    "model.layers.{l}.self_attn.q_proj.weight": ("transformer.h.{l}.attn.attn.weight", Q),
    "model.layers.{l}.self_attn.k_proj.weight": ("transformer.h.{l}.attn.attn.weight", K),
    "model.layers.{l}.self_attn.v_proj.weight": ("transformer.h.{l}.attn.attn.weight", V),
    "model.layers.{l}.self_attn.q_proj.bias": ("transformer.h.{l}.attn.attn.bias", Q),
    "model.layers.{l}.self_attn.k_proj.bias": ("transformer.h.{l}.attn.attn.bias", K),
    "model.layers.{l}.self_attn.v_proj.bias": ("transformer.h.{l}.attn.attn.bias", V),
    "model.layers.{l}.self_attn.o_proj.weight": "transformer.h.{l}.attn.proj.weight",
    "model.layers.{l}.self_attn.o_proj.bias": "transformer.h.{l}.attn.proj.bias",
    "model.layers.{l}.post_attention_layernorm.weight": "transformer.h.{l}.norm_2.weight",
    "model.layers.{l}.mlp.gate_proj.weight": "transformer.h.{l}.mlp.fc_1.weight",
    "model.layers.{l}.mlp.gate_proj.bias": "transformer.h.{l}.mlp.fc_1.bias",
    "model.layers.{l}.mlp.up_proj.weight": "transformer.h.{l}.mlp.fc_2.weight",
    "model.layers.{l}.mlp.up_proj.bias": "transformer.h.{l}.mlp.fc_2.bias",
    "model.layers.{l}.mlp.down_proj.weight": "transformer.h.{l}.mlp.proj.weight",
    "model.layers.{l}.mlp.down_proj.bias": "transformer.h.{l}.mlp.proj.bias",
    "model.norm.weight": "transformer.ln_f.weight",
    "lm_head.weight": "lm_head.weight",
}

STABLELM = {  # StableLmForCausalLM: the Llama names, with LayerNorm (weight and bias) instead of RMSNorm
    **LLAMA,
    "model.layers.{l}.input_layernorm.bias": "transformer.h.{l}.norm_1.bias",
    "model.layers.{l}.post_attention_layernorm.bias": "transformer.h.{l}.norm_2.bias",
    "model.norm.bias": "transformer.ln_f.bias",
}

PHI = {  # PhiForCausalLM (phi-1_5, phi-2): parallel attention and MLP sharing one LayerNorm
    "model.embed_tokens.weight": "transformer.wte.weight",
    "model.layers.{l}.input_layernorm.weight": "transformer.h.{l}.norm_1.weight",
    "model.layers.{l}.input_layernorm.bias": "transformer.h.{l}.norm_1.bias",
    "model.layers.{l}.self_attn.q_proj.weight": ("transformer.h.{l}.attn.attn.weight", Q),
    "model.layers.{l}.self_attn.k_proj.weight": ("transformer.h.{l}.attn.attn.weight", K),
    "model.layers.{l}.self_attn.v_proj.weight": ("transformer.h.{l}.attn.attn.weight", V),
    "model.layers.{l}.self_attn.q_proj.bias": ("transformer.h.{l}.attn.attn.bias", Q),
    "model.layers.{l}.self_attn.k_proj.bias": ("transformer.h.{l}.attn.attn.bias", K),
    "model.layers.{l}.self_attn.v_proj.bias": ("transformer.h.{l}.attn.attn.bias", V),
    "model.layers.{l}.self_attn.dense.weight": "transformer.h.{l}.attn.proj.weight",
    "model.layers.{l}.self_attn.dense.bias": "transformer.h.{l}.attn.proj.bias",
    "model.layers.{l}.mlp.fc1.weight": "transformer.h.{l}.mlp.fc.weight",
    "model.layers.{l}.mlp.fc1.bias": "transformer.h.{l}.mlp.fc.bias",
    "model.layers.{l}.mlp.fc2.weight": "transformer.h.{l}.mlp.proj.weight",
    "model.layers.{l}.mlp.fc2.bias": "transformer.h.{l}.mlp.proj.bias",
    "model.final_layernorm.weight": "transformer.ln_f.weight",
    "model.final_layernorm.bias": "transformer.ln_f.bias",
    "lm_head.weight": "lm_head.weight",
    "lm_head.bias": "lm_head.bias",
}

GPT_NEOX = {  # GPTNeoXForCausalLM (Pythia, stablelm-alpha)
    "gpt_neox.embed_in.weight": "transformer.wte.weight",
    "gpt_neox.layers.{l}.input_layernorm.weight": "transformer.h.{l}.norm_1.weight",
    "gpt_neox.layers.{l}.input_layernorm.bias": "transformer.h.{l}.norm_1.bias",
    "gpt_neox.layers.{l}.post_attention_layernorm.weight": "transformer.h.{l}.norm_2.weight",
    "gpt_neox.layers.{l}.post_attention_layernorm.bias": "transformer.h.{l}.norm_2.bias",
    "gpt_neox.layers.{l}.attention.query_key_value.weight": ("transformer.h.{l}.attn.attn.weight", GROUPED),
    "gpt_neox.layers.{l}.attention.query_key_value.bias": ("transformer.h.{l}.attn.attn.bias", GROUPED),
    "gpt_neox.layers.{l}.attention.dense.weight": "transformer.h.{l}.attn.proj.weight",
    "gpt_neox.layers.{l}.attention.dense.bias": "transformer.h.{l}.attn.proj.bias",
    "gpt_neox.layers.{l}.mlp.dense_h_to_4h.weight": "transformer.h.{l}.mlp.fc.weight",
    "gpt_neox.layers.{l}.mlp.dense_h_to_4h.bias": "transformer.h.{l}.mlp.fc.bias",
    "gpt_neox.layers.{l}.mlp.dense_4h_to_h.weight": "transformer.h.{l}.mlp.proj.weight",
    "gpt_neox.layers.{l}.mlp.dense_4h_to_h.bias": "transformer.h.{l}.mlp.proj.bias",
    "gpt_neox.final_layer_norm.weight": "transformer.ln_f.weight",
    "gpt_neox.final_layer_norm.bias": "transformer.ln_f.bias",
    "embed_out.weight": "lm_head.weight",
}

_FALCON_COMMON = {
    "transformer.word_embeddings.weight": "transformer.wte.weight",
    "transformer.h.{l}.self_attention.query_key_value.weight": ("transformer.h.{l}.attn.attn.weight", GROUPED),
    "transformer.h.{l}.self_attention.query_key_value.bias": ("transformer.h.{l}.attn.attn.bias", GROUPED),
    "transformer.h.{l}.self_attention.dense.weight": "transformer.h.{l}.attn.proj.weight",
    "transformer.h.{l}.self_attention.dense.bias": "transformer.h.{l}.attn.proj.bias",
    "transformer.h.{l}.mlp.dense_h_to_4h.weight": "transformer.h.{l}.mlp.fc.weight",
    "transformer.h.{l}.mlp.dense_h_to_4h.bias": "transformer.h.{l}.mlp.fc.bias",
    "transformer.h.{l}.mlp.dense_4h_to_h.weight": "transformer.h.{l}.mlp.proj.weight",
    "transformer.h.{l}.mlp.dense_4h_to_h.bias": "transformer.h.{l}.mlp.proj.bias",
    "transformer.ln_f.weight": "transformer.ln_f.weight",
    "transformer.ln_f.bias": "transformer.ln_f.bias",
    "lm_head.weight": "lm_head.weight",
}
FALCON = {  # FalconForCausalLM, old decoder (falcon-7b): one input LayerNorm (a second one if not parallel)
    **_FALCON_COMMON,
    "transformer.h.{l}.input_layernorm.weight": "transformer.h.{l}.norm_1.weight",
    "transformer.h.{l}.input_layernorm.bias": "transformer.h.{l}.norm_1.bias",
    "transformer.h.{l}.post_attention_layernorm.weight": "transformer.h.{l}.norm_2.weight",
    "transformer.h.{l}.post_attention_layernorm.bias": "transformer.h.{l}.norm_2.bias",
}
FALCON_NEW = {  # FalconForCausalLM, new decoder (falcon-40b/180b) with its two parallel LayerNorms
    **_FALCON_COMMON,
    "transformer.h.{l}.ln_attn.weight": "transformer.h.{l}.norm_1.weight",
    "transformer.h.{l}.ln_attn.bias": "transformer.h.{l}.norm_1.bias",
    "transformer.h.{l}.ln_mlp.weight": "transformer.h.{l}.norm_2.weight",
    "transformer.h.{l}.ln_mlp.bias": "transformer.h.{l}.norm_2.bias",
}

QWEN = {  # QWenLMHeadModel (Qwen-1, trust_remote_code): c_proj(w1(x) * silu(w2(x))), so w2 is the gate
    "transformer.wte.weight": "transformer.wte.weight",
    "transformer.h.{l}.ln_1.weight": "transformer.h.{l}.norm_1.weight",
    "transformer.h.{l}.attn.c_attn.weight": "transformer.h.{l}.attn.attn.weight",
    "transformer.h.{l}.attn.c_attn.bias": "transformer.h.{l}.attn.attn.bias",
    "transformer.h.{l}.attn.c_proj.weight": "transformer.h.{l}.attn.proj.weight",
    "transformer.h.{l}.ln_2.weight": "transformer.h.{l}.norm_2.weight",
    "transformer.h.{l}.mlp.w2.weight": "transformer.h.{l}.mlp.fc_1.weight",
    "transformer.h.{l}.mlp.w1.weight": "transformer.h.{l}.mlp.fc_2.weight",
    "transformer.h.{l}.mlp.c_proj.weight": "transformer.h.{l}.mlp.proj.weight",
    "transformer.ln_f.weight": "transformer.ln_f.weight",
    "lm_head.weight": "lm_head.weight",
}

# `architectures[0]` of config.json -> the table its weights use.
ARCHITECTURE_TABLES = {
    "LlamaForCausalLM": LLAMA,
    "MistralForCausalLM": LLAMA,
    "Qwen2ForCausalLM": LLAMA,
    "StableLmForCausalLM": STABLELM,
    "PhiForCausalLM": PHI,
    "GPTNeoXForCausalLM": GPT_NEOX,
    "FalconForCausalLM": {**FALCON, **FALCON_NEW},
    "RWForCausalLM": {**FALCON, **FALCON_NEW},  # Falcon before its transformers integration
    "QWenLMHeadModel": QWEN,
}
# config.json files without `architectures` still name their `model_type`.
MODEL_TYPE_ARCHITECTURES = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
    "stablelm": "StableLmForCausalLM", "phi": "PhiForCausalLM", "gpt_neox": "GPTNeoXForCausalLM",
    "falcon": "FalconForCausalLM", "RefinedWeb": "FalconForCausalLM", "RefinedWebModel": "FalconForCausalLM",
    "qwen": "QWenLMHeadModel",
}
# Buffers some checkpoints store that are not weights (recomputed by the model).
IGNORED_WEIGHTS = re.compile(r"(rotary_emb\.inv_freq|attention\.masked_bias|attention\.bias)$")


def _brief(e: Exception) -> str:
    """An exception as one line, for error messages (torch's load errors run to many paragraphs)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _template(name: str) -> str:
    """'model.layers.12.mlp.up_proj.weight' -> 'model.layers.{l}.mlp.up_proj.weight'."""
    return re.sub(r"\.(\d+)\.", ".{l}.", name, count=1)


def _layer(name: str) -> Optional[int]:
    m = re.search(r"\.(\d+)\.", name)
    return int(m.group(1)) if m else None


########################
# Fused-QKV layouts
########################
def _qkv_sizes(config: Config) -> tuple[int, int, int]:
    hs = config.head_size
    return config.n_head * hs, config.n_query_groups * hs, config.n_query_groups * hs


def grouped_to_lit(t: torch.Tensor, config: Config) -> torch.Tensor:
    """[q_1..q_r, k, v] per query group -> [all q | all k | all v] (rows; works for weights and biases)."""
    ng, hs = config.n_query_groups, config.head_size
    r = config.n_head // ng
    t = t.reshape(ng, r + 2, hs, *t.shape[1:])
    q, k, v = t[:, :r], t[:, r], t[:, r + 1]
    return torch.cat([x.reshape(-1, *t.shape[3:]) for x in (q, k, v)])


def lit_to_grouped(t: torch.Tensor, config: Config) -> torch.Tensor:
    ng, hs = config.n_query_groups, config.head_size
    r = config.n_head // ng
    q, k, v = t.split(_qkv_sizes(config))
    rest = t.shape[1:]
    q = q.reshape(ng, r, hs, *rest)
    k = k.reshape(ng, 1, hs, *rest)
    v = v.reshape(ng, 1, hs, *rest)
    return torch.cat((q, k, v), dim=1).reshape(-1, *rest)


########################
# config.json <-> Config
########################
def _architecture(hf: dict) -> str:
    archs = hf.get("architectures") or []
    arch = archs[0] if archs else MODEL_TYPE_ARCHITECTURES.get(hf.get("model_type", ""))
    if arch not in ARCHITECTURE_TABLES:
        found = arch or hf.get("model_type") or "no `architectures` or `model_type`"
        raise UserError(
            f"config.json: unsupported architecture {found!r}; supported: {', '.join(sorted(ARCHITECTURE_TABLES))}"
        )
    return arch


def _rope(hf: dict, default_partial: float = 1.0) -> tuple[float, float, float]:
    """(rope_base, rotary_percentage, condense_ratio) from either the old flat keys or transformers 5's
    `rope_parameters`."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    base = hf.get("rope_theta", hf.get("rotary_emb_base", params.get("rope_theta", 10000.0)))
    partial = hf.get("partial_rotary_factor", hf.get("rotary_pct", params.get("partial_rotary_factor", default_partial)))
    kind = scaling.get("rope_type", scaling.get("type")) or params.get("rope_type") or "default"
    condense = 1.0
    if kind == "linear":
        condense = float(scaling.get("factor", params.get("factor", 1.0)))
    elif kind != "default":
        raise UserError(f"config.json: rope scaling {kind!r} is not supported (only linear)")
    return float(base), float(partial), condense


def _gelu_approximate(act: str) -> str:
    if act == "gelu":
        return "none"
    if act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return "tanh"
    raise UserError(f"config.json: activation {act!r} is not supported for this architecture")


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise UserError(f"config.json: {what} is not supported by lit_gpt.model")


def config_from_hf(hf: dict, name: str = "", hf_repo: Optional[dict] = None) -> Config:
    """The Config of a Hugging Face `config.json` (as a dict) for each supported architecture."""
    arch = _architecture(hf)
    get = hf.get
    vocab = get("vocab_size")
    common = dict(name=name, hf_config=hf_repo or {}, vocab_size=vocab, padded_vocab_size=vocab)

    if arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "StableLmForCausalLM"):
        base, partial, condense = _rope(hf, 0.25 if arch == "StableLmForCausalLM" else 1.0)
        n_head = get("num_attention_heads")
        _require(get("hidden_act", "silu") == "silu", f"hidden_act={get('hidden_act')!r}")
        c = dict(
            block_size=get("max_position_embeddings", 4096), n_layer=get("num_hidden_layers"), n_head=n_head,
            n_embd=get("hidden_size"), head_size=get("head_dim") or get("hidden_size") // n_head,
            n_query_groups=get("num_key_value_heads") or n_head, rotary_percentage=partial, rope_base=base,
            rope_condense_ratio=condense, mlp_class_name="LLaMAMLP", intermediate_size=get("intermediate_size"),
            tie_embeddings=bool(get("tie_word_embeddings", False)), parallel_residual=False, bias=False,
        )
        if arch == "StableLmForCausalLM":
            _require(not get("qk_layernorm", False), "qk_layernorm")
            parallel = bool(get("use_parallel_residual", False))
            c.update(norm_class_name="LayerNorm", norm_eps=get("layer_norm_eps", 1e-5),
                     attn_bias=bool(get("use_qkv_bias", False)), parallel_residual=parallel,
                     shared_attention_norm=parallel)
        else:
            c.update(norm_class_name="RMSNorm", norm_eps=get("rms_norm_eps", 1e-6))
        if arch == "LlamaForCausalLM":
            attn_b, mlp_b = bool(get("attention_bias", False)), bool(get("mlp_bias", False))
            _require(attn_b == mlp_b, "attention_bias != mlp_bias")
            c.update(bias=attn_b)
        if arch == "MistralForCausalLM":
            c.update(sliding_window_size=get("sliding_window"))
        if arch == "Qwen2ForCausalLM":
            c.update(attn_bias=True)
            if get("use_sliding_window", False) and get("sliding_window") is not None:
                # transformers slides the window only on layers >= max_window_layers
                _require(get("max_window_layers", 0) in (0, None) or get("max_window_layers") >= c["n_layer"],
                         "sliding window on some layers only")
                if not get("max_window_layers"):
                    c.update(sliding_window_size=get("sliding_window"))
        return Config(**common, **c)

    if arch == "PhiForCausalLM":
        _require(not get("qk_layernorm", False), "qk_layernorm")
        base, partial, condense = _rope(hf, 0.5)
        n_head = get("num_attention_heads")
        return Config(
            **common, block_size=get("max_position_embeddings", 2048), n_layer=get("num_hidden_layers"),
            n_head=n_head, n_embd=get("hidden_size"), n_query_groups=get("num_key_value_heads") or n_head,
            rotary_percentage=partial, rope_base=base, rope_condense_ratio=condense, parallel_residual=True,
            shared_attention_norm=True, bias=True, lm_head_bias=True, norm_class_name="LayerNorm",
            norm_eps=get("layer_norm_eps", 1e-5), mlp_class_name="GptNeoxMLP",
            gelu_approximate=_gelu_approximate(get("hidden_act", "gelu_new")),
            intermediate_size=get("intermediate_size"), tie_embeddings=bool(get("tie_word_embeddings", False)),
        )

    if arch == "GPTNeoXForCausalLM":
        _require(get("attention_bias", True), "attention_bias=false")
        base, partial, condense = _rope(hf, 0.25)
        return Config(
            **common, block_size=get("max_position_embeddings", 2048), n_layer=get("num_hidden_layers"),
            n_head=get("num_attention_heads"), n_embd=get("hidden_size"), rotary_percentage=partial,
            rope_base=base, rope_condense_ratio=condense, parallel_residual=bool(get("use_parallel_residual", True)),
            bias=True, norm_class_name="LayerNorm", norm_eps=get("layer_norm_eps", 1e-5),
            mlp_class_name="GptNeoxMLP", gelu_approximate=_gelu_approximate(get("hidden_act", "gelu")),
            intermediate_size=get("intermediate_size"), tie_embeddings=bool(get("tie_word_embeddings", False)),
        )

    if arch in ("FalconForCausalLM", "RWForCausalLM"):
        _require(not get("alibi", False), "alibi")
        n_head = get("num_attention_heads", get("n_head"))
        n_embd = get("hidden_size", get("n_embed"))
        new = bool(get("new_decoder_architecture", get("model_type") == "RefinedWeb"))  # falcon-40b before transformers
        parallel = bool(get("parallel_attn", True))
        if new:
            _require(parallel, "new_decoder_architecture without parallel_attn")
            groups = get("num_kv_heads", get("n_head_kv")) or n_head
            shared = get("num_ln_in_parallel_attn") == 1
        else:
            groups = 1 if get("multi_query", True) else n_head
            shared = parallel
        base, partial, condense = _rope(hf, 1.0)
        _require(partial == 1.0, "partial rotary")
        return Config(
            **common, block_size=get("max_position_embeddings", 2048), n_layer=get("num_hidden_layers", get("n_layer")),
            n_head=n_head, n_embd=n_embd, n_query_groups=groups, rotary_percentage=1.0, rope_base=base,
            rope_condense_ratio=condense, parallel_residual=new or parallel, shared_attention_norm=shared,
            bias=bool(get("bias", False)), norm_class_name="LayerNorm", norm_eps=get("layer_norm_epsilon", 1e-5),
            mlp_class_name="GptNeoxMLP", gelu_approximate=_gelu_approximate(get("activation", "gelu")),
            intermediate_size=get("ffn_hidden_size") or 4 * n_embd,
            tie_embeddings=bool(get("tie_word_embeddings", True)),
        )

    # QWenLMHeadModel (Qwen-1). Its config's intermediate_size counts both SwiGLU branches.
    base, partial, condense = _rope(hf, 1.0)
    n_head = get("num_attention_heads")
    return Config(
        **common, block_size=get("seq_length", get("max_position_embeddings", 8192)),
        n_layer=get("num_hidden_layers"), n_head=n_head, n_embd=get("hidden_size"),
        head_size=get("kv_channels") or get("hidden_size") // n_head, rotary_percentage=partial, rope_base=base,
        rope_condense_ratio=condense, parallel_residual=False, bias=not get("no_bias", True), attn_bias=True,
        norm_class_name="RMSNorm", norm_eps=get("layer_norm_epsilon", 1e-6), mlp_class_name="LLaMAMLP",
        intermediate_size=get("intermediate_size") // 2, tie_embeddings=bool(get("tie_word_embeddings", False)),
    )


def hf_architecture(config: Config) -> str:
    """The transformers architecture that can hold a model of this config (Qwen-1 is written as Qwen2)."""
    if config.mlp_class_name == "LLaMAMLP":
        if config.norm_class_name == "LayerNorm":
            return "StableLmForCausalLM"
        if config.attn_bias and not config.bias:
            return "Qwen2ForCausalLM"
        if config.sliding_window_size is not None:
            return "MistralForCausalLM"
        return "LlamaForCausalLM"
    if config.lm_head_bias:
        return "PhiForCausalLM"
    if config.bias and not config.shared_attention_norm:
        return "GPTNeoXForCausalLM"
    return "FalconForCausalLM"


def _unsupported(config: Config, arch: str, what: str) -> ValueError:
    return ValueError(f"{config.name or 'this model'}: {arch} cannot express {what}")


def hf_config_from(config: Config, architecture: Optional[str] = None) -> dict:
    """A config.json dict with which `transformers.AutoModelForCausalLM` builds the same model as `config`."""
    arch = architecture or hf_architecture(config)
    c = config
    rope = {"rope_theta": c.rope_base}
    if c.rope_condense_ratio != 1.0:
        rope_scaling = {"rope_type": "linear", "factor": c.rope_condense_ratio}
    else:
        rope_scaling = None
    out: dict = {
        "architectures": [arch], "vocab_size": c.padded_vocab_size, "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "max_position_embeddings": c.block_size,
        "tie_word_embeddings": c.tie_embeddings, "rope_scaling": rope_scaling, **rope,
    }
    if c.head_size * c.n_head != c.n_embd and arch not in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"):
        raise _unsupported(c, arch, f"head_size={c.head_size} with n_embd/n_head={c.n_embd // c.n_head}")
    if arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "StableLmForCausalLM"):
        if c.parallel_residual and arch != "StableLmForCausalLM":
            raise _unsupported(c, arch, "parallel_residual")
        out.update(intermediate_size=c.intermediate_size, num_key_value_heads=c.n_query_groups,
                   head_dim=c.head_size, hidden_act="silu")
        if arch == "StableLmForCausalLM":
            if c.bias or (c.parallel_residual and not c.shared_attention_norm):
                raise _unsupported(c, arch, "these biases or norms")
            out.update(model_type="stablelm", layer_norm_eps=c.norm_eps, partial_rotary_factor=c.rotary_percentage,
                       use_qkv_bias=c.attn_bias, use_parallel_residual=c.parallel_residual, qk_layernorm=False)
            del out["head_dim"]
        else:
            if c.rotary_percentage != 1.0:
                raise _unsupported(c, arch, "partial rotary")
            out.update(rms_norm_eps=c.norm_eps)
        if arch == "LlamaForCausalLM":
            if c.attn_bias and not c.bias:
                raise _unsupported(c, arch, "a bias on QKV only")
            out.update(model_type="llama", attention_bias=c.bias, mlp_bias=c.bias)
        elif arch == "MistralForCausalLM":
            if c.bias or c.attn_bias:
                raise _unsupported(c, arch, "biases")
            out.update(model_type="mistral", sliding_window=c.sliding_window_size)
        elif arch == "Qwen2ForCausalLM":
            if c.bias or not c.attn_bias:
                raise _unsupported(c, arch, "other biases than on QKV")
            window = c.sliding_window_size
            out.update(model_type="qwen2", use_sliding_window=window is not None, sliding_window=window,
                       max_window_layers=0 if window is not None else c.n_layer)
        return out
    if arch == "PhiForCausalLM":
        if not (c.bias and c.lm_head_bias and c.parallel_residual and c.shared_attention_norm):
            raise _unsupported(c, arch, "this residual/bias layout")
        out.update(model_type="phi", intermediate_size=c.intermediate_size, num_key_value_heads=c.n_query_groups,
                   partial_rotary_factor=c.rotary_percentage, layer_norm_eps=c.norm_eps, qk_layernorm=False,
                   hidden_act="gelu_new" if c.gelu_approximate == "tanh" else "gelu", resid_pdrop=0.0,
                   embd_pdrop=0.0)
        return out
    if arch == "GPTNeoXForCausalLM":
        if not c.bias or c.shared_attention_norm or c.n_query_groups != c.n_head:
            raise _unsupported(c, arch, "this bias/norm/query-group layout")
        out.update(model_type="gpt_neox", intermediate_size=c.intermediate_size, rotary_pct=c.rotary_percentage,
                   rotary_emb_base=c.rope_base, layer_norm_eps=c.norm_eps, use_parallel_residual=c.parallel_residual,
                   hidden_act="gelu_new" if c.gelu_approximate == "tanh" else "gelu", attention_bias=True)
        del out["rope_theta"]
        return out
    if arch == "FalconForCausalLM":
        if c.rotary_percentage != 1.0 or c.lm_head_bias or c.head_size * c.n_head != c.n_embd:
            raise _unsupported(c, arch, "partial rotary, an lm_head bias or a head size other than n_embd/n_head")
        out.update(model_type="falcon", bias=c.bias, layer_norm_epsilon=c.norm_eps, alibi=False,
                   ffn_hidden_size=c.intermediate_size,
                   activation="gelu_pytorch_tanh" if c.gelu_approximate == "tanh" else "gelu")
        if not c.parallel_residual:
            if c.n_query_groups not in (1, c.n_head):
                raise _unsupported(c, arch, "grouped queries without parallel residual")
            out.update(new_decoder_architecture=False, parallel_attn=False, multi_query=c.n_query_groups == 1,
                       num_kv_heads=c.n_query_groups)
        elif c.shared_attention_norm and c.n_query_groups == 1:
            out.update(new_decoder_architecture=False, parallel_attn=True, multi_query=True, num_kv_heads=1)
        else:
            out.update(new_decoder_architecture=True, parallel_attn=True, num_kv_heads=c.n_query_groups,
                       num_ln_in_parallel_attn=1 if c.shared_attention_norm else 2)
        return out
    raise ValueError(f"cannot export to architecture {arch!r}")


def _export_table(config: Config, arch: str) -> dict:
    if arch != "FalconForCausalLM":
        return ARCHITECTURE_TABLES[arch]
    new = hf_config_from(config, arch)["new_decoder_architecture"] and not config.shared_attention_norm
    return FALCON_NEW if new else FALCON


########################
# Reading Hugging Face weight files lazily
########################
def hf_weight_files(checkpoint_dir: Path) -> list[Path]:
    """The weight files of a Hugging Face checkpoint: safetensors if present, else PyTorch .bin (sharded via the
    index json when there is one)."""
    for index_name, single, pattern in (
        ("model.safetensors.index.json", "model.safetensors", "*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch_model*.bin"),
    ):
        index = checkpoint_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UserError(f"{index}: not a weight index json ({_brief(e)})") from e
            files = [checkpoint_dir / f for f in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise UserError(f"{index} lists {missing[0]}, which is missing (download incomplete?)")
            return files
        if (checkpoint_dir / single).is_file():
            return [checkpoint_dir / single]
        files = sorted(p for p in checkpoint_dir.glob(pattern) if not p.name.startswith("consolidated"))
        if files:
            return files
    raise UserError(f"{checkpoint_dir}: no Hugging Face weights (*.safetensors or pytorch_model*.bin) found")


def iter_hf_weights(files: Iterable[Path], progress: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of the files, reading one file and one tensor at a time."""
    from safetensors import safe_open
    from tqdm import tqdm

    files = list(files)
    for path in tqdm(files, desc="converting", unit="file", disable=not progress or len(files) < 2):
        if path.suffix == ".safetensors":
            try:
                f = safe_open(str(path), framework="pt")
                names = list(f.keys())
            except Exception as e:
                raise UserError(f"{path}: not a readable safetensors file ({_brief(e)})") from e
            for name in names:
                yield name, f.get_tensor(name)
            del f
        else:
            try:
                try:
                    sd = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
                except RuntimeError as e:
                    if "mmap" not in str(e):
                        raise
                    # Files written before torch 1.6 (not zip archives) cannot be memory-mapped.
                    sd = torch.load(path, weights_only=True, map_location="cpu")
            except Exception as e:
                raise UserError(f"{path}: not a readable PyTorch weight file ({_brief(e)})") from e
            if not isinstance(sd, dict):
                raise UserError(f"{path}: expected a state dict, got {type(sd).__name__}")
            for name in list(sd):
                yield name, sd.pop(name)


def weight_names(path: Path) -> list[str]:
    """The tensor names of one weight file, without reading the tensors."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except Exception as e:
            raise UserError(f"{path}: not a readable safetensors file ({_brief(e)})") from e
    return [name for name, _ in iter_hf_weights([path])]  # memory-mapped: reads no tensor data


def _owned(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """The tensor in `dtype`, not a view into a larger storage (torch.save would write the whole storage)."""
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        return t.to(dtype)
    if t.untyped_storage().nbytes() != t.nbytes:
        return t.clone()
    return t


def expected_shapes(config: Config) -> dict[str, torch.Size]:
    from lit_gpt.model import GPT

    with torch.device("meta"):
        model = GPT(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def check_state_dict(state_dict: dict, config: Config, source: str) -> None:
    """UserError unless `state_dict` has exactly the keys and shapes GPT(config) needs."""
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    wrong = [f"{k} is {tuple(state_dict[k].shape)}, expected {tuple(s)}"
             for k, s in expected.items() if k in state_dict and state_dict[k].shape != s]
    problems = ([f"missing {missing[:3]}"] if missing else []) + ([f"unexpected {extra[:3]}"] if extra else []) + wrong[:3]
    if problems:
        name = config.name or "the model config"
        raise UserError(f"{source}: weights do not fit {name}: {'; '.join(problems)}")


def convert_hf_to_lit(
    weights: Iterable[tuple[str, torch.Tensor]], config: Config, architecture: str,
    dtype: Optional[torch.dtype] = None,
) -> dict[str, torch.Tensor]:
    """A lit_gpt state dict from Hugging Face (name, tensor) pairs of the given architecture."""
    table = ARCHITECTURE_TABLES[architecture]
    sizes = _qkv_sizes(config)
    sd: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}  # fused name -> the q/k/v pieces seen so far
    for hf_name, t in weights:
        target = table.get(_template(hf_name))
        if target is None:
            if IGNORED_WEIGHTS.search(hf_name):
                continue
            raise UserError(f"weight {hf_name!r} has no counterpart in lit_gpt for {architecture}")
        layer = _layer(hf_name)
        if isinstance(target, str):
            sd[target.format(l=layer)] = _owned(t, dtype)
            continue
        lit_name, piece = target[0].format(l=layer), target[1]
        if piece == GROUPED:
            if t.shape[0] != sum(sizes):
                raise UserError(f"{hf_name} has {t.shape[0]} rows, the config expects {sum(sizes)} "
                                f"({config.n_head} heads, {config.n_query_groups} query groups)")
            sd[lit_name] = _owned(grouped_to_lit(t, config), dtype)
            continue
        parts = pending.setdefault(lit_name, {})
        parts[piece] = t if dtype is None else t.to(dtype)
        if len(parts) == 3:
            for p, size in zip((Q, K, V), sizes):
                if parts[p].shape[0] != size:
                    raise UserError(f"{lit_name}: the {p} projection has {parts[p].shape[0]} rows, the config "
                                    f"expects {size}")
            sd[lit_name] = torch.cat([parts[Q], parts[K], parts[V]])
            del pending[lit_name]
    if pending:
        name, parts = next(iter(pending.items()))
        raise UserError(f"incomplete checkpoint: {name} got only the {sorted(parts)} projections")
    if "transformer.wte.weight" in sd and (config.tie_embeddings or "lm_head.weight" not in sd):
        # Tied checkpoints store the embedding once; untied configs of a tied checkpoint get it as the head.
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def convert_lit_to_hf(
    state_dict: dict[str, torch.Tensor], config: Config, architecture: Optional[str] = None
) -> dict[str, torch.Tensor]:
    """Hugging Face weights (contiguous, unshared: ready for safetensors) from a lit_gpt state dict."""
    arch = architecture or hf_architecture(config)
    table = _export_table(config, arch)
    sizes = _qkv_sizes(config)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    storages: set[int] = set()  # safetensors refuses tensors that share memory (e.g. an untied copy of wte)
    for hf_pattern, target in table.items():
        layers = range(config.n_layer) if "{l}" in hf_pattern else [None]
        for layer in layers:
            lit_pattern, piece = (target, None) if isinstance(target, str) else target
            lit_name = lit_pattern.format(l=layer)
            if lit_name not in state_dict:
                continue
            if lit_name == "lm_head.weight" and config.tie_embeddings:
                used.add(lit_name)  # transformers ties it to the embedding on load
                continue
            t = state_dict[lit_name]
            if piece == GROUPED:
                t = lit_to_grouped(t, config)
            elif piece is not None:
                t = t.split(sizes)[(Q, K, V).index(piece)]
            t = t.contiguous()
            if piece is not None or t.untyped_storage().data_ptr() in storages:
                t = t.clone()
            storages.add(t.untyped_storage().data_ptr())
            out[hf_pattern.format(l=layer)] = t
            used.add(lit_name)
    left = [k for k in state_dict if k not in used]
    if left:
        raise ValueError(f"{arch} has no name for the weights {left[:5]} (adapter weights must be merged first)")
    return out


def config_fields_differ(a: Config, b: Config, ignore: Iterable[str] = ()) -> dict[str, tuple]:
    """Fields where two configs disagree (for warnings and tests)."""
    ignore = set(ignore)
    da, db = asdict(a), asdict(b)
    return {f.name: (da[f.name], db[f.name]) for f in fields(Config) if f.name not in ignore and da[f.name] != db[f.name]}
