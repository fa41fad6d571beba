"""Qwen (first generation, `QWenLMHeadModel`, trust_remote_code): a fused `c_attn` that already has our layout,
with a bias, and c_proj(w1(x) * silu(w2(x))), so w2 is the gate. It is read only: the model is a multi-head Qwen2
model, which transformers computes without remote code, so exports write Qwen2ForCausalLM."""

from __future__ import annotations

from lit_gpt.families.base import Family, rope_from_hf


def _from_hf(hf: dict) -> dict:
    """Its config's intermediate_size counts both SwiGLU branches."""
    get = hf.get
    base, partial, condense = rope_from_hf(hf, 1.0)
    n_head = get("num_attention_heads")
    return dict(
        block_size=get("seq_length", get("max_position_embeddings", 8192)),
        n_layer=get("num_hidden_layers"), n_head=n_head, n_embd=get("hidden_size"),
        head_size=get("kv_channels") or get("hidden_size") // n_head, rotary_percentage=partial, rope_base=base,
        rope_condense_ratio=condense, parallel_residual=False, bias=not get("no_bias", True), attn_bias=True,
        norm_class_name="RMSNorm", norm_eps=get("layer_norm_epsilon", 1e-6), mlp_class_name="LLaMAMLP",
        intermediate_size=get("intermediate_size") // 2, tie_embeddings=bool(get("tie_word_embeddings", False)),
    )


WEIGHTS = {  # QWenLMHeadModel
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

QWEN = Family("QWenLMHeadModel", WEIGHTS, _from_hf, written_as="Qwen2ForCausalLM", model_types=("qwen",))
