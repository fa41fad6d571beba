"""Named configs, their persistence, and config.json -> Config against the published Hub configs."""

import pytest
import torch

from lit_gpt.config import Config, config_fields_differ, name_to_config
from lit_gpt.families import config_from_hf, hf_config_from
from lit_gpt.model import GPT
from lit_gpt.utils import UserError


@pytest.mark.parametrize("name", sorted(name_to_config))
def test_every_named_config_builds_a_model(name):
    config = Config.from_name(name)
    assert config.name == name
    assert config.n_embd % config.n_head == 0 or config.head_size is not None
    with torch.device("meta"):
        model = GPT(config)
    assert model.lm_head.out_features == config.padded_vocab_size >= config.vocab_size
    # Every named config has a transformers architecture to export to.
    assert hf_config_from(config)["num_hidden_layers"] == config.n_layer


def n_params(name: str) -> int:
    with torch.device("meta"):
        model = GPT(Config.from_name(name))
    return sum(p.numel() for p in model.parameters())  # tied weights are one parameter


def test_spot_check_real_values():
    llama = Config.from_name("Llama-2-7b-hf")
    assert (llama.n_layer, llama.n_embd, llama.n_head, llama.padded_vocab_size) == (32, 4096, 32, 32000)
    mistral = Config.from_name("Mistral-7B-v0.1")
    assert (mistral.n_query_groups, mistral.sliding_window_size, mistral.intermediate_size) == (8, 4096, 14336)
    qwen = Config.from_name("Qwen2.5-7B")
    assert (qwen.padded_vocab_size, qwen.n_query_groups, qwen.attn_bias, qwen.bias) == (152064, 4, True, False)
    smol = Config.from_name("SmolLM2-135M-Instruct")
    assert (smol.n_layer, smol.n_head, smol.n_query_groups, smol.head_size, smol.tie_embeddings) == (30, 9, 3, 64, True)
    assert Config.from_name("phi-2").rope_n_elem == 32
    falcon = Config.from_name("falcon-7b")
    assert (falcon.head_size, falcon.n_query_groups) == (64, 1)
    assert Config.from_name("pythia-160m").padded_vocab_size == 50304
    # Parameter counts published for these models.
    assert n_params("Llama-2-7b-hf") == 6_738_415_616
    assert n_params("Mistral-7B-v0.1") == 7_241_732_096
    assert n_params("pythia-160m") == 162_322_944
    assert round(n_params("Qwen2.5-0.5B") / 1e9, 2) == 0.49
    assert round(n_params("Qwen2.5-7B") / 1e9, 2) == 7.62


def test_save_and_from_checkpoint_round_trip(tmp_path):
    config = Config.from_name("Qwen2.5-0.5B", block_size=1024)
    config.save(tmp_path)
    assert Config.from_checkpoint(tmp_path) == config
    assert Config.from_checkpoint(tmp_path, n_layer=2).n_layer == 2
    named = tmp_path / "pythia-70m"
    named.mkdir()
    assert Config.from_checkpoint(named) == Config.from_name("pythia-70m")
    with pytest.raises(FileNotFoundError, match="not a known model name"):
        Config.from_checkpoint(tmp_path / "elsewhere")


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"Unknown model name 'Llama-2-7b'.*Llama-2-7b-hf"):
        Config.from_name("Llama-2-7b")
    with pytest.raises(ValueError, match="Known names"):
        Config.from_name("gpt-5")


