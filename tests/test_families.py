"""lit_gpt.families: the saved architecture, the inference for old model_config.yaml files, and the lookups."""

import dataclasses

import pytest
import torch
import yaml

from lit_gpt.config import CONFIG_FILENAME, Config, name_to_config
from lit_gpt.families import FAMILIES, can_hold, family, family_of, hf_architecture, hf_family, infer_architecture
from lit_gpt.utils import UserError


@pytest.mark.parametrize("name", sorted(n for n in name_to_config if not n.startswith("tiny-")))
def test_named_configs_save_the_architecture_their_fields_describe(name):
    """Every real named config says its architecture, and an old model_config.yaml of the same model (without
    the field) infers one that exports the same way."""
    config = Config.from_name(name)
    assert config.architecture in {f.name for f in FAMILIES}
    assert hf_architecture(dataclasses.replace(config, architecture=None)) == hf_architecture(config)


def test_old_model_config_without_architecture_loads_by_inference(tmp_path):
    fields = dataclasses.asdict(Config.from_name("Qwen2.5-0.5B"))
    del fields["architecture"]
    (tmp_path / CONFIG_FILENAME).write_text(yaml.safe_dump(fields))
    config = Config.from_checkpoint(tmp_path)
    assert config.architecture is None
    assert family_of(config).name == infer_architecture(config) == "Qwen2ForCausalLM"
    config.save(tmp_path)  # saving keeps it readable, with the field now present
    assert "architecture" in yaml.safe_load((tmp_path / CONFIG_FILENAME).read_text())


def test_unknown_saved_architecture_is_a_one_line_error():
    config = Config.from_name("tiny-llama", architecture="GemmaForCausalLM")
    with pytest.raises(UserError, match="tiny-llama: unknown architecture 'GemmaForCausalLM'.*supported"):
        family_of(config)


def test_config_json_lookup_by_architecture_alias_and_model_type():
    assert hf_family({"architectures": ["RWForCausalLM"]}) is family("FalconForCausalLM")
    assert hf_family({"model_type": "RefinedWebModel"}) is family("FalconForCausalLM")
    assert hf_family({"model_type": "qwen"}).name == "QWenLMHeadModel"
    with pytest.raises(UserError, match="unsupported architecture 'gemma'"):
        hf_family({"model_type": "gemma"})


def test_which_checkpoints_hold_which_models():
    assert can_hold(family("LlamaForCausalLM"), "MistralForCausalLM")  # the same weight names
    assert can_hold(family("RWForCausalLM"), "FalconForCausalLM")
    assert can_hold(family("QWenLMHeadModel"), "Qwen2ForCausalLM")  # Qwen-1 holds Qwen2 models
    assert not can_hold(family("QWenLMHeadModel"), "LlamaForCausalLM")
    assert not can_hold(family("GPTNeoXForCausalLM"), "LlamaForCausalLM")


def test_a_converted_qwen1_checkpoint_names_its_weights_without_config_json(tmp_path):
    """The saved architecture, not a look at the weight names, says a Qwen-1 checkpoint holds `c_attn`."""
    from tiny_hf import qwen1_checkpoint

    from lit_gpt.hf_weights import convert_hf_to_lit, hf_weight_files, iter_hf_weights
    from scripts.convert_hf_checkpoint import convert_hf_checkpoint

    ckpt, _ = qwen1_checkpoint(tmp_path)
    convert_hf_checkpoint(checkpoint_dir=ckpt)
    config = Config.from_checkpoint(ckpt)
    assert config.architecture == "QWenLMHeadModel" and hf_architecture(config) == "Qwen2ForCausalLM"
    (ckpt / "config.json").unlink()
    again = convert_hf_to_lit(iter_hf_weights(hf_weight_files(ckpt)), config, family_of(config).name)
    saved = torch.load(ckpt / "lit_model.pth", weights_only=True)
    assert saved.keys() == again.keys()
    assert all(torch.equal(saved[k], again[k]) for k in saved)
