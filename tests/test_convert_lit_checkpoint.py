"""lit_gpt -> Hugging Face conversion: transformers loads the export and computes the same logits, and converting
back gives the exact same state dict."""

import json
from pathlib import Path

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.families import hf_architecture
from lit_gpt.hf_weights import convert_lit_to_hf
from lit_gpt.model import GPT
from lit_gpt.utils import load_checkpoint

from tiny_hf import (
    FAMILIES, SEQ_LEN, assert_one_line_error, make_hf_model, qwen1_checkpoint, run_script, save_hf, transformers,
)

from scripts.convert_hf_checkpoint import convert_hf_checkpoint
from scripts.convert_lit_checkpoint import convert_lit_checkpoint


def lit_checkpoint(tmp_path: Path, family: str) -> Path:
    ckpt = tmp_path / "lit" / family
    save_hf(make_hf_model(family), ckpt, "safetensors")
    convert_hf_checkpoint(checkpoint_dir=ckpt)
    return ckpt


def lit_logits(ckpt: Path, idx: torch.Tensor) -> torch.Tensor:
    model = GPT(Config.from_checkpoint(ckpt)).eval()
    load_checkpoint(model, ckpt / "lit_model.pth")
    with torch.no_grad():
        return model(idx)


def hf_logits_of(out: Path, idx: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(idx).logits


def state_dict(ckpt: Path) -> dict:
    return torch.load(ckpt / "lit_model.pth", weights_only=True)


def tokens() -> torch.Tensor:
    return torch.randint(0, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lit_to_hf_to_lit(tmp_path, family):
    ckpt = lit_checkpoint(tmp_path, family)
    (ckpt / "tokenizer_config.json").write_text("{}")
    out = tmp_path / "hf"
    convert_lit_checkpoint(checkpoint_dir=ckpt, output_dir=out)
    assert (out / "tokenizer_config.json").read_text() == "{}"

    idx = tokens()
    torch.testing.assert_close(hf_logits_of(out, idx), lit_logits(ckpt, idx))

    # ... and back: the exported directory converts to the very same weights and config.
    convert_hf_checkpoint(checkpoint_dir=out)
    before, after = state_dict(ckpt), state_dict(out)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    c1, c2 = Config.from_checkpoint(ckpt), Config.from_checkpoint(out)
    assert (c1.name, c2.name) == (family, "hf")
    c2.name, c2.hf_config = c1.name, c1.hf_config
    assert c1 == c2


def test_sharded_export(tmp_path):
    ckpt = lit_checkpoint(tmp_path, "qwen2")
    out = tmp_path / "hf"
    convert_lit_checkpoint(checkpoint_dir=ckpt, output_dir=out, max_shard_size="50KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (out / "model.safetensors").exists()
    idx = tokens()
    torch.testing.assert_close(hf_logits_of(out, idx), lit_logits(ckpt, idx))
    # A later unsharded export into the same directory must not leave the stale index behind.
    convert_lit_checkpoint(checkpoint_dir=ckpt, output_dir=out)
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()


def test_qwen1_exports_as_qwen2(tmp_path):
    ckpt, hf = qwen1_checkpoint(tmp_path)
    convert_hf_checkpoint(checkpoint_dir=ckpt)
    out = tmp_path / "hf"
    convert_lit_checkpoint(checkpoint_dir=ckpt, output_dir=out)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(hf_logits_of(out, idx), hf(idx).logits)


def test_named_tiny_configs_export(tmp_path):
    """Randomly initialised lit models of the named tiny configs export and load in transformers."""
    for name in ("tiny-llama", "tiny-neox"):
        config = Config.from_name(name)
        torch.manual_seed(0)
        model = GPT(config).eval()
        ckpt = tmp_path / name
        ckpt.mkdir()
        torch.save(model.state_dict(), ckpt / "lit_model.pth")
        config.save(ckpt)
        convert_lit_checkpoint(checkpoint_dir=ckpt, output_dir=tmp_path / f"{name}-hf")
        idx = tokens()
        with torch.no_grad():
            torch.testing.assert_close(hf_logits_of(tmp_path / f"{name}-hf", idx), model(idx), msg=name)


def test_architecture_choice():
    assert hf_architecture(Config.from_name("Llama-2-7b-hf")) == "LlamaForCausalLM"
    assert hf_architecture(Config.from_name("Mistral-7B-v0.1")) == "MistralForCausalLM"
    assert hf_architecture(Config.from_name("Qwen2.5-7B")) == "Qwen2ForCausalLM"
    assert hf_architecture(Config.from_name("Qwen-7B")) == "Qwen2ForCausalLM"
    assert hf_architecture(Config.from_name("pythia-160m")) == "GPTNeoXForCausalLM"
    assert hf_architecture(Config.from_name("stablelm-base-alpha-3b")) == "GPTNeoXForCausalLM"
    assert hf_architecture(Config.from_name("stablelm-3b-4e1t")) == "StableLmForCausalLM"
    assert hf_architecture(Config.from_name("falcon-7b")) == "FalconForCausalLM"
    assert hf_architecture(Config.from_name("phi-2")) == "PhiForCausalLM"
    assert hf_architecture(Config.from_name("SmolLM2-135M")) == "LlamaForCausalLM"


def test_unmerged_adapter_weights_are_refused():
    config = Config.from_name("tiny-llama")
    sd = GPT(config).state_dict()
    sd["transformer.h.0.attn.attn.lora_A"] = torch.zeros(4, 64)
    with pytest.raises(ValueError, match="lora_A"):
        convert_lit_to_hf(sd, config)


def test_cli_errors(tmp_path):
    script = "scripts/convert_lit_checkpoint.py"
    proc = run_script(script, "--checkpoint_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "out"))
    assert_one_line_error(proc, "does not exist")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "lit_model.pth").write_bytes(b"")
    proc = run_script(script, "--checkpoint_dir", str(tmp_path / "half"), "--output_dir", str(tmp_path / "out"))
    assert_one_line_error(proc, "model_config.yaml")
