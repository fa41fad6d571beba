"""Hugging Face -> lit_gpt conversion against the `transformers` implementation of each family."""

import json
from pathlib import Path

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.utils import UserError, load_checkpoint

from tiny_hf import (
    FAMILIES, SEQ_LEN, SLIDING_WINDOW, assert_one_line_error, hf_logits, make_hf_model, qwen1_checkpoint, run_script,
    save_hf, transformers,
)

from scripts.convert_hf_checkpoint import convert_hf_checkpoint


def load_lit(checkpoint_dir: Path) -> GPT:
    model = GPT(Config.from_checkpoint(checkpoint_dir)).eval()
    load_checkpoint(model, checkpoint_dir / "lit_model.pth")
    return model


def tokens(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (batch, SEQ_LEN), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "sharded_safetensors", "sharded_bin"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_to_lit_gives_the_hf_logits(tmp_path, family, fmt):
    hf = make_hf_model(family)
    ckpt = tmp_path / family
    save_hf(hf, ckpt, fmt)
    convert_hf_checkpoint(checkpoint_dir=ckpt)
    model = load_lit(ckpt)
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf_logits(hf, idx))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_kv_cache_decoding_gives_the_full_forward_logits(tmp_path, family):
    hf = make_hf_model(family)
    save_hf(hf, tmp_path / family, "safetensors")
    convert_hf_checkpoint(checkpoint_dir=tmp_path / family)
    model = load_lit(tmp_path / family)
    idx = tokens()
    prefill = 5
    with torch.no_grad():
        full = model(idx)
        model.set_kv_cache(batch_size=2, max_seq_length=SEQ_LEN)
        steps = [model(idx[:, :prefill], torch.arange(prefill))]
        for t in range(prefill, SEQ_LEN):
            steps.append(model(idx[:, t : t + 1], torch.tensor([t])))
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    torch.testing.assert_close(full, hf_logits(hf, idx))


def test_mistral_sliding_window_matters(tmp_path):
    """The test sequence is longer than the window, so dropping the window must change the logits."""
    hf = make_hf_model("mistral")
    save_hf(hf, tmp_path / "m", "safetensors")
    convert_hf_checkpoint(checkpoint_dir=tmp_path / "m")
    config = Config.from_checkpoint(tmp_path / "m")
    assert config.sliding_window_size == SLIDING_WINDOW < SEQ_LEN
    model = load_lit(tmp_path / "m")
    unwindowed = GPT(Config.from_checkpoint(tmp_path / "m", sliding_window_size=None)).eval()
    unwindowed.load_state_dict(model.state_dict())
    idx = tokens()
    with torch.no_grad():
        windowed, full = model(idx), unwindowed(idx)
    torch.testing.assert_close(windowed[:, :SLIDING_WINDOW], full[:, :SLIDING_WINDOW])
    assert not torch.allclose(windowed[:, SLIDING_WINDOW:], full[:, SLIDING_WINDOW:], atol=1e-3)


def test_qwen1_checkpoint_gives_the_qwen2_logits(tmp_path):
    ckpt, hf = qwen1_checkpoint(tmp_path)
    convert_hf_checkpoint(checkpoint_dir=ckpt)
    config = Config.from_checkpoint(ckpt)
    assert (config.intermediate_size, config.attn_bias, config.bias) == (96, True, False)
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(load_lit(ckpt)(idx), hf_logits(hf, idx))


def test_named_config_without_config_json(tmp_path):
    """A directory named after a config in config.py converts without config.json (here tiny-llama)."""
    named = Config.from_name("tiny-llama")
    hf_config = transformers.LlamaConfig(
        vocab_size=named.padded_vocab_size, hidden_size=named.n_embd, num_hidden_layers=named.n_layer,
        num_attention_heads=named.n_head, num_key_value_heads=named.n_query_groups,
        intermediate_size=named.intermediate_size, rms_norm_eps=named.norm_eps, rope_theta=named.rope_base,
        max_position_embeddings=named.block_size)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    ckpt = tmp_path / "tiny-llama"
    hf.save_pretrained(ckpt)
    (ckpt / "config.json").unlink()
    convert_hf_checkpoint(checkpoint_dir=ckpt)
    assert Config.from_checkpoint(ckpt) == named
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(load_lit(ckpt)(idx), hf_logits(hf, idx))


def test_dtype_option(tmp_path):
    save_hf(make_hf_model("llama"), tmp_path / "m", "safetensors")
    convert_hf_checkpoint(checkpoint_dir=tmp_path / "m", dtype="bfloat16")
    sd = torch.load(tmp_path / "m" / "lit_model.pth", weights_only=True)
    assert {t.dtype for t in sd.values()} == {torch.bfloat16}


def test_weights_not_fitting_the_model_name(tmp_path):
    save_hf(make_hf_model("llama"), tmp_path / "m", "safetensors")
    with pytest.raises(UserError, match="tiny-neox is a GPTNeoXForCausalLM model, but .* holds a LlamaForCausalLM"):
        convert_hf_checkpoint(checkpoint_dir=tmp_path / "m", model_name="tiny-neox")
    assert not (tmp_path / "m" / "lit_model.pth").exists()


def test_wrong_shapes_name_the_weight(tmp_path):
    save_hf(make_hf_model("llama"), tmp_path / "m", "safetensors")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["intermediate_size"] = 80
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"mlp\.fc_1\.weight is \(96, 64\), expected \(80, 64\)"):
        convert_hf_checkpoint(checkpoint_dir=tmp_path / "m")


def test_cli_errors(tmp_path):
    script = "scripts/convert_hf_checkpoint.py"
    assert_one_line_error(run_script(script, "--checkpoint_dir", str(tmp_path / "nope")), "does not exist")

    ckpt = tmp_path / "m"
    save_hf(make_hf_model("llama"), ckpt, "safetensors")
    assert_one_line_error(run_script(script, "--checkpoint_dir", str(ckpt), "--model_name", "Llama-2-7b"),
                          "Unknown model name", "Llama-2-7b-hf")

    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "architectures": ["GemmaForCausalLM"]}))
    assert_one_line_error(run_script(script, "--checkpoint_dir", str(ckpt)), "GemmaForCausalLM", "supported")
    (ckpt / "config.json").write_text(json.dumps(config))

    (ckpt / "model.safetensors").write_bytes(b"\x00" * 100)
    assert_one_line_error(run_script(script, "--checkpoint_dir", str(ckpt)), "model.safetensors", "not a readable")
    assert not (ckpt / "lit_model.pth").exists()


def test_corrupt_or_missing_weights(tmp_path):
    ckpt = tmp_path / "m"
    save_hf(make_hf_model("llama"), ckpt, "sharded_bin")
    index = json.loads((ckpt / "pytorch_model.bin.index.json").read_text())
    shard = ckpt / sorted(set(index["weight_map"].values()))[-1]
    shard.write_bytes(b"not a zip file")
    with pytest.raises(UserError, match=f"{shard.name}: not a readable PyTorch weight file"):
        convert_hf_checkpoint(checkpoint_dir=ckpt)
    shard.unlink()
    with pytest.raises(UserError, match=f"lists .*{shard.name}, which is missing"):
        convert_hf_checkpoint(checkpoint_dir=ckpt)
    for f in ckpt.glob("pytorch_model*"):
        f.unlink()
    with pytest.raises(UserError, match="no Hugging Face weights"):
        convert_hf_checkpoint(checkpoint_dir=ckpt)