# config.json of real Hub models (model-relevant fields, copied from the published files).
HUB_CONFIGS = {
    "Llama-2-7b-hf": {
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
        "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "tie_word_embeddings": False,
        "torch_dtype": "float16", "use_cache": True, "vocab_size": 32000},
    "open_llama_3b": {
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 3200, "intermediate_size": 8640, "max_position_embeddings": 2048, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 26, "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
        "vocab_size": 32000},
    "Mistral-7B-v0.1": {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False, "vocab_size": 32000},
    "pythia-160m": {
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
        "model_type": "gpt_neox", "num_attention_heads": 12, "num_hidden_layers": 12, "rotary_emb_base": 10000,
        "rotary_pct": 0.25, "tie_word_embeddings": False, "use_parallel_residual": True, "vocab_size": 50304},
    "stablelm-base-alpha-3b": {
        "architectures": ["GPTNeoXForCausalLM"], "hidden_act": "gelu", "hidden_size": 4096,
        "intermediate_size": 16384, "layer_norm_eps": 1e-05, "max_position_embeddings": 4096,
        "model_type": "gpt_neox", "num_attention_heads": 32, "num_hidden_layers": 16, "rotary_emb_base": 10000,
        "rotary_pct": 0.25, "tie_word_embeddings": False, "use_parallel_residual": True, "vocab_size": 50688},
    "stablelm-3b-4e1t": {
        "architectures": ["StableLmForCausalLM"], "hidden_act": "silu", "hidden_size": 2560,
        "intermediate_size": 6912, "layer_norm_eps": 1e-05, "max_position_embeddings": 4096, "model_type": "stablelm",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "partial_rotary_factor": 0.25,
        "rope_theta": 10000, "tie_word_embeddings": False, "use_qkv_bias": False, "vocab_size": 50304},
    "phi-2": {
        "architectures": ["PhiForCausalLM"], "bos_token_id": 50256, "eos_token_id": 50256, "hidden_act": "gelu_new",
        "hidden_size": 2560, "intermediate_size": 10240, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
        "model_type": "phi", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
        "partial_rotary_factor": 0.4, "qk_layernorm": False, "rope_scaling": None, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "vocab_size": 51200},
    "falcon-7b": {
        "alibi": False, "apply_residual_connection_post_layernorm": False, "architectures": ["FalconForCausalLM"],
        "bias": False, "bos_token_id": 11, "eos_token_id": 11, "hidden_size": 4544, "layer_norm_epsilon": 1e-05,
        "model_type": "falcon", "multi_query": True, "new_decoder_architecture": False, "num_attention_heads": 71,
        "num_hidden_layers": 32, "num_kv_heads": 71, "parallel_attn": True, "vocab_size": 65024},
    "Qwen-7B": {
        "architectures": ["QWenLMHeadModel"], "hidden_size": 4096, "intermediate_size": 22016, "kv_channels": 128,
        "layer_norm_epsilon": 1e-06, "model_type": "qwen", "no_bias": True, "num_attention_heads": 32,
        "num_hidden_layers": 32, "rotary_emb_base": 10000, "rotary_pct": 1.0, "seq_length": 8192,
        "tie_word_embeddings": False, "use_dynamic_ntk": True, "use_logn_attn": True, "vocab_size": 151936},
    "Qwen-14B": {
        "architectures": ["QWenLMHeadModel"], "hidden_size": 5120, "intermediate_size": 27392, "kv_channels": 128,
        "layer_norm_epsilon": 1e-06, "model_type": "qwen", "no_bias": True, "num_attention_heads": 40,
        "num_hidden_layers": 40, "rotary_emb_base": 10000, "rotary_pct": 1.0, "seq_length": 2048,
        "tie_word_embeddings": False, "vocab_size": 152064},
    "Qwen2.5-0.5B": {
        "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
        "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
        "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
        "use_sliding_window": False, "vocab_size": 151936},
    "Qwen2.5-7B": {
        "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
        "hidden_size": 3584, "intermediate_size": 18944, "max_position_embeddings": 131072, "max_window_layers": 28,
        "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": False,
        "use_sliding_window": False, "vocab_size": 152064},
    "Qwen2.5-14B": {
        "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
        "hidden_size": 5120, "intermediate_size": 13824, "max_position_embeddings": 131072, "max_window_layers": 48,
        "model_type": "qwen2", "num_attention_heads": 40, "num_hidden_layers": 48, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": False,
        "use_sliding_window": False, "vocab_size": 152064},
    "SmolLM2-135M": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 0, "eos_token_id": 0,
        "hidden_act": "silu", "hidden_size": 576, "intermediate_size": 1536, "max_position_embeddings": 8192,
        "mlp_bias": False, "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30,
        "num_key_value_heads": 3, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 100000,
        "tie_word_embeddings": True, "vocab_size": 49152},
    "SmolLM2-1.7B": {
        "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192,
        "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 24,
        "num_key_value_heads": 32, "rms_norm_eps": 1e-05, "rope_theta": 130000, "tie_word_embeddings": True,
        "vocab_size": 49152},
}

# Where config.py disagrees with the published config.json (reported; strict, so fixing config.py flags this list).


@pytest.mark.parametrize("name", sorted(HUB_CONFIGS))
def test_config_from_hub_config_json_matches_the_named_config(name):
    hf = HUB_CONFIGS[name]
    derived = config_from_hf(hf, name=name)
    # config.json only knows the embedding rows; the tokenizer's vocab_size is the named config's business.
    assert derived.padded_vocab_size == derived.vocab_size == hf["vocab_size"]
    diff = config_fields_differ(Config.from_name(name), derived,
                                ignore=("name", "hf_config", "vocab_size", "padding_multiple"))
    assert not diff, diff


@pytest.mark.parametrize("name", sorted(HUB_CONFIGS))
def test_hf_config_from_inverts_config_from_hf(name):
    config = config_from_hf(HUB_CONFIGS[name], name=name)
    again = config_from_hf(hf_config_from(config), name=name)
    assert again == config


def test_config_from_hf_new_transformers_keys():
    """transformers 5 writes `rope_parameters` instead of rope_theta / partial_rotary_factor."""
    hf = {**HUB_CONFIGS["phi-2"], "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0,
                                                       "partial_rotary_factor": 0.5}}
    del hf["rope_theta"], hf["partial_rotary_factor"]
    config = config_from_hf(hf)
    assert (config.rope_base, config.rotary_percentage) == (5000.0, 0.5)
    linear = config_from_hf({**HUB_CONFIGS["Llama-2-7b-hf"], "rope_scaling": {"type": "linear", "factor": 4.0}})
    assert linear.rope_condense_ratio == 4.0


def test_config_from_hf_refuses_what_the_model_cannot_do():
    with pytest.raises(UserError, match="unsupported architecture 'GemmaForCausalLM'"):
        config_from_hf({"architectures": ["GemmaForCausalLM"]})
    with pytest.raises(UserError, match="rope scaling 'llama3'"):
        config_from_hf({**HUB_CONFIGS["Llama-2-7b-hf"], "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(UserError, match="alibi"):
        config_from_hf({**HUB_CONFIGS["falcon-7b"], "alibi": True})
    with pytest.raises(UserError, match="qk_layernorm"):
        config_from_hf({**HUB_CONFIGS["stablelm-3b-4e1t"], "qk_layernorm": True})
