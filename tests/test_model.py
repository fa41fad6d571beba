"""lit_gpt.model behaviour that does not depend on a checkpoint: masks, positions, grouped queries, the KV cache."""

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.model import GPT, Group, left_padded_attention, packed_attention


def tiny(name: str = "tiny-llama", seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(Config.from_name(name, **overrides)).eval()
    with torch.no_grad():  # random norm scales and biases too, so nothing is left at its trivial init
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if n.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
    return model


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-neox"])
def test_packed_attention_gives_the_separate_logits(name):
    model = tiny(name)
    a, b, c = ids(1, 5, seed=1), ids(1, 4, seed=2), ids(1, 3, seed=3)
    packed = torch.cat([a, b, c], dim=1)
    segment_ids = torch.tensor([[0] * 5 + [1] * 4 + [2] * 3])
    mask, position_ids = packed_attention(segment_ids)
    assert position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2]]
    with torch.no_grad():
        out = model(packed, position_ids=position_ids, mask=mask)
        torch.testing.assert_close(out, torch.cat([model(a), model(b), model(c)], dim=1))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-neox"])
def test_left_padded_attention_gives_each_row_its_unpadded_logits(name):
    model = tiny(name)
    rows = [ids(1, 7, seed=1), ids(1, 4, seed=2), ids(1, 6, seed=3)]
    T = 7
    pads = torch.tensor([T - r.shape[1] for r in rows])
    batch = torch.cat([torch.cat([torch.zeros(1, p, dtype=torch.long), r], dim=1) for p, r in zip(pads.tolist(), rows)])
    mask, position_ids = left_padded_attention(pads, T, T)
    with torch.no_grad():
        out = model(batch, position_ids=position_ids, mask=mask)
        for i, (p, r) in enumerate(zip(pads.tolist(), rows)):
            torch.testing.assert_close(out[i, p:], model(r)[0])


