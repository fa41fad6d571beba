"""The engine's KV storage, prefix cache and model-cache binding on a tiny random model."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.model import GPT
from submission.kv_cache import KVStorage, PrefixCache, bind_model_cache, slots_needed
from submission.request import Completion, Request, SamplingParams


def tiny_model() -> GPT:
    config = Config(name="tiny", block_size=64, vocab_size=50, padded_vocab_size=50, n_layer=2, n_head=4, n_embd=16,
                    n_query_groups=2, bias=False, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP",
                    intermediate_size=32)
    torch.manual_seed(0)
    return GPT(config).eval()


def request(n_ids: int, max_new: int, generated: int = 0) -> Request:
    r = Request(list(range(1, n_ids + 1)), SamplingParams(max_new_tokens=max_new), Future())
    if generated:
        r.out = Completion(prompt_ids=r.ids, new_ids=[7] * generated, new_logprobs=[], new_top=[])
    return r


def filled(storage: KVStorage, slots: int) -> None:
    """Every value says where it is: layer, k/v, row and slot."""
    storage.ensure(slots)
    for layer, (k, v) in enumerate(zip(storage.k, storage.v)):
        for kind, t in enumerate((k, v)):
            rows, _, cap, _ = t.shape
            t.copy_((1000 * layer + 100 * kind + 10 * torch.arange(rows).view(-1, 1, 1, 1)
                     + torch.arange(cap).view(1, 1, -1, 1) / 1000).expand_as(t))


def test_slots_needed_counts_what_each_request_may_still_write():
    running, new = request(5, 10, generated=3), request(4, 5)
    assert running.remaining == 7 and new.remaining == 5
    assert slots_needed(20, [running, new]) == 27
    assert slots_needed(20, [new]) == 25
    assert slots_needed(20, []) == 20


def test_storage_grows_keeping_its_contents_and_moves_and_shifts_rows():
    model = tiny_model()
    storage = KVStorage(model, rows=4, max_slots=300)
    storage.ensure(10)
    assert storage.capacity == 256 and len(storage.k) == len(storage.v) == 2
    assert storage.k[0].shape == (4, 2, 256, 4)
    filled(storage, 10)
    before = storage.read(2, 0, 256)
    storage.ensure(257)  # doubling would pass max_slots: it stops there
    assert storage.capacity == 300
    torch.testing.assert_close(storage.read(2, 0, 256), before)
    storage.ensure(400)  # more than max_slots only when asked for
    assert storage.capacity == 400

    filled(storage, 400)
    kv = storage.read(1, 5, 9)
    assert kv.shape == (2, 2, 2, 4, 4)
    storage.write(3, 100, kv)
    torch.testing.assert_close(storage.read(3, 100, 104), kv)

    row0 = storage.read(0, 0, 50)
    storage.move(torch.tensor([1]), torch.tensor([0]), slice(0, 50))  # index tensors, as when packing the batch
    torch.testing.assert_close(storage.read(1, 0, 50), row0)
    storage.move(2, 0, slice(10, 20))
    torch.testing.assert_close(storage.read(2, 10, 20), row0[:, :, :, 10:20])

    rows3 = [storage.read(r, 0, 30) for r in range(3)]
    storage.shift(3, 30, 8)  # the first 3 rows' slots 0..29 move 8 right
    for r in range(3):
        torch.testing.assert_close(storage.read(r, 8, 38), rows3[r])
    storage.shift(3, 38, -8)
    for r in range(3):
        torch.testing.assert_close(storage.read(r, 0, 30), rows3[r])
    storage.release()
    assert storage.capacity == 0 and storage.k == []


def test_bound_model_cache_reads_and_writes_the_storage_in_place():
    model = tiny_model()
    storage = KVStorage(model, rows=3, max_slots=64)
    storage.ensure(16)
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.inference_mode():
        bind_model_cache(model, storage, slice(2, 3), slice(4, 9))  # row 2, slots 4..8
        out = model(idx, torch.arange(5))
        assert storage.k[0][2, :, 4:9].abs().sum() > 0
        assert storage.k[0][:2].abs().sum() == 0 and storage.k[0][2, :, :4].abs().sum() == 0
        bind_model_cache(model, None)
        assert model.transformer.h[0].attn.kv_cache is None
        torch.testing.assert_close(out, model(idx))  # the same as without a cache


def test_prefix_cache_finds_the_longest_cached_prefix_and_drops_the_least_recently_used():
    cache = PrefixCache(max_bytes=2 * 2 * 2 * 4 * 4 * 4 * 2, block=4)  # two blocks of (2, 2, 2, 4, 4) floats

    def read(a: int, b: int) -> torch.Tensor:
        return torch.arange(a, b, dtype=torch.float32).view(1, 1, 1, -1, 1).expand(2, 2, 2, -1, 4)

    ids = list(range(10, 20))
    assert cache.lookup(ids) is None
    cache.store(ids, read)  # two whole blocks of 10 tokens
    assert len(cache.blocks) == 2
    kv = cache.lookup(ids[:9])
    assert kv.shape[3] == 8 and kv[0, 0, 0, :, 0].tolist() == list(range(8)) and cache.hit_tokens == 8
    assert cache.lookup(ids[:8]).shape[3] == 4  # one token is always left to compute
    assert cache.lookup([10, 11, 12, 99, 14]) is None  # its first block differs
    assert cache.first_block_cached(ids) and not cache.first_block_cached([1, 2, 3, 4])
    cache.store([1, 2, 3, 4, 5], read)  # a third block: the least recently used goes
    assert len(cache.blocks) == 2 and cache.bytes <= cache.max_bytes
    assert cache.first_block_cached([1, 2, 3, 4])
    assert cache.lookup(ids[:9]).shape[3] == 4  # its second block was the least recently used


def test_a_read_is_ordered_layer_then_keys_and_values():
    storage = KVStorage(tiny_model(), rows=2, max_slots=64)
    filled(storage, 8)
    kv = storage.read(1, 2, 5)  # row 1, slots 2..4
    assert kv[1, 0, 0, :, 0].tolist() == pytest.approx([1010.002, 1010.003, 1010.004])  # layer 1, keys
    assert kv[0, 1, 1, 0, 3].item() == pytest.approx(110.002)  # layer 0, values
