import torch
import torch.nn.functional as F

from lit_gpt.batching import (
    IGNORE_INDEX,
    length_grouped_batches,
    pack_bins,
    pack_collate,
    packed_batches,
    pad_collate,
)
from lit_gpt.config import Config
from lit_gpt.model import GPT, packed_attention


def examples(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 12, (1,), generator=g))
        ids = torch.randint(1, 256, (k,), generator=g)
        labels = ids.clone()
        labels[: k // 2] = IGNORE_INDEX  # prompt part
        out.append({"input_ids": ids, "labels": labels})
    return out


def per_example_losses(model, batch, rows):
    """Sum of token losses of each example, given (row, start, length) per example."""
    kwargs = {}
    if "segment_ids" in batch:
        mask, pos = packed_attention(batch["segment_ids"])
        kwargs = dict(mask=mask, position_ids=pos)
    logits = model(batch["input_ids"], **kwargs)
    tok = F.cross_entropy(logits.transpose(1, 2), batch["targets"], ignore_index=IGNORE_INDEX, reduction="none")
    return [tok[r, s:s + n].sum() for r, s, n in rows]


def test_pad_collate_shifts_targets_and_ignores_padding():
    exs = examples(3)
    b = pad_collate(exs, pad_id=0)
    T = max(len(e["input_ids"]) for e in exs)
    assert b["input_ids"].shape == b["targets"].shape == (3, T)
    for i, e in enumerate(exs):
        n = len(e["input_ids"])
        assert torch.equal(b["input_ids"][i, :n], e["input_ids"])
        assert torch.equal(b["targets"][i, : n - 1], e["labels"][1:])
        assert (b["targets"][i, n - 1:] == IGNORE_INDEX).all()
    assert int(b["num_tokens"]) == sum(len(e["input_ids"]) for e in exs)


def test_packed_batches_give_the_same_per_example_losses_as_unpacked():
    torch.manual_seed(0)
    model = GPT(Config.from_name("tiny-llama")).eval()  # RoPE: positions must restart per example
    exs = examples(7)
    bins = [[0, 1, 2], [3, 4], [5, 6]]
    packed = pack_collate([[exs[i] for i in b] for b in bins])
    rows, order = [], []
    for r, b in enumerate(bins):
        start = 0
        for i in b:
            n = len(exs[i]["input_ids"])
            rows.append((r, start, n))
            order.append(i)
            start += n
    padded = pad_collate(exs)
    with torch.no_grad():
        got = per_example_losses(model, packed, rows)
        want = per_example_losses(model, padded, [(i, 0, len(e["input_ids"])) for i, e in enumerate(exs)])
    for i, loss in zip(order, got):
        torch.testing.assert_close(loss, want[i], atol=1e-4, rtol=1e-5)
    # no loss across an example boundary, and none on the padding segment
    assert int((packed["targets"] != IGNORE_INDEX).sum()) == int((padded["targets"] != IGNORE_INDEX).sum())


def test_packing_without_segment_ids_would_differ():
    """The mask and positions matter: packing without them changes the losses (guards the test above)."""
    torch.manual_seed(0)
    model = GPT(Config.from_name("tiny-llama")).eval()
    exs = examples(2)
    packed = pack_collate([[exs[0], exs[1]]])
    n0, n1 = len(exs[0]["input_ids"]), len(exs[1]["input_ids"])
    with torch.no_grad():
        right = per_example_losses(model, packed, [(0, n0, n1)])[0]
        del packed["segment_ids"]
        wrong = per_example_losses(model, packed, [(0, n0, n1)])[0]
    assert not torch.allclose(right, wrong)


def test_length_grouped_batches_cover_everything_once_longest_first():
    lengths = torch.randint(1, 500, (103,), generator=torch.Generator().manual_seed(0))
    batches = length_grouped_batches(lengths, 4, torch.Generator().manual_seed(1), mega_batch_mult=5)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(103))
    assert int(lengths[batches[0]].max()) == int(lengths.max())
    # grouping: far less padding than random batches
    pad = sum(len(b) * int(lengths[b].max()) - int(lengths[b].sum()) for b in batches)
    perm = torch.randperm(103, generator=torch.Generator().manual_seed(2)).tolist()
    rand = [perm[i:i + 4] for i in range(0, 103, 4)]
    pad_rand = sum(len(b) * int(lengths[b].max()) - int(lengths[b].sum()) for b in rand)
    assert pad < pad_rand / 2
    # deterministic given the generator's seed (resuming rebuilds the same order)
    again = length_grouped_batches(lengths, 4, torch.Generator().manual_seed(1), mega_batch_mult=5)
    assert again == batches


def test_pack_bins_respect_capacity_and_keep_every_example():
    lengths = torch.randint(1, 100, (200,), generator=torch.Generator().manual_seed(0))
    bins = pack_bins(lengths, 128, torch.Generator().manual_seed(0))
    assert sorted(i for b in bins for i in b) == list(range(200))
    assert all(int(lengths[b].sum()) <= 128 for b in bins)
    assert len(bins) <= int(lengths.sum()) // 128 + 5  # nearly full bins
    batches = packed_batches(lengths, 3, 128, torch.Generator().manual_seed(0))
    fullest = max(max(int(lengths[b].sum()) for b in batch) for batch in batches)
    assert max(int(lengths[b].sum()) for b in batches[0]) == fullest
