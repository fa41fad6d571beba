"""The engine's KV storage, the prefix cache over it, and the one place the model's KV cache is pointed at it.

Every layer's keys/values live in one storage tensor each, (rows, groups, capacity, head_size), grown on demand.
The scheduler decides which row and slots a request uses; this module only moves data: grow, write (a cached
prefix into a row), read (a prompt's keys/values for the prefix cache), move rows (packing the batch) and shift
them (making room on the left, or trimming padding).

The prefix cache: HELM's prompts repeat long prefixes (every MMLU question of a subject starts with the same 5-shot
examples, every GSM8K question with the same chain-of-thought examples). After a prefill, the keys/values of each
prompt are kept in blocks of 16 tokens, keyed by everything up to the block's end; a later prompt copies the blocks
of its longest cached prefix into its cache slots and computes only the rest. Keys are cached after the rotary
embedding at the prompt's own positions (which start at 0 whatever the slot), so they are valid in any row.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable, Optional, Union

import torch

from lit_gpt.model import GPT, Group, left_padded_attention

Rows = Union[int, slice, torch.Tensor]


def slots_needed(pos: int, requests: Iterable) -> int:
    """The cache slots `requests` need to finish when each writes its next token at slot `pos`: `r.remaining` more
    tokens each (the last one sampled is never written, which leaves one slot spare)."""
    return max((pos + r.remaining for r in requests), default=pos)


class KVStorage:
    """Keys and values of every layer for `rows` cache rows, `capacity` slots each (grown up to `max_slots`)."""

    def __init__(self, model: GPT, rows: int, max_slots: int) -> None:
        cfg, weight = model.config, model.transformer.wte.weight
        self.n_layer, self.max_slots = cfg.n_layer, max_slots
        self.shape = (rows, cfg.n_query_groups, cfg.head_size)
        self.device = weight.device
        self.dtype = weight.dtype if weight.is_floating_point() else torch.float32
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    def ensure(self, slots: int) -> None:
        """Grows every tensor to hold `slots` slots: at least doubling (or 256), at most `max_slots` (unless more is
        asked for)."""
        if slots <= self.capacity:
            return
        capacity = min(max(slots, 2 * self.capacity, 256), max(self.max_slots, slots))
        B, G, hs = self.shape
        for store in (self.k, self.v):
            for i in range(self.n_layer):
                grown = torch.zeros(B, G, capacity, hs, device=self.device, dtype=self.dtype)
                if i < len(store):
                    grown[:, :, : self.capacity] = store[i]
                    store[i] = grown
                else:
                    store.append(grown)
        self.capacity = capacity

    def release(self) -> None:
        self.k, self.v, self.capacity = [], [], 0

    def write(self, row: int, start: int, kv: torch.Tensor) -> None:
        """Puts cached keys/values (n_layer, 2, groups, n, head_size) into `row`'s slots start..start+n-1."""
        end = start + kv.shape[3]
        for layer, (k, v) in enumerate(zip(self.k, self.v)):
            k[row, :, start:end] = kv[layer, 0]
            v[row, :, start:end] = kv[layer, 1]

    def read(self, row: int, start: int, end: int) -> torch.Tensor:
        """`row`'s keys/values in slots start..end-1 as (n_layer, 2, groups, end - start, head_size)."""
        return torch.stack([torch.stack([k[row, :, start:end], v[row, :, start:end]]) for k, v in zip(self.k, self.v)])

    def move(self, dst: Rows, src: Rows, slots: slice) -> None:
        """Copies rows `src` to rows `dst` (ints, or index tensors of disjoint rows), in slots `slots`."""
        for t in (*self.k, *self.v):
            t[dst, :, slots] = t[src, :, slots]

    def shift(self, rows: int, pos: int, offset: int) -> None:
        """Moves the first `rows` rows' slots 0..pos-1 `offset` slots right (> 0) or left (< 0)."""
        for t in (*self.k, *self.v):
            if offset > 0:
                t[:rows, :, offset : pos + offset] = t[:rows, :, :pos].clone()
            else:
                t[:rows, :, : pos + offset] = t[:rows, :, -offset:pos].clone()


# -- The model's side: the only code that reaches into the model's KV cache (the model reads and writes its cache in
# place, so every layer's cache is pointed at a view of the storage before a pass) and builds its attention inputs
# (left-padding masks, rotary positions, `forward_groups` groups) from the slot layout.
def bind_model_cache(model: GPT, storage: Optional[KVStorage], rows: slice = slice(None),
                     slots: slice = slice(None)) -> None:
    """Points every layer's KV cache at `storage`'s rows and slots (None: drops the model's cache)."""
    if storage is None:
        model.clear_kv_cache()
        return
    model.attach_kv_cache([k[rows, :, slots] for k in storage.k], [v[rows, :, slots] for v in storage.v])


