"""The Llama layout (separate q/k/v projections, SwiGLU, RMSNorm) and the architectures that share it: Llama,
Mistral (a sliding window), Qwen2 (a bias on QKV only) and StableLM (LayerNorm, partial rotary)."""

from __future__ import annotations

from lit_gpt.config import Config
from lit_gpt.families.base import SEPARATE_QKV, Family, check_head_size, require, rope_from_hf, unsupported


########################
# config.json -> Config fields
########################
def _swiglu_from_hf(hf: dict, default_partial: float) -> dict:
    get = hf.get
    base, partial, condense = rope_from_hf(hf, default_partial)
    n_head = get("num_attention_heads")
    require(get("hidden_act", "silu") == "silu", f"hidden_act={get('hidden_act')!r}")
    return dict(
        block_size=get("max_position_embeddings", 4096), n_layer=get("num_hidden_layers"), n_head=n_head,
        n_embd=get("hidden_size"), head_size=get("head_dim") or get("hidden_size") // n_head,
        n_query_groups=get("num_key_value_heads") or n_head, rotary_percentage=partial, rope_base=base,
        rope_condense_ratio=condense, mlp_class_name="LLaMAMLP", intermediate_size=get("intermediate_size"),
        tie_embeddings=bool(get("tie_word_embeddings", False)), parallel_residual=False, bias=False,
    )


def _rms_from_hf(hf: dict) -> dict:
    return {**_swiglu_from_hf(hf, 1.0), "norm_class_name": "RMSNorm", "norm_eps": hf.get("rms_norm_eps", 1e-6)}


def _llama_from_hf(hf: dict) -> dict:
    attn_b, mlp_b = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    c = _rms_from_hf(hf)
    require(attn_b == mlp_b, "attention_bias != mlp_bias")
    return {**c, "bias": attn_b}


def _mistral_from_hf(hf: dict) -> dict:
    return {**_rms_from_hf(hf), "sliding_window_size": hf.get("sliding_window")}


def _qwen2_from_hf(hf: dict) -> dict:
    get = hf.get
    c = {**_rms_from_hf(hf), "attn_bias": True}
    if get("use_sliding_window", False) and get("sliding_window") is not None:
        # transformers slides the window only on layers >= max_window_layers
        require(get("max_window_layers", 0) in (0, None) or get("max_window_layers") >= c["n_layer"],
                "sliding window on some layers only")
        if not get("max_window_layers"):
            c.update(sliding_window_size=get("sliding_window"))
    return c


def _stablelm_from_hf(hf: dict) -> dict:
    get = hf.get
    c = _swiglu_from_hf(hf, 0.25)
    require(not get("qk_layernorm", False), "qk_layernorm")
    parallel = bool(get("use_parallel_residual", False))
    c.update(norm_class_name="LayerNorm", norm_eps=get("layer_norm_eps", 1e-5),
             attn_bias=bool(get("use_qkv_bias", False)), parallel_residual=parallel, shared_attention_norm=parallel)
    return c


########################
# Config -> config.json
########################
def _swiglu_to_hf(c: Config, out: dict) -> dict:
    out.update(intermediate_size=c.intermediate_size, num_key_value_heads=c.n_query_groups, head_dim=c.head_size,
               hidden_act="silu")
    return out


def _rms_to_hf(c: Config, out: dict, arch: str) -> dict:
    if c.parallel_residual:
        raise unsupported(c, arch, "parallel_residual")
    _swiglu_to_hf(c, out)
    if c.rotary_percentage != 1.0:
        raise unsupported(c, arch, "partial rotary")
    out.update(rms_norm_eps=c.norm_eps)
    return out


def _llama_to_hf(c: Config, out: dict) -> dict:
    _rms_to_hf(c, out, LLAMA.name)
    if c.attn_bias and not c.bias:
        raise unsupported(c, LLAMA.name, "a bias on QKV only")
    out.update(model_type="llama", attention_bias=c.bias, mlp_bias=c.bias)
    return out


def _mistral_to_hf(c: Config, out: dict) -> dict:
    _rms_to_hf(c, out, MISTRAL.name)
    if c.bias or c.attn_bias:
        raise unsupported(c, MISTRAL.name, "biases")
    out.update(model_type="mistral", sliding_window=c.sliding_window_size)
    return out


def _qwen2_to_hf(c: Config, out: dict) -> dict:
    _rms_to_hf(c, out, QWEN2.name)
    if c.bias or not c.attn_bias:
        raise unsupported(c, QWEN2.name, "other biases than on QKV")
    window = c.sliding_window_size
    out.update(model_type="qwen2", use_sliding_window=window is not None, sliding_window=window,
               max_window_layers=0 if window is not None else c.n_layer)
    return out


def _stablelm_to_hf(c: Config, out: dict) -> dict:
    check_head_size(c, STABLELM.name)
    _swiglu_to_hf(c, out)
    if c.bias or (c.parallel_residual and not c.shared_attention_norm):
        raise unsupported(c, STABLELM.name, "these biases or norms")
    out.update(model_type="stablelm", layer_norm_eps=c.norm_eps, partial_rotary_factor=c.rotary_percentage,
               use_qkv_bias=c.attn_bias, use_parallel_residual=c.parallel_residual, qk_layernorm=False)
    del out["head_dim"]
    return out


########################
# Weight names, and the records
########################
WEIGHTS = {  # LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
    "model.embed_tokens.weight": "transformer.wte.weight",
    "model.layers.{l}.input_layernorm.weight": "transformer.h.{l}.norm_1.weight",
    **SEPARATE_QKV,
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

STABLELM_WEIGHTS = {  # StableLmForCausalLM: the Llama names, with LayerNorm (weight and bias) instead of RMSNorm
    **WEIGHTS,
    "model.layers.{l}.input_layernorm.bias": "transformer.h.{l}.norm_1.bias",
    "model.layers.{l}.post_attention_layernorm.bias": "transformer.h.{l}.norm_2.bias",
    "model.norm.bias": "transformer.ln_f.bias",
}

LLAMA = Family("LlamaForCausalLM", WEIGHTS, _llama_from_hf, _llama_to_hf, model_types=("llama",))
MISTRAL = Family("MistralForCausalLM", WEIGHTS, _mistral_from_hf, _mistral_to_hf, model_types=("mistral",))
QWEN2 = Family("Qwen2ForCausalLM", WEIGHTS, _qwen2_from_hf, _qwen2_to_hf, model_types=("qwen2",))
STABLELM = Family("StableLmForCausalLM", STABLELM_WEIGHTS, _stablelm_from_hf, _stablelm_to_hf,
                  model_types=("stablelm",))
