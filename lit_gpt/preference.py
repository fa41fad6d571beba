"""Preference losses on sequence log-probabilities: DPO (Rafailov et al. 2023, "sigmoid"), IPO (Azar et al. 2023) and
ORPO (Hong et al. 2024, no reference model), as TRL's DPOTrainer computes the first two.

A batch holds B pairs as 2B rows, the chosen replies first ([chosen_1..B, rejected_1..B]), right-padded with
pre-shifted targets (`lit_gpt.batching.pad_collate`); only the reply's tokens have targets.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from lit_gpt.lora import lora_disabled

LOSSES = ("sigmoid", "ipo", "orpo")


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each row's targets, number of targets per row), fp32.

    The LM head runs only on the positions that have a target (the replies), as in finetune/lora.py's loss."""
    input_ids = batch["input_ids"].to(device)
    targets = batch["targets"].to(device)
    raw = getattr(model, "module", model)
    hidden = model(input_ids, return_hidden=True)
    keep = targets != -100
    logits = raw.lm_head(hidden[keep].to(raw.transformer.wte.weight.dtype)).float()
    token_logps = -F.cross_entropy(logits, targets[keep], reduction="none")
    rows = keep.nonzero()[:, 0]
    logps = torch.zeros(targets.shape[0], device=device, dtype=torch.float32).index_add(0, rows, token_logps)
    return logps, keep.sum(1)


@torch.no_grad()
def reference_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The reference model's sequence log-probabilities: the same model with its LoRA updates switched off."""
    raw = getattr(model, "module", model)
    with lora_disabled(raw):
        return sequence_logps(raw, batch, device)[0]


def preference_loss(
    kind: str, beta: float, logps: torch.Tensor, n_tokens: torch.Tensor, ref_logps: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss, chosen rewards and rejected rewards of 2B rows' log-probabilities (chosen rows first).

    sigmoid: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))).
    ipo: ((pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r - 1 / (2 beta))^2 (TRL's per-token form, confirmed by the authors).
    orpo: -mean token log p(chosen) - beta * log sigmoid(log odds(chosen) - log odds(rejected)), odds = p / (1 - p)
        of the mean token probability p = exp(logp / n) (the paper's lambda is `beta`); rewards are beta * mean logp.
    Rewards of sigmoid/ipo are beta * (pi - ref), so their margin and accuracy are TRL's."""
    chosen, rejected = logps.chunk(2)
    n_c, n_r = n_tokens.to(logps.dtype).clamp(min=1).chunk(2)
    if kind == "orpo":
        avg_c, avg_r = chosen / n_c, rejected / n_r
        log_odds = (avg_c - avg_r) - (torch.log1p(-torch.exp(avg_c)) - torch.log1p(-torch.exp(avg_r)))
        loss = -avg_c - beta * F.logsigmoid(log_odds)
        return loss, beta * avg_c.detach(), beta * avg_r.detach()
    if kind not in LOSSES:
        raise ValueError(f"unknown preference loss {kind!r} (one of {', '.join(LOSSES)})")
    if ref_logps is None:
        raise ValueError(f"the {kind} loss needs reference log-probabilities")
    ref_c, ref_r = ref_logps.chunk(2)
    ratio_c, ratio_r = chosen - ref_c, rejected - ref_r
    if kind == "sigmoid":
        loss = -F.logsigmoid(beta * (ratio_c - ratio_r))
    else:
        loss = (ratio_c / n_c - ratio_r / n_r - 1 / (2 * beta)) ** 2
    return loss, beta * ratio_c.detach(), beta * ratio_r.detach()
