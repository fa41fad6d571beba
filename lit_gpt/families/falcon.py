"""TII Falcon: a fused QKV interleaved per query group (one group in falcon-7b, n_kv_heads in falcon-40b/180b),
parallel attention and MLP, LayerNorm, a GELU MLP. The old decoder (falcon-7b) and the new one (two parallel
LayerNorms) name their norms differently; checkpoints are read with both tables, and written with the one the
config needs."""

from __future__ import annotations

from lit_gpt.config import Config
from lit_gpt.families.base import (
    GROUPED, Family, check_head_size, gelu_from_hf, gelu_to_hf, require, rope_from_hf, unsupported,
)


def _from_hf(hf: dict) -> dict:
    get = hf.get
    require(not get("alibi", False), "alibi")
    n_head = get("num_attention_heads", get("n_head"))
    n_embd = get("hidden_size", get("n_embed"))
    new = bool(get("new_decoder_architecture", get("model_type") == "RefinedWeb"))  # falcon-40b before transformers
    parallel = bool(get("parallel_attn", True))
    if new:
        require(parallel, "new_decoder_architecture without parallel_attn")
        groups = get("num_kv_heads", get("n_head_kv")) or n_head
        shared = get("num_ln_in_parallel_attn") == 1
    else:
        groups = 1 if get("multi_query", True) else n_head
        shared = parallel
    base, partial, condense = rope_from_hf(hf, 1.0)
    require(partial == 1.0, "partial rotary")
    return dict(
        block_size=get("max_position_embeddings", 2048), n_layer=get("num_hidden_layers", get("n_layer")),
        n_head=n_head, n_embd=n_embd, n_query_groups=groups, rotary_percentage=1.0, rope_base=base,
        rope_condense_ratio=condense, parallel_residual=new or parallel, shared_attention_norm=shared,
        bias=bool(get("bias", False)), norm_class_name="LayerNorm", norm_eps=get("layer_norm_epsilon", 1e-5),
        mlp_class_name="GptNeoxMLP", gelu_approximate=gelu_from_hf(get("activation", "gelu")),
        intermediate_size=get("ffn_hidden_size") or 4 * n_embd,
        tie_embeddings=bool(get("tie_word_embeddings", True)),
    )


def _to_hf(c: Config, out: dict) -> dict:
    check_head_size(c, FALCON.name)
    if c.rotary_percentage != 1.0 or c.lm_head_bias or c.head_size * c.n_head != c.n_embd:
        raise unsupported(c, FALCON.name, "partial rotary, an lm_head bias or a head size other than n_embd/n_head")
    out.update(model_type="falcon", bias=c.bias, layer_norm_epsilon=c.norm_eps, alibi=False,
               ffn_hidden_size=c.intermediate_size, activation=gelu_to_hf(c, "gelu_pytorch_tanh"))
    if not c.parallel_residual:
        if c.n_query_groups not in (1, c.n_head):
            raise unsupported(c, FALCON.name, "grouped queries without parallel residual")
        out.update(new_decoder_architecture=False, parallel_attn=False, multi_query=c.n_query_groups == 1,
                   num_kv_heads=c.n_query_groups)
    elif c.shared_attention_norm and c.n_query_groups == 1:
        out.update(new_decoder_architecture=False, parallel_attn=True, multi_query=True, num_kv_heads=1)
    else:
        out.update(new_decoder_architecture=True, parallel_attn=True, num_kv_heads=c.n_query_groups,
                   num_ln_in_parallel_attn=1 if c.shared_attention_norm else 2)
    return out


def _export_weights(c: Config) -> dict:
    new = _to_hf(c, {})["new_decoder_architecture"] and not c.shared_attention_norm
    return NEW_DECODER if new else OLD_DECODER


_COMMON = {
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
OLD_DECODER = {  # falcon-7b: one input LayerNorm (a second one if not parallel)
    **_COMMON,
    "transformer.h.{l}.input_layernorm.weight": "transformer.h.{l}.norm_1.weight",
    "transformer.h.{l}.input_layernorm.bias": "transformer.h.{l}.norm_1.bias",
    "transformer.h.{l}.post_attention_layernorm.weight": "transformer.h.{l}.norm_2.weight",
    "transformer.h.{l}.post_attention_layernorm.bias": "transformer.h.{l}.norm_2.bias",
}
NEW_DECODER = {  # falcon-40b/180b, with its two parallel LayerNorms
    **_COMMON,
    "transformer.h.{l}.ln_attn.weight": "transformer.h.{l}.norm_1.weight",
    "transformer.h.{l}.ln_attn.bias": "transformer.h.{l}.norm_1.bias",
    "transformer.h.{l}.ln_mlp.weight": "transformer.h.{l}.norm_2.weight",
    "transformer.h.{l}.ln_mlp.bias": "transformer.h.{l}.norm_2.bias",
}

FALCON = Family("FalconForCausalLM", {**OLD_DECODER, **NEW_DECODER}, _from_hf, _to_hf,
                aliases=("RWForCausalLM",),  # Falcon before its transformers integration
                model_types=("falcon", "RefinedWeb", "RefinedWebModel"), export_weights=_export_weights)
