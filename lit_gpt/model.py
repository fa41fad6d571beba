"""A decoder-only transformer covering Llama, Mistral, Qwen, Falcon, GPT-NeoX (Pythia), StableLM, Phi and SmolLM2.

Plain PyTorch, no training logic. The fused QKV weight is laid out as [all query heads | all key heads |
all value heads] (each head `head_size` rows), so a slice of rows is a slice of heads.

`forward(idx, input_pos=None, *, position_ids=None, mask=None)`:
- without a KV cache, `input_pos=None` runs a causal (and, for Mistral, sliding-window) full forward;
- with a KV cache, `input_pos` (T,) gives the cache slots the T new tokens are written to;
- `position_ids` (B, T) overrides the rotary positions (packing restarts them per example, left padding
  starts them after the pads);
- `mask` (B, T, S) bool, True where a query may attend a key, is AND-ed with the causal mask (packing blocks
  attention across examples; padding hides pad keys). S is T without a cache, the cache length with one.

`forward_groups(groups)` runs several KV-cached batches of different shapes (a server's decode rows, one token
each, beside a chunk of a new prompt) through one pass: the linear layers see all their tokens at once, and only
attention runs per group, over that group's rows of the cache.

Every layer's attention in one pass follows the same `AttentionPlan` (the mask, the cache slots written and, for
`forward_groups`, each group's span), built once per pass.

The KV cache is set up by the model: `set_kv_cache(batch_size, max_seq_length)` allocates one per layer;
`attach_kv_cache(keys, values)` makes the layers read and write tensors the caller owns instead (a server keeps
its rows in storage it grows and shifts, and attaches views of it); `clear_kv_cache()` drops them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_gpt.config import Config


class GPT(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=config.lm_head_bias)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=make_norm(config),
            )
        )
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.rope = RotaryEmbedding(config)
        self.max_seq_length = config.block_size
        # Training code may set this to trade compute for activation memory; the model only reads it.
        self.gradient_checkpointing = False

    def forward(
        self,
        idx: torch.Tensor,
        input_pos: Optional[torch.Tensor] = None,
        *,
        position_ids: Optional[torch.Tensor] = None,
        mask: Optional[torch.Tensor] = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        B, T = idx.shape
        if input_pos is not None and self.transformer.h[0].attn.kv_cache is None:
            raise RuntimeError("input_pos needs a KV cache: call `model.set_kv_cache(batch_size)` first")
        if input_pos is None:
            if T > self.max_seq_length:
                raise ValueError(f"sequence of {T} tokens is longer than max_seq_length={self.max_seq_length}")
            q_pos = torch.arange(T, device=idx.device)
        else:
            q_pos = input_pos
        if position_ids is None:
            position_ids = q_pos.unsqueeze(0)
        cos, sin = self.rope(position_ids, dtype=self.transformer.wte.weight.dtype)
        plan = AttentionPlan(self._attention_mask(q_pos, mask, idx.device), input_pos)

        x = self.transformer.wte(idx)
        for block in self.transformer.h:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, plan, use_reentrant=False)
            else:
                x = block(x, cos, sin, plan)
        x = self.transformer.ln_f(x)
        if return_hidden:
            return x
        return self.lm_head(x)

    def forward_groups(self, groups: list[Group]) -> list[torch.Tensor]:
        """The final hidden states (b, T, n_embd) of each group; every group writes its keys/values into its rows and
        slots of the KV cache (`set_kv_cache` or `attach_kv_cache`) and attends over its `mask`."""
        if self.transformer.h[0].attn.kv_cache is None:
            raise RuntimeError("forward_groups needs a KV cache: call `model.set_kv_cache(batch_size)` first")
        dtype = self.transformer.wte.weight.dtype
        xs, coss, sins, specs, start = [], [], [], [], 0
        for g in groups:
            b, T = g.idx.shape
            xs.append(self.transformer.wte(g.idx).reshape(b * T, -1))
            cos, sin = self.rope(g.position_ids.reshape(1, b * T), dtype=dtype)  # (1, 1, b*T, n_elem)
            coss.append(cos)
            sins.append(sin)
            S = g.key_start + g.mask.shape[-1]
            mask = self._attention_mask(g.input_pos, g.mask, g.idx.device, S, g.key_start)
            specs.append(GroupAttention(start, b, T, g.rows, g.input_pos, mask, g.key_start))
            start += b * T
        x, cos, sin = torch.cat(xs).unsqueeze(0), torch.cat(coss, dim=2), torch.cat(sins, dim=2)
        plan = AttentionPlan(None, None, groups=specs)
        for block in self.transformer.h:
            x = block(x, cos, sin, plan)
        x = self.transformer.ln_f(x)[0]
        return [x[g.start : g.start + g.b * g.T].view(g.b, g.T, -1) for g in specs]

    def _attention_mask(
        self, q_pos: torch.Tensor, extra: Optional[torch.Tensor], device: torch.device, S: Optional[int] = None,
        key_start: int = 0,
    ) -> Optional[torch.Tensor]:
        """None means plain causal attention over T keys (SDPA's fast path); otherwise a bool (B|1, 1, T, S) mask
        (over keys key_start..S-1 when key_start is given)."""
        cache = self.transformer.h[0].attn.kv_cache
        window = self.config.sliding_window_size
        T = q_pos.shape[0]
        S = S or (cache.k.shape[2] if cache is not None else T)
        if extra is None and S == T and key_start == 0 and (window is None or window >= T):
            return None  # T queries over the same T slots: SDPA's causal kernel skips the masked half
        k_pos = torch.arange(key_start, S, device=device)
        allowed = k_pos.unsqueeze(0) <= q_pos.unsqueeze(1)  # (T, S)
        if window is not None:
            allowed = allowed & (q_pos.unsqueeze(1) - k_pos.unsqueeze(0) < window)
        allowed = allowed.unsqueeze(0)
        if extra is not None:
            if extra.shape[-2:] != (T, S - key_start):
                raise ValueError(f"mask must be (B, {T}, {S - key_start}), got {tuple(extra.shape)}")
            allowed = allowed & extra.to(torch.bool)
        return allowed.unsqueeze(1)

    def set_kv_cache(
        self,
        batch_size: int,
        max_seq_length: Optional[int] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        max_seq_length = max_seq_length or self.max_seq_length
        weight = self.transformer.wte.weight
        device = device or weight.device
        dtype = dtype or (weight.dtype if weight.is_floating_point() else torch.float32)
        shape = (batch_size, self.config.n_query_groups, max_seq_length, self.config.head_size)
        for block in self.transformer.h:
            block.attn.kv_cache = KVCache(torch.zeros(shape, device=device, dtype=dtype),
                                          torch.zeros(shape, device=device, dtype=dtype))

    def attach_kv_cache(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Makes layer i read and write `keys[i]`, `values[i]` (B, n_query_groups, S, head_size) in place: tensors
        the caller owns, e.g. views of a server's storage. Called once per pass, so it re-points existing caches."""
        cfg = self.config
        if len(keys) != cfg.n_layer or len(values) != cfg.n_layer:
            raise ValueError(f"attach_kv_cache needs {cfg.n_layer} key and value tensors, "
                             f"got {len(keys)} and {len(values)}")
        k0 = keys[0]
        if k0.dim() != 4 or (k0.shape[1], k0.shape[3]) != (cfg.n_query_groups, cfg.head_size):
            raise ValueError(f"KV tensors must be (B, {cfg.n_query_groups}, S, {cfg.head_size}), got {tuple(k0.shape)}")
        for block, k, v in zip(self.transformer.h, keys, values):
            cache = block.attn.kv_cache
            if cache is None:
                block.attn.kv_cache = KVCache(k, v)
            else:
                cache.k, cache.v = k, v

    def clear_kv_cache(self) -> None:
        for block in self.transformer.h:
            block.attn.kv_cache = None


@dataclass
class Group:
    """One batch of `forward_groups`: tokens `idx` (b, T) of cache rows `rows` (a slice of b rows), written to cache
    slots `input_pos` (T,) at rotary positions `position_ids` (b, T). They attend the n keys in slots key_start ..
    key_start + n - 1 where `mask` (b, T, n) is True (AND-ed with causality over slots); slots before `key_start`
    (padding all b rows have) are not read at all."""

    idx: torch.Tensor
    rows: slice
    input_pos: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    key_start: int = 0


@dataclass
class GroupAttention:
    """Where one `Group` lies in a `forward_groups` pass, and the mask its queries attend with."""

    start: int  # the group's first token in the pass's flattened tokens
    b: int
    T: int
    rows: slice
    input_pos: torch.Tensor
    mask: torch.Tensor  # (b|1, 1, T, S - key_start) bool
    key_start: int = 0


@dataclass
class AttentionPlan:
    """What every layer's attention does in one pass.

    Without `groups`: the (B, T) tokens attend with `mask` ((B|1, 1, T, S) bool; None: plain causal over the T
    tokens) after writing their keys/values to cache slots `input_pos` (None: no cache). With `groups`
    (`forward_groups`): x holds all groups' tokens as one row, and each group attends over its own cache rows.
    """

    mask: Optional[torch.Tensor]
    input_pos: Optional[torch.Tensor] = None
    groups: list[GroupAttention] = field(default_factory=list)


def make_norm(config: Config) -> nn.Module:
    if config.norm_class_name == "RMSNorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps)


class Block(nn.Module):
    def __init__(self, config: Config, layer_idx: int) -> None:
        super().__init__()
        self.norm_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.norm_2 = None if config.shared_attention_norm else make_norm(config)
        self.mlp = LLaMAMLP(config) if config.mlp_class_name == "LLaMAMLP" else GptNeoxMLP(config)
        self.parallel_residual = config.parallel_residual

    def forward(self, x, cos, sin, plan: AttentionPlan):
        x_normed = self.norm_1(x)
        h = self.attn(x_normed, cos, sin, plan)
        if self.parallel_residual:
            mlp_in = x_normed if self.norm_2 is None else self.norm_2(x)
            return x + h + self.mlp(mlp_in)
        x = x + h
        return x + self.mlp(self.norm_2(x))


class CausalSelfAttention(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        hs, nh, ng = config.head_size, config.n_head, config.n_query_groups
        self.attn = nn.Linear(config.n_embd, (nh + 2 * ng) * hs, bias=config.bias or config.attn_bias)
        self.proj = nn.Linear(nh * hs, config.n_embd, bias=config.bias)
        self.n_head, self.n_query_groups, self.head_size = nh, ng, hs
        self.rope_n_elem = config.rope_n_elem
        self.kv_cache: Optional[KVCache] = None

    def forward(self, x, cos, sin, plan: AttentionPlan):
        B, T, _ = x.shape
        hs, nh, ng = self.head_size, self.n_head, self.n_query_groups
        q, k, v = self.attn(x).split((nh * hs, ng * hs, ng * hs), dim=-1)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, ng, hs).transpose(1, 2)
        v = v.view(B, T, ng, hs).transpose(1, 2)
        q = apply_rope(q, cos, sin, self.rope_n_elem)
        k = apply_rope(k, cos, sin, self.rope_n_elem)
        if plan.groups:  # forward_groups: x is (1, all groups' tokens, C)
            y = torch.cat([self._attend(q, k, v, g) for g in plan.groups], dim=1)
            return self.proj(y)
        if plan.input_pos is not None:
            k, v = self.kv_cache.update(plan.input_pos, k, v)
        y = self._sdpa(q, k, v, plan.mask)
        y = y.transpose(1, 2).reshape(B, T, nh * hs)
        return self.proj(y)

    def _attend(self, q, k, v, g: GroupAttention) -> torch.Tensor:
        """One group's attention: its tokens' queries (as a (b, heads, T, hs) batch) over its cache rows."""
        n, hs = g.b * g.T, self.head_size

        def rows(t: torch.Tensor) -> torch.Tensor:  # (1, heads, N, hs) -> (b, heads, T, hs)
            return t[0, :, g.start : g.start + n].reshape(t.shape[1], g.b, g.T, hs).transpose(0, 1)

        cache_k, cache_v = self.kv_cache.update(g.input_pos, rows(k), rows(v), g.rows)
        a, S = g.key_start, g.key_start + g.mask.shape[-1]
        y = self._sdpa(rows(q), cache_k[:, :, a:S], cache_v[:, :, a:S], g.mask)
        return y.transpose(1, 2).reshape(1, n, self.n_head * hs)

    def _sdpa(self, q, k, v, mask):
        hs, nh, ng = self.head_size, self.n_head, self.n_query_groups
        # GQA/MQA: each group of nh // ng query heads shares one key/value head; SDPA does this without copying
        # the keys and values (bench/decode_step.py compares it with repeat_interleave).
        # With a mask on CUDA, only the memory-efficient kernel avoids materializing the scores, and it may not
        # take enable_gqa: expand the keys and values there instead.
        scale = 1.0 / math.sqrt(hs)
        gqa = ng != nh
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        else:
            if gqa and q.is_cuda:
                k, v = k.repeat_interleave(nh // ng, dim=1), v.repeat_interleave(nh // ng, dim=1)
                gqa = False
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
        return y


class GptNeoxMLP(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)
        self.approximate = config.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class LLaMAMLP(nn.Module):
    """SwiGLU: `proj(silu(fc_1(x)) * fc_2(x))`; fc_1 is the gate."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.fc_2 = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(self.fc_1(x)) * self.fc_2(x))


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalize in fp32 as the reference implementations do, then scale in the input dtype.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class RotaryEmbedding(nn.Module):
    """cos/sin for arbitrary (B, T) positions, computed in fp32 like the reference implementations.

    The frequencies are recomputed per call (a few dozen floats) rather than kept in a buffer, so casting the model
    to bf16 or building it on the meta device never degrades them.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.n_elem, self.base = config.rope_n_elem, config.rope_base
        self.condense_ratio = config.rope_condense_ratio

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        device = position_ids.device
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.n_elem, 2, dtype=torch.float32, device=device) / self.n_elem))
        pos = position_ids.to(torch.float32) / self.condense_ratio
        freqs = pos.unsqueeze(-1) * inv_freq  # (B, T, n_elem/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if not dtype.is_floating_point:
            dtype = torch.float32
        return cos.to(dtype).unsqueeze(1), sin.to(dtype).unsqueeze(1)  # (B, 1, T, n_elem)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_elem: int) -> torch.Tensor:
    """Rotate the first `n_elem` channels of each head (rotate-half convention); partial rotary keeps the rest."""
    if n_elem == 0:
        return x
    rot, rest = x[..., :n_elem], x[..., n_elem:]
    x1, x2 = rot.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    roped = (rot * cos + rotated * sin).to(x.dtype)
    return torch.cat((roped, rest), dim=-1) if rest.shape[-1] else roped


