"""The engine's token side: logits from hidden states, picking each row's next token, stop conditions, and the
log-probabilities of an echoed prompt. No batch layout here: these work on a list of requests and their rows."""

from __future__ import annotations

from typing import Optional

import torch

from lit_gpt.generation import GREEDY_TEMPERATURE, find_stop, sample
from lit_gpt.model import GPT
from submission.request import Request


def new_generator(request: Request, device: torch.device) -> Optional[torch.Generator]:
    """A sampled request's own generator (seeded when it has a seed), so batching changes none of its draws."""
    p = request.params
    if p.temperature <= GREEDY_TEMPERATURE:
        return None
    generator = torch.Generator(device=device)
    if p.seed is not None:
        generator.manual_seed(p.seed)
    else:
        generator.seed()
    return generator


def head_logits(model: GPT, hidden: torch.Tensor) -> torch.Tensor:
    """float logits of a few rows' final hidden states (rows, n_embd). On a CPU, `F.linear` over 2-8 rows takes
    a slow path for a large head (SmolLM2's 49k x 576: 13-26 ms against 3-6 ms as `W @ h.T`; bench/decode_step.py),
    so those rows go through `W @ h.T`: the same products, in another order."""
    head = model.lm_head
    if hidden.device.type == "cpu" and 2 <= hidden.shape[0] <= 8 and type(head) is torch.nn.Linear:
        out = (head.weight @ hidden.T).T
        return (out if head.bias is None else out + head.bias).float()
    return head(hidden).float()


def score_prompt(model: GPT, request: Request, hidden: torch.Tensor, chunk: int = 256) -> None:
    """Log-probabilities of prompt tokens 1.. given their prefix (the first token has none), from the prompt's
    hidden states (len(ids), n_embd)."""
    targets = torch.tensor(request.ids[1:], device=hidden.device)
    k = min(request.params.top_k_per_token, model.config.padded_vocab_size)
    out = request.out
    for s in range(0, len(request.ids) - 1, chunk):
        logprobs = torch.log_softmax(model.lm_head(hidden[s : s + chunk][: len(targets) - s]).float(), dim=-1)
        t = targets[s : s + chunk]
        out.prompt_logprobs += logprobs.gather(-1, t.unsqueeze(-1)).squeeze(-1).tolist()
        if k:
            values, ids = logprobs.topk(k, dim=-1)
            out.prompt_top += [list(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]
        else:
            out.prompt_top += [[] for _ in range(t.numel())]


def pick_tokens(rows: list[Request], logits: torch.Tensor) -> tuple[list[int], list[float], Optional[list], Optional[list]]:
    """Each row's next token (greedy, or sampled with its own parameters and generator), its log-probability under
    the untempered distribution (what the model assigns, whatever the sampling), and the top ids and log-probabilities
    (as many as the row that wants the most; None when no row wants any)."""
    logprobs = torch.log_softmax(logits, dim=-1)
    tokens = logits.argmax(dim=-1)
    for i, request in enumerate(rows):
        p = request.params
        if p.temperature > GREEDY_TEMPERATURE:
            tokens[i] = sample(logits[i : i + 1], p.temperature, p.top_k or None, p.top_p, request.generator)[0]
    k = min(max(request.params.top_k_per_token for request in rows), logprobs.shape[-1])
    top = logprobs.topk(k, dim=-1) if k else None
    chosen = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
    top_ids, top_values = (top.indices.tolist(), top.values.tolist()) if top is not None else (None, None)
    return tokens.tolist(), chosen, top_ids, top_values


def accept(request: Request, token: int, logprob: float, top_ids: Optional[list[int]],
           top_values: Optional[list[float]], tokenizer, stop_ids: set[int]) -> Optional[str]:
    """Records `token` as the request's next one unless it is a stop token; returns why the request is done now
    ("stop", "stop_sequence", "stop_when", "length"), or None."""
    out, p = request.out, request.params
    if token in stop_ids:
        return "stop"
    out.new_ids.append(token)
    out.new_logprobs.append(logprob)
    kk = p.top_k_per_token
    out.new_top.append(list(zip(top_ids[:kk], top_values[:kk])) if kk else [])
    if p.stop_sequences and hit_stop(tokenizer, out.new_ids, p.stop_sequences):
        return "stop_sequence"
    if p.stop_when is not None and p.stop_when(tokenizer.decode(out.new_ids)):
        return "stop_when"
    if len(out.new_ids) >= p.max_new_tokens:
        return "length"
    return None


def hit_stop(tokenizer, ids: list[int], stop_sequences: list[str]) -> bool:
    # A stop sequence of n characters spans at most ~4n byte-level tokens: decoding that tail is enough.
    window = 4 * max(len(s) for s in stop_sequences) + 8
    return find_stop(tokenizer.decode(ids[-window:]), stop_sequences) >= 0
