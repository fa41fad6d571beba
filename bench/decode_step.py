"""Cost of one KV-cached decode step at batch sizes 1 and 4, the LM head over a few rows (F.linear against W @ h.T),
and SDPA's native GQA against expanding K/V.

    python bench/decode_step.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct

The first table bounds what batching can give the server: if 4 rows cost r times one row, 4 clients can get at most
4/r times one client's throughput.
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F


from lit_gpt.generation import load_model
from lit_gpt.model import left_padded_attention
from lit_gpt.utils import cli


def time_it(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


@torch.inference_mode()
def main(checkpoint_dir: Path, cache_lengths: str = "64,600", steps: int = 20) -> None:
    """Prints ms per decode step (batch 1 and 4) and per GQA attention call (native vs expanded K/V).

    Args:
        checkpoint_dir: The checkpoint whose shape is measured.
        cache_lengths: Comma-separated numbers of tokens already in the KV cache.
        steps: Timed repetitions per measurement.
    """
    model, _ = load_model(checkpoint_dir)
    cfg = model.config
    print("| batch | cached tokens | ms / decode step |\n|---:|---:|---:|")
    for S in (int(s) for s in cache_lengths.split(",")):
        for B in (1, 4):
            model.set_kv_cache(B, S + 1)
            idx, pads, pos = torch.randint(0, cfg.vocab_size, (B, 1)), torch.zeros(B, dtype=torch.long), torch.tensor([S])
            mask, position_ids = left_padded_attention(pads, 1, S + 1, pos)
            ms = 1e3 * time_it(lambda: model(idx, pos, position_ids=position_ids, mask=mask), steps)
            print(f"| {B} | {S} | {ms:.1f} |")
    model.clear_kv_cache()

    # The LM head over a few rows (the engine's `_head`): oneDNN's F.linear path against W @ h.T, same products.
    W = model.lm_head.weight
    print(f"\n| rows | LM head ({W.shape[0]} x {W.shape[1]}) F.linear ms | W @ h.T ms |\n|---:|---:|---:|")
    for rows in (1, 2, 4, 8):
        h = torch.randn(rows, cfg.n_embd)
        linear = time_it(lambda: F.linear(h, W), steps)
        transposed = time_it(lambda: (W @ h.T).T, steps)
        print(f"| {rows} | {1e3 * linear:.1f} | {1e3 * transposed:.1f} |")

    nh, ng, hs, T = cfg.n_head, cfg.n_query_groups, cfg.head_size, 512
    q, k, v = torch.randn(4, nh, T, hs), torch.randn(4, ng, T, hs), torch.randn(4, ng, T, hs)
    native = time_it(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=ng != nh), steps)
    expanded = time_it(lambda: F.scaled_dot_product_attention(
        q, k.repeat_interleave(nh // ng, 1), v.repeat_interleave(nh // ng, 1), is_causal=True), steps)
    print(f"\ncausal attention, batch 4 x {T} tokens, {nh} query heads / {ng} KV heads: native GQA {1e3 * native:.1f} ms, "
          f"expanded K/V {1e3 * expanded:.1f} ms ({expanded / native:.2f}x)")


if __name__ == "__main__":
    cli(main, as_positional=False)