class KVCache(nn.Module):
    """One layer's keys and values, (B, n_query_groups, S, head_size) each; built by `GPT.set_kv_cache` or
    `GPT.attach_kv_cache`."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("k", k, persistent=False)
        self.register_buffer("v", v, persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               rows: Optional[slice] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes k, v at slots `input_pos` of cache rows `rows` (default: the first k.shape[0]); returns those
        rows' whole cache."""
        if input_pos.max() >= self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions, got position {int(input_pos.max())}")
        rows = slice(0, k.shape[0]) if rows is None else rows
        cache_k, cache_v = self.k[rows], self.v[rows]
        cache_k.index_copy_(2, input_pos, k.to(cache_k.dtype))
        cache_v.index_copy_(2, input_pos, v.to(cache_v.dtype))
        return cache_k, cache_v


def packed_attention(segment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, position_ids) for sequences packing several examples: segment_ids (B, T) numbers each example.

    Positions restart at 0 for each example and no token attends across examples.
    """
    B, T = segment_ids.shape
    same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)  # (B, T, T)
    idx = torch.arange(T, device=segment_ids.device).expand(B, T)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return same, idx - start_idx


def left_padded_attention(
    pad_lengths: torch.Tensor, query_len: int, key_len: int, input_pos: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, position_ids) for a batch whose rows are left-padded by `pad_lengths` (B,) tokens.

    Pads are hidden as keys, and each row's rotary positions start at 0 on its first real token.
    """
    device = pad_lengths.device
    q_pos = input_pos if input_pos is not None else torch.arange(query_len, device=device)
    k_pos = torch.arange(key_len, device=device)
    mask = (k_pos.unsqueeze(0) >= pad_lengths.unsqueeze(1)).unsqueeze(1).expand(-1, q_pos.shape[0], -1)
    # Pad queries would see no key at all (NaN in SDPA); let them see themselves. Their output is discarded.
    mask = mask | (k_pos.unsqueeze(0) == q_pos.unsqueeze(1)).unsqueeze(0)
    position_ids = (q_pos.unsqueeze(0) - pad_lengths.unsqueeze(1)).clamp(min=0)
    return mask, position_ids
