"""EleutherAI GPT-NeoX (Pythia, stablelm-alpha): a fused QKV interleaved per head, biases everywhere, a GELU MLP,
parallel residual with two LayerNorms, partial rotary."""

from __future__ import annotations

from lit_gpt.config import Config
from lit_gpt.families.base import (
    GROUPED, Family, check_head_size, gelu_from_hf, gelu_to_hf, require, rope_from_hf, unsupported,
)


def _from_hf(hf: dict) -> dict:
    get = hf.get
    require(get("attention_bias", True), "attention_bias=false")
    base, partial, condense = rope_from_hf(hf, 0.25)
    return dict(
        block_size=get("max_position_embeddings", 2048), n_layer=get("num_hidden_layers"),
        n_head=get("num_attention_heads"), n_embd=get("hidden_size"), rotary_percentage=partial,
        rope_base=base, rope_condense_ratio=condense, parallel_residual=bool(get("use_parallel_residual", True)),
        bias=True, norm_class_name="LayerNorm", norm_eps=get("layer_norm_eps", 1e-5),
        mlp_class_name="GptNeoxMLP", gelu_approximate=gelu_from_hf(get("hidden_act", "gelu")),
        intermediate_size=get("intermediate_size"), tie_embeddings=bool(get("tie_word_embeddings", False)),
    )


def _to_hf(c: Config, out: dict) -> dict:
    check_head_size(c, GPT_NEOX.name)
    if not c.bias or c.shared_attention_norm or c.n_query_groups != c.n_head:
        raise unsupported(c, GPT_NEOX.name, "this bias/norm/query-group layout")
    out.update(model_type="gpt_neox", intermediate_size=c.intermediate_size, rotary_pct=c.rotary_percentage,
               rotary_emb_base=c.rope_base, layer_norm_eps=c.norm_eps, use_parallel_residual=c.parallel_residual,
               hidden_act=gelu_to_hf(c), attention_bias=True)
    del out["rope_theta"]
    return out


WEIGHTS = {  # GPTNeoXForCausalLM
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

# transformers >= 5 loads `embed_out.weight` into the module `lm_head`
GPT_NEOX = Family("GPTNeoXForCausalLM", WEIGHTS, _from_hf, _to_hf, model_types=("gpt_neox",),
                  module_renames={"embed_out": "lm_head"})