def prefill_inputs(prompts: list[list[int]], computed: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(idx, input_pos, position_ids, mask) of a pass over the last `computed` tokens of `prompts` left-padded to
    the longest (the tokens before come from the prefix cache), at slots counted from the batch's first slot."""
    longest = max(len(p) for p in prompts)
    pads = torch.tensor([longest - len(p) for p in prompts], device=device)
    idx = torch.tensor([([0] * (longest - len(p)) + p)[longest - computed:] for p in prompts], device=device)
    input_pos = torch.arange(longest - computed, longest, device=device)
    mask, position_ids = left_padded_attention(pads, computed, longest, input_pos)
    if computed == longest and not pads.any():  # no padding, nothing cached: plain causal attention (the fast kernel)
        mask = None
    return idx, input_pos, position_ids, mask


def decode_group(tokens: list[int], pads: list[int], pos: int, device: torch.device) -> Group:
    """Rows 0.. writing their next `tokens` at the shared slot `pos`, each row's prompt starting at its slot in
    `pads`; attention reads from the first slot any row uses."""
    first = min(pads)
    input_pos = torch.tensor([pos], device=device)
    mask, position_ids = left_padded_attention(torch.tensor(pads, device=device) - first, 1, pos + 1 - first,
                                               input_pos - first)
    idx = torch.tensor(tokens, device=device).unsqueeze(1)
    return Group(idx, slice(0, len(tokens)), input_pos, position_ids, mask, key_start=first)


def chunk_group(chunk: list[int], done: int, row: int, start: int, device: torch.device) -> Group:
    """The next `chunk` of a prompt filling storage row `row` from slot `start`, after its first `done` tokens."""
    size = len(chunk)
    local = torch.arange(done, done + size, device=device)  # prompt positions; the row's keys start at `start`
    mask, position_ids = left_padded_attention(torch.zeros(1, dtype=torch.long, device=device), size, done + size,
                                               local)
    idx = torch.tensor([chunk], device=device)
    return Group(idx, slice(row, row + 1), local + start, position_ids, mask, key_start=start)


class PrefixCache:
    """Keys/values of prompt prefixes in blocks of `block` tokens, least recently used dropped beyond `max_bytes`.

    A block is keyed by a hash chained over all blocks before it, and its own tokens are compared on a hit."""

    def __init__(self, max_bytes: int, block: int = 16) -> None:
        self.max_bytes, self.block = max_bytes, block
        self.blocks: OrderedDict[int, tuple[tuple[int, ...], torch.Tensor]] = OrderedDict()
        self.bytes = self.hit_tokens = 0

    def _keys(self, ids: list[int], n_blocks: int) -> list[tuple[int, tuple[int, ...]]]:
        h, out = 0, []
        for k in range(n_blocks):
            tokens = tuple(ids[k * self.block : (k + 1) * self.block])
            h = hash((h, tokens))
            out.append((h, tokens))
        return out

    def lookup(self, ids: list[int]) -> Optional[torch.Tensor]:
        """(n_layer, 2, groups, n, head_size) keys/values of the longest cached prefix of `ids` (n a multiple of the
        block, leaving at least one token to compute), or None."""
        found = []
        for h, tokens in self._keys(ids, (len(ids) - 1) // self.block):
            entry = self.blocks.get(h)
            if entry is None or entry[0] != tokens:
                break
            self.blocks.move_to_end(h)
            found.append(entry[1])
        if not found:
            return None
        self.hit_tokens += len(found) * self.block
        return torch.cat(found, dim=3)

    def first_block_cached(self, ids: list[int]) -> bool:
        return self._keys(ids, 1)[0][0] in self.blocks

    def store(self, ids: list[int], read: Callable[[int, int], torch.Tensor], have: int = 0) -> None:
        """Keeps the blocks of `ids` not cached yet; `read(a, b)` gives the keys/values of tokens a..b-1 as
        (n_layer, 2, groups, b - a, head_size). `have`: how many tokens a lookup just found."""
        keys = self._keys(ids, len(ids) // self.block)
        missing = [k for k in range(have // self.block, len(keys)) if keys[k][0] not in self.blocks]
        if not missing:
            return
        first = missing[0] * self.block
        kv = read(first, len(keys) * self.block)
        for k in missing:
            block = kv[:, :, :, k * self.block - first : (k + 1) * self.block - first].clone()
            self.blocks[keys[k][0]] = (keys[k][1], block)
            self.bytes += block.numel() * block.element_size()
        while self.bytes > self.max_bytes and self.blocks:
            _, (_, block) = self.blocks.popitem(last=False)
            self.bytes -= block.numel() * block.element_size()
