"""Microsoft Phi (phi-1_5, phi-2): parallel attention and MLP sharing one LayerNorm, biases everywhere, a GELU
MLP and partial rotary."""

from __future__ import annotations

from lit_gpt.config import Config
from lit_gpt.families.base import (
    SEPARATE_QKV, Family, check_head_size, gelu_from_hf, gelu_to_hf, require, rope_from_hf, unsupported,
)


def _from_hf(hf: dict) -> dict:
    get = hf.get
    require(not get("qk_layernorm", False), "qk_layernorm")
    base, partial, condense = rope_from_hf(hf, 0.5)
    n_head = get("num_attention_heads")
    return dict(
        block_size=get("max_position_embeddings", 2048), n_layer=get("num_hidden_layers"),
        n_head=n_head, n_embd=get("hidden_size"), n_query_groups=get("num_key_value_heads") or n_head,
        rotary_percentage=partial, rope_base=base, rope_condense_ratio=condense, parallel_residual=True,
        shared_attention_norm=True, bias=True, lm_head_bias=True, norm_class_name="LayerNorm",
        norm_eps=get("layer_norm_eps", 1e-5), mlp_class_name="GptNeoxMLP",
        gelu_approximate=gelu_from_hf(get("hidden_act", "gelu_new")),
        intermediate_size=get("intermediate_size"), tie_embeddings=bool(get("tie_word_embeddings", False)),
    )


def _to_hf(c: Config, out: dict) -> dict:
    check_head_size(c, PHI.name)
    if not (c.bias and c.lm_head_bias and c.parallel_residual and c.shared_attention_norm):
        raise unsupported(c, PHI.name, "this residual/bias layout")
    out.update(model_type="phi", intermediate_size=c.intermediate_size, num_key_value_heads=c.n_query_groups,
               partial_rotary_factor=c.rotary_percentage, layer_norm_eps=c.norm_eps, qk_layernorm=False,
               hidden_act=gelu_to_hf(c), resid_pdrop=0.0, embd_pdrop=0.0)
    return out


WEIGHTS = {  # PhiForCausalLM
    "model.embed_tokens.weight": "transformer.wte.weight",
    "model.layers.{l}.input_layernorm.weight": "transformer.h.{l}.norm_1.weight",
    "model.layers.{l}.input_layernorm.bias": "transformer.h.{l}.norm_1.bias",
    **SEPARATE_QKV,
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

PHI = Family("PhiForCausalLM", WEIGHTS, _from_hf, _to_hf, model_types=("phi",))