def test_left_padded_decoding_with_the_kv_cache():
    """Batched generation: prefill left-padded prompts, then decode a token per row from the cache."""
    model = tiny("tiny-llama")
    rows = [ids(1, 6, seed=1), ids(1, 3, seed=2)]
    nxt = ids(2, 1, seed=4)
    T, S = 6, 8
    pads = torch.tensor([T - r.shape[1] for r in rows])
    batch = torch.cat([torch.cat([torch.zeros(1, p, dtype=torch.long), r], dim=1) for p, r in zip(pads.tolist(), rows)])
    with torch.no_grad():
        model.set_kv_cache(batch_size=2, max_seq_length=S)
        mask, position_ids = left_padded_attention(pads, T, S, input_pos=torch.arange(T))
        model(batch, torch.arange(T), position_ids=position_ids, mask=mask)
        pos = torch.tensor([T])
        mask, position_ids = left_padded_attention(pads, 1, S, input_pos=pos)
        step = model(nxt, pos, position_ids=position_ids, mask=mask)
        model.clear_kv_cache()
        for i, r in enumerate(rows):
            torch.testing.assert_close(step[i, 0], model(torch.cat([r, nxt[i : i + 1]], dim=1))[0, -1])


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-neox"])
def test_forward_groups_equals_each_group_on_its_own(name):
    """Two rows decoding a token each beside a third row prefilling the second chunk of its prompt, in one pass: the
    same hidden states and cache contents as the two batches run one after the other, and the chunked prompt's
    states equal the plain uncached forward's."""
    model = tiny(name)
    a, b, nxt = ids(2, 6, seed=1), ids(1, 9, seed=2), ids(2, 1, seed=3)
    pads = torch.tensor([0, 2])  # row 1's prompt is 4 tokens, left-padded
    visible = lambda T, S, start: (torch.arange(S) >= start).expand(1, T, S)  # noqa: E731

    def run(grouped: bool):
        model.set_kv_cache(batch_size=3, max_seq_length=16)
        with torch.no_grad():
            mask, pos_ids = left_padded_attention(pads, 6, 6)
            model.forward_groups([Group(a, slice(0, 2), torch.arange(6), pos_ids, mask)])
            # row 2's prompt sits at slots 3..11: its first 5 tokens now
            model.forward_groups([Group(b[:, :5], slice(2, 3), torch.arange(3, 8), torch.arange(5)[None], visible(5, 8, 3))])
            dmask, dpos = left_padded_attention(pads, 1, 7, torch.tensor([6]))
            decode = Group(nxt, slice(0, 2), torch.tensor([6]), dpos, dmask)
            chunk = Group(b[:, 5:], slice(2, 3), torch.arange(8, 12), torch.arange(5, 9)[None], visible(4, 12, 3))
            out = model.forward_groups([decode, chunk]) if grouped else \
                [model.forward_groups([decode])[0], model.forward_groups([chunk])[0]]
            cache = [torch.cat([blk.attn.kv_cache.k[:, :, :12], blk.attn.kv_cache.v[:, :, :12]])
                     for blk in model.transformer.h]
        return out, cache

    grouped, cache_grouped = run(True)
    alone, cache_alone = run(False)
    for x, y in zip(grouped + cache_grouped, alone + cache_alone):
        torch.testing.assert_close(x, y)
    model.clear_kv_cache()
    with torch.no_grad():
        torch.testing.assert_close(grouped[1], model(b, return_hidden=True)[:, 5:])
        for i, prompt in enumerate([a[:1], a[1:, 2:]]):  # the decode rows: each prompt plus its token, unpadded
            full = model(torch.cat([prompt, nxt[i : i + 1]], dim=1), return_hidden=True)
            torch.testing.assert_close(grouped[0][i, -1], full[0, -1])


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-neox"])
def test_forward_groups_key_start_skips_slots_the_mask_hides(name):
    """A row whose prompt starts at slot 5: reading its keys from slot 5 gives what masking slots 0-4 gives."""
    model = tiny(name)
    prompt = ids(1, 7, seed=4)
    outs = []
    for key_start in (0, 5):
        model.set_kv_cache(batch_size=1, max_seq_length=16)
        with torch.no_grad():
            for blk in model.transformer.h:  # garbage in the skipped slots: it must not be read
                blk.attn.kv_cache.k.normal_()
                blk.attn.kv_cache.v.normal_()
            mask = (torch.arange(key_start, 12) >= 5).expand(1, 7, 12 - key_start)
            group = Group(prompt, slice(0, 1), torch.arange(5, 12), torch.arange(7)[None], mask, key_start=key_start)
            outs.append(model.forward_groups([group])[0])
    torch.testing.assert_close(outs[0], outs[1])
    model.clear_kv_cache()
    with torch.no_grad():
        torch.testing.assert_close(outs[1], model(prompt, return_hidden=True))


def test_sliding_window_mask():
    window = 3
    model = tiny("tiny-llama", sliding_window_size=window)
    mask = model._attention_mask(torch.arange(6), None, torch.device("cpu"))[0, 0]
    q, k = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    assert torch.equal(mask, (k <= q) & (q - k < window))


def test_sliding_window_limits_what_a_one_layer_model_sees():
    """With one layer, position t sees only the last `window` tokens, and RoPE is relative, so its logits are those
    of a forward over just those tokens."""
    window, T = 3, 9
    model = tiny("tiny-llama", n_layer=1, sliding_window_size=window)
    idx = ids(1, T)
    with torch.no_grad():
        out = model(idx)
        for t in range(window, T):
            torch.testing.assert_close(out[0, t], model(idx[:, t - window + 1 : t + 1])[0, -1])
        # ... which a full-attention model does not do
        model.config.sliding_window_size = None
        assert not torch.allclose(model(idx)[0, -1], out[0, -1], atol=1e-4)


