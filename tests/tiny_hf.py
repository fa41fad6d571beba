"""Tiny random `transformers` models of each supported family, for the conversion tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

transformers = __import__("pytest").importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
SEQ_LEN = 12
SLIDING_WINDOW = 4  # smaller than SEQ_LEN, so Mistral's window matters

_common = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)

FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", dict(**_common, intermediate_size=96, num_key_value_heads=2, rms_norm_eps=1e-5,
                                  rope_theta=500.0)),
    "llama_tied": ("LlamaConfig", dict(**_common, intermediate_size=96, num_key_value_heads=1,
                                       tie_word_embeddings=True)),
    "mistral": ("MistralConfig", dict(**_common, intermediate_size=96, num_key_value_heads=2,
                                      sliding_window=SLIDING_WINDOW)),
    "qwen2": ("Qwen2Config", dict(**_common, intermediate_size=96, num_key_value_heads=2, rope_theta=1e6,
                                  tie_word_embeddings=True)),
    "gpt_neox": ("GPTNeoXConfig", dict(**_common, intermediate_size=256, rotary_pct=0.25, rotary_emb_base=10000,
                                       use_parallel_residual=True, tie_word_embeddings=False)),
    "gpt_neox_sequential": ("GPTNeoXConfig", dict(**_common, intermediate_size=128, rotary_pct=0.5,
                                                  use_parallel_residual=False, tie_word_embeddings=False)),
    "falcon": ("FalconConfig", dict(**_common, multi_query=True, parallel_attn=True, new_decoder_architecture=False,
                                    bias=False, alibi=False)),
    "falcon_new": ("FalconConfig", dict(**_common, new_decoder_architecture=True, num_kv_heads=2, bias=False,
                                        alibi=False, tie_word_embeddings=False)),
    "phi": ("PhiConfig", dict(**_common, intermediate_size=128, partial_rotary_factor=0.5, hidden_act="gelu_new",
                              resid_pdrop=0.0, embd_pdrop=0.0)),
    "stablelm": ("StableLmConfig", dict(**_common, intermediate_size=96, num_key_value_heads=4,
                                        partial_rotary_factor=0.25, use_qkv_bias=True)),
}


def make_hf_model(family: str, seed: int = 0):
    """A tiny random model whose every parameter (biases and norms included) is random, in eval mode, fp32."""
    cls_name, kwargs = FAMILIES[family]
    config = getattr(transformers, cls_name)(**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return randomize_(model).eval()


def randomize_(model):
    """Random values everywhere: the default init leaves biases at 0 and norm scales at 1, which would not test
    their conversion."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):  # norm scales
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1)
    return model


def save_bin(model, out: Path, max_shard_bytes: int | None = None) -> None:
    """Write the weights as pytorch_model.bin (or shards with an index), as pre-safetensors repos have them."""
    from safetensors.torch import load_file

    # save_pretrained writes the checkpoint names (which can differ from the module names, e.g. GPT-NeoX's
    # embed_out); re-save those tensors in the pickle format.
    model.save_pretrained(out)
    sd = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    if max_shard_bytes is None:
        torch.save(sd, out / "pytorch_model.bin")
        return
    shards, current, size = [], {}, 0
    for k, v in sd.items():
        if current and size + v.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[k] = v
        size += v.nbytes
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, out / fname)
        weight_map.update({k: fname for k in shard})
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def save_hf(model, out: Path, fmt: str) -> None:
    """fmt: safetensors | sharded_safetensors | bin | sharded_bin."""
    if fmt == "safetensors":
        model.save_pretrained(out)
    elif fmt == "sharded_safetensors":
        model.save_pretrained(out, max_shard_size="40KB")
        assert (out / "model.safetensors.index.json").is_file()
    elif fmt == "bin":
        save_bin(model, out)
    elif fmt == "sharded_bin":
        save_bin(model, out, max_shard_bytes=40_000)
    else:
        raise ValueError(fmt)


def hf_logits(model, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx).logits


def qwen1_checkpoint(tmp_path: Path) -> tuple[Path, "transformers.PreTrainedModel"]:
    """A Qwen-1 style checkpoint (fused c_attn with bias, w1/w2 MLP, Qwen-1 config.json) holding the weights of a
    tiny multi-head Qwen2 model, which computes the same function."""
    config = transformers.Qwen2Config(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=4, intermediate_size=96, rms_norm_eps=1e-6,
                                      rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = randomize_(transformers.Qwen2ForCausalLM(config)).eval()
    sd = hf.state_dict()
    qwen = {"transformer.wte.weight": sd["model.embed_tokens.weight"], "transformer.ln_f.weight": sd["model.norm.weight"],
            "lm_head.weight": sd["lm_head.weight"]}
    for i in range(config.num_hidden_layers):
        p, q = f"model.layers.{i}.", f"transformer.h.{i}."
        for kind in ("weight", "bias"):
            qwen[q + f"attn.c_attn.{kind}"] = torch.cat([sd[p + f"self_attn.{x}_proj.{kind}"] for x in "qkv"])
        qwen[q + "attn.c_proj.weight"] = sd[p + "self_attn.o_proj.weight"]
        qwen[q + "ln_1.weight"] = sd[p + "input_layernorm.weight"]
        qwen[q + "ln_2.weight"] = sd[p + "post_attention_layernorm.weight"]
        qwen[q + "mlp.w2.weight"] = sd[p + "mlp.gate_proj.weight"]  # c_proj(w1(x) * silu(w2(x)))
        qwen[q + "mlp.w1.weight"] = sd[p + "mlp.up_proj.weight"]
        qwen[q + "mlp.c_proj.weight"] = sd[p + "mlp.down_proj.weight"]
    ckpt = tmp_path / "Qwen-tiny"
    ckpt.mkdir()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in qwen.items()}, ckpt / "model.safetensors")
    (ckpt / "config.json").write_text(json.dumps({
        "architectures": ["QWenLMHeadModel"], "model_type": "qwen", "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig"},
        "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "kv_channels": 16,
        "intermediate_size": 2 * 96, "layer_norm_epsilon": 1e-6, "rotary_emb_base": 10000, "rotary_pct": 1.0,
        "seq_length": 64, "max_position_embeddings": 64, "vocab_size": 256, "no_bias": True,
        "tie_word_embeddings": False, "use_dynamic_ntk": True, "use_logn_attn": True,
    }))
    return ckpt, hf


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
