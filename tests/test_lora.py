import pytest
import torch
import torch.nn as nn

from lit_gpt.config import Config
from lit_gpt.lora import (
    LoRAConfig,
    LoRALinear,
    inject_lora,
    load_lora_state_dict,
    lora_layers,
    lora_state_dict,
    mark_only_lora_as_trainable,
    merge_lora,
    merged_state_dict,
    unmerge_lora,
)
from lit_gpt.model import GPT

ALL = dict(query=True, key=True, value=True, projection=True, mlp=True, head=True)


def lora_model(name="tiny-llama", seed=0, **lora_kw):
    torch.manual_seed(seed)
    model = GPT(Config.from_name(name))
    inject_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0, **lora_kw))
    # B starts at zero; give it values so the LoRA path matters
    for layer in lora_layers(model):
        nn.init.normal_(layer.lora_B, std=0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-neox"])
@pytest.mark.parametrize("flags", [ALL, dict(query=True, value=True), dict(key=True), dict(mlp=True, head=True)])
def test_merged_output_equals_unmerged(name, flags):
    model = lora_model(name, **{**{k: False for k in ALL}, **flags})
    x = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        unmerged = model(x)
        merge_lora(model)
        merged = model(x)
        # the merged weights in an ordinary GPT give the same output
        plain = GPT(model.config).eval()
        plain.load_state_dict(merged_state_dict(model))
        again = plain(x)
        unmerge_lora(model)
        back = model(x)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back, unmerged, atol=1e-5, rtol=1e-5)


def test_lora_is_a_no_op_at_init_and_changes_output_after():
    torch.manual_seed(0)
    base = GPT(Config.from_name("tiny-llama")).eval()
    x = torch.randint(0, 256, (1, 10))
    with torch.no_grad():
        ref = base(x)
        inject_lora(base, LoRAConfig(r=4, dropout=0.0, **ALL))
        torch.testing.assert_close(base(x), ref)  # B == 0
        for layer in lora_layers(base):
            nn.init.normal_(layer.lora_B, std=0.1)
        assert not torch.allclose(base(x), ref)


@pytest.mark.parametrize("enabled", [(True, False, False), (False, True, False), (False, False, True), (True, False, True)])
def test_fused_qkv_touches_only_enabled_rows(enabled):
    config = Config.from_name("tiny-llama")  # GQA: 4 query heads, 2 key/value groups
    model = lora_model(query=enabled[0], key=enabled[1], value=enabled[2])
    layer = model.transformer.h[0].attn.attn
    assert isinstance(layer, LoRALinear)
    hs, nh, ng = config.head_size, config.n_head, config.n_query_groups
    x = torch.randn(3, config.n_embd)
    with torch.no_grad():
        delta = layer(x) - layer.linear(x)
    q, k, v = delta.split((nh * hs, ng * hs, ng * hs), dim=-1)
    for part, on in zip((q, k, v), enabled):
        assert (part.abs().max() > 0) == on
    # each enabled part is its own rank-r update: B_part @ A_part, as separate q/k/v projections would have
    torch.testing.assert_close(delta, x @ layer.delta_weight().T, atol=1e-5, rtol=1e-5)
    # parameter count: one (r x in) A per enabled part, B rows only for enabled parts
    sizes = [nh * hs, ng * hs, ng * hs]
    assert layer.lora_A.shape == (4 * sum(enabled), config.n_embd)
    assert layer.lora_B.shape == (sum(s for s, e in zip(sizes, enabled) if e), 4)


def test_only_lora_parameters_require_grad_and_get_gradients():
    model = lora_model(**ALL).train()
    mark_only_lora_as_trainable(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n for n, _ in model.named_parameters() if "lora_" in n} == trainable
    model(torch.randint(0, 256, (2, 8))).sum().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == ("lora_" in n), n


def test_lora_state_dict_roundtrip_and_mismatch():
    a = lora_model(seed=0, query=True, value=True)
    b = lora_model(seed=1, query=True, value=True)
    sd = lora_state_dict(a)
    assert sd and all("lora_" in k for k in sd)
    load_lora_state_dict(b, sd)
    for k, v in lora_state_dict(b).items():
        assert torch.equal(v, sd[k])
    c = lora_model(seed=0, query=True, value=True, mlp=True)
    with pytest.raises(ValueError, match="do not match the LoRA config"):
        load_lora_state_dict(c, sd)


def test_merging_a_lora_head_unties_the_embedding():
    torch.manual_seed(0)
    config = Config.from_name("tiny-llama", tie_embeddings=True)
    model = GPT(config).eval()
    wte_before = model.transformer.wte.weight.detach().clone()
    inject_lora(model, LoRAConfig(r=4, dropout=0.0, query=False, value=False, head=True))
    nn.init.normal_(model.lm_head.lora_B, std=0.1)
    x = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        ref = model(x)
        merge_lora(model)
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.transformer.wte.weight, wte_before)
    assert model.config.tie_embeddings is False
    plain = GPT(model.config).eval()
    plain.load_state_dict(merged_state_dict(model))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ref, atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = GPT(Config.from_name("tiny-llama"))
    inject_lora(model, LoRAConfig(r=4, dropout=0.5, **ALL))
    for layer in lora_layers(model):
        nn.init.normal_(layer.lora_B, std=0.1)
    x = torch.randint(0, 256, (1, 6))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_config_validation():
    with pytest.raises(ValueError, match="no layer"):
        LoRAConfig(query=False, value=False)
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(r=0)