@pytest.mark.parametrize("n_query_groups", [1, 2, 4])
def test_grouped_queries_match_multi_head_with_repeated_key_values(n_query_groups):
    """GQA/MQA: query head h uses key/value group h // (n_head // n_query_groups) (repeat_interleave, as in
    transformers' repeat_kv), so repeating each group's k/v rows gives an equivalent multi-head model."""
    gqa = tiny("tiny-llama", n_query_groups=n_query_groups)
    cfg = gqa.config
    hs, nh, ng = cfg.head_size, cfg.n_head, cfg.n_query_groups
    assert gqa.transformer.h[0].attn.attn.weight.shape == ((nh + 2 * ng) * hs, cfg.n_embd)
    mha = GPT(Config.from_name("tiny-llama", n_query_groups=nh)).eval()
    sd = dict(gqa.state_dict())
    for i in range(cfg.n_layer):
        q, k, v = sd[f"transformer.h.{i}.attn.attn.weight"].split((nh * hs, ng * hs, ng * hs))
        k, v = (x.reshape(ng, hs, -1).repeat_interleave(nh // ng, dim=0).reshape(nh * hs, -1) for x in (k, v))
        sd[f"transformer.h.{i}.attn.attn.weight"] = torch.cat((q, k, v))
    mha.load_state_dict(sd)
    idx = ids(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx), mha(idx))
        gqa.set_kv_cache(batch_size=2, max_seq_length=10)
        assert gqa.transformer.h[0].attn.kv_cache.k.shape == (2, ng, 10, hs)
        torch.testing.assert_close(gqa(idx, torch.arange(8)), mha(idx))


def test_kv_cache_errors():
    model = tiny("tiny-llama")
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="set_kv_cache"):
            model(ids(1, 2), torch.arange(2))
        model.set_kv_cache(batch_size=1, max_seq_length=4)
        model(ids(1, 4), torch.arange(4))
        with pytest.raises(ValueError, match="KV cache holds 4 positions, got position 4"):
            model(ids(1, 1), torch.tensor([4]))
        model.clear_kv_cache()
        with pytest.raises(ValueError, match="longer than max_seq_length"):
            model(ids(1, model.config.block_size + 1))


def test_tied_embeddings_share_one_parameter():
    model = tiny("tiny-llama", tie_embeddings=True)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert set(model.state_dict()) >= {"lm_head.weight", "transformer.wte.weight"}


def test_attach_kv_cache_reads_and_writes_the_callers_tensors_in_place():
    """Views of a larger storage (rows 1-2, slots 3..) as the cache: the forward writes the storage itself and
    gives what a cache of its own gives."""
    model = tiny("tiny-llama")
    cfg = model.config
    idx = ids(2, 6)
    with torch.no_grad():
        model.set_kv_cache(batch_size=2, max_seq_length=8)
        own = model(idx, torch.arange(6))
        own_k = [blk.attn.kv_cache.k[:, :, :6].clone() for blk in model.transformer.h]
        model.clear_kv_cache()
        storage = [torch.zeros(4, cfg.n_query_groups, 12, cfg.head_size) for _ in range(2 * cfg.n_layer)]
        keys, values = storage[: cfg.n_layer], storage[cfg.n_layer :]
        model.attach_kv_cache([k[1:3, :, 3:] for k in keys], [v[1:3, :, 3:] for v in values])
        torch.testing.assert_close(model(idx, torch.arange(6)), own)
    for k, expected in zip(keys, own_k):
        torch.testing.assert_close(k[1:3, :, 3:9], expected)
        assert not k[0].any() and not k[3].any() and not k[:, :, :3].any()
    with pytest.raises(ValueError, match=f"needs {cfg.n_layer} key and value tensors"):
        model.attach_kv_cache(keys[:1], values[:1])
    with pytest.raises(ValueError, match="KV tensors must be"):
        model.attach_kv_cache([k.transpose(1, 2) for k in keys], values)
    model.clear_kv_cache()


def test_gradient_checkpointing_gives_the_same_gradients():
    """The attention plan passes through torch.utils.checkpoint like any other argument."""
    model = tiny("tiny-llama").train()
    mask, position_ids = packed_attention(torch.tensor([[0] * 5 + [1] * 3]))
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = checkpointing
        model(ids(1, 8), position_ids=position_ids, mask=mask).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
