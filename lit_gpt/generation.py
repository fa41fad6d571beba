"""Sampling and the KV-cached generation loop, shared by generate/, eval/ and the submission server."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch

from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.quantize import build_model
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import CHECKPOINT_FILENAME, PRECISION_TO_DTYPE, UserError, check_valid_checkpoint_dir, default_precision

GREEDY_TEMPERATURE = 1e-5  # HELM sends 1e-7 when it means greedy


def sample(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V): greedy at temperature <= 1e-5, else top-k/top-p sampling."""
    if temperature <= GREEDY_TEMPERATURE:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token once the mass before it already reaches top_p; the most likely token always stays.
        drop = (cum - sorted_logits.softmax(dim=-1)) >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, sorted_idx, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def find_stop(text: str, stop_sequences: Iterable[str]) -> int:
    """Index of the earliest occurrence of any (non-empty) stop sequence in `text`, or -1 (as `str.find`)."""
    hits = [i for i in (text.find(s) for s in stop_sequences if s) if i >= 0]
    return min(hits) if hits else -1


@torch.inference_mode()
def generate(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    stop_ids: Iterable[int] = (),
    generator: Optional[torch.Generator] = None,
) -> Iterator[int]:
    """Yields new token ids one at a time; a stop id is yielded, then generation ends.

    Callers stop early (stop sequences) by breaking out of the loop.
    """
    if prompt.ndim != 1 or prompt.numel() == 0:
        raise ValueError("prompt must be a non-empty 1-D tensor of token ids")
    T = prompt.numel()
    total = T + max_new_tokens
    if total > model.max_seq_length:
        raise ValueError(
            f"prompt ({T} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's context ({model.max_seq_length})"
        )
    stop_ids = set(stop_ids)
    device = model.transformer.wte.weight.device
    model.set_kv_cache(batch_size=1, max_seq_length=total, device=device)
    try:
        logits = model(prompt.to(device).unsqueeze(0), torch.arange(T, device=device))[:, -1]
        for pos in range(T, total):
            token = sample(logits, temperature, top_k, top_p, generator)
            tok = int(token)
            yield tok
            if tok in stop_ids or pos + 1 == total:
                return
            logits = model(token.view(1, 1), torch.tensor([pos], device=device))[:, -1]
    finally:
        model.clear_kv_cache()


def load_model(
    checkpoint_dir: Path | str,
    device: str = "cpu",
    precision: Optional[str] = None,
    quantize: Optional[str] = None,
) -> tuple[GPT, Tokenizer]:
    """The model and tokenizer of a checkpoint dir, in eval mode, on `device`."""

    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    precision = precision or default_precision(device)
    if precision not in PRECISION_TO_DTYPE:
        raise UserError(f"--precision {precision!r}: expected one of {sorted(PRECISION_TO_DTYPE)}")
    dtype = PRECISION_TO_DTYPE[precision]
    config = Config.from_checkpoint(checkpoint_dir)
    # Tensor by tensor from the memory-mapped checkpoint: never a second full copy (and 4-bit layers if asked).
    model = build_model(config, checkpoint_dir / CHECKPOINT_FILENAME, device=device, dtype=dtype, quantize=quantize)
    model.eval()
    return model, Tokenizer(checkpoint_dir)

