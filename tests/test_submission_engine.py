"""The batching engine on a tiny random model: batched results equal one-request-at-a-time results."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.generation import generate, load_model
from lit_gpt.model import GPT
from submission.engine import Engine, SamplingParams

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. Answer: A B C D.",
    "Question: what is 12 plus 30? Let's think step by step. 12 + 30 = 42. The answer is 42.",
    "Summarize the article below in three sentences.\n\nThe city council met on Tuesday.",
    "héllo wörld — naïve café, 東京 and emoji 🙂 here.",
]


def make_tiny_checkpoint(out: Path, block_size: int = 96, seed: int = 0) -> Path:
    """A checkpoint dir with a tiny Llama-style model and a small byte-level BPE tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|bos|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXT * 20, trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        '{"bos_token": "<|bos|>", "eos_token": "<|endoftext|>", "add_bos_token": true}'
    )
    vocab = tok.get_vocab_size()
    config = Config(
        name="tiny", block_size=block_size, vocab_size=vocab, padded_vocab_size=vocab, n_layer=2, n_head=4,
        n_embd=32, n_query_groups=2, bias=False, lm_head_bias=True, norm_class_name="RMSNorm",
        mlp_class_name="LLaMAMLP", intermediate_size=64, rope_base=1000.0,
    )
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0, 0.3)  # larger than default init, so the logits have clear argmaxes
        model.lm_head.bias.zero_()
        model.lm_head.bias[tok.token_to_id("<|endoftext|>")] = -30.0  # random models rarely end early
    config.save(out)
    torch.save(model.state_dict(), out / "lit_model.pth")
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))
    model, tokenizer = load_model(ckpt, device="cpu", precision="32-true")
    return ckpt, model, tokenizer


PROMPTS = ["The quick brown fox", "Question: what is 12 plus 30? Let's think step", "héllo", "Summarize the article"]


def run_engine(engine: Engine, jobs: list[tuple[list[int], SamplingParams]], timeout: float = 60.0):
    futures = [engine.submit(ids, p) for ids, p in jobs]
    return [f.result(timeout=timeout) for f in futures]


def reference_greedy(model, ids: list[int], n: int, stop_ids) -> list[int]:
    out = []
    for t in generate(model, torch.tensor(ids), n, stop_ids=stop_ids):
        if t in stop_ids:
            break
        out.append(t)
    return out


def test_batched_greedy_equals_single(tiny):
    _, model, tokenizer = tiny
    ids = [tokenizer.encode(p).tolist() for p in PROMPTS]
    lengths = [7, 20, 3, 12]
    expected = [reference_greedy(model, i, n, tokenizer.stop_ids) for i, n in zip(ids, lengths)]
    engine = Engine(model, tokenizer, max_batch_size=8)
    # Submit before starting, so that all four share a batch (and its prefill) from the first step.
    futures = [engine.submit(i, SamplingParams(max_new_tokens=n)) for i, n in zip(ids, lengths)]
    engine.start()
    try:
        outs = [f.result(timeout=60) for f in futures]
        assert engine.max_rows_seen == 4
        assert [o.new_ids for o in outs] == expected
        # Alone, one at a time: the same.
        for i, n, exp in zip(ids, lengths, expected):
            assert run_engine(engine, [(i, SamplingParams(max_new_tokens=n))])[0].new_ids == exp
    finally:
        engine.stop()


def test_joining_running_batch(tiny):
    """Requests arriving while others decode join the batch (a longer prompt shifts it right; once only padding is
    left of every row, it is trimmed) and still give the one-at-a-time results."""
    _, model, tokenizer = tiny
    short = tokenizer.encode("héllo").tolist()
    long = tokenizer.encode(" ".join(PROMPTS) + " 1 2 3 4 5 6 7 8").tolist()
    assert 36 < len(long) < 50
    expected_short = reference_greedy(model, short, 45, tokenizer.stop_ids)
    expected_long = reference_greedy(model, long, 2, tokenizer.stop_ids)
    engine = Engine(model, tokenizer, max_batch_size=3)  # driven step by step here, so the timing is exact
    first = engine.submit(short, SamplingParams(max_new_tokens=45))
    with torch.inference_mode():
        for _ in range(3):
            engine.step()
        later = [engine.submit(long, SamplingParams(max_new_tokens=2)) for _ in range(4)]  # two wait for room
        for _ in range(200):
            if first.done() and all(f.done() for f in later):
                break
            engine.step()
    assert all(f.result(timeout=0).new_ids == expected_long for f in later)
    assert first.result(timeout=0).new_ids == expected_short
    assert engine.max_rows_seen == 3
    assert engine.trims >= 1
    engine.stop()


def test_seeded_sampling_is_reproducible_across_batches(tiny):
    _, model, tokenizer = tiny
    ids = tokenizer.encode(PROMPTS[0]).tolist()
    params = dict(max_new_tokens=15, temperature=1.0, top_k=50, top_p=0.9)
    engine = Engine(model, tokenizer)
    engine.start()
    try:
        a = run_engine(engine, [(ids, SamplingParams(seed=7, **params))])[0].new_ids
        others = [(tokenizer.encode(p).tolist(), SamplingParams(seed=None, **params)) for p in PROMPTS]
        b = run_engine(engine, others + [(ids, SamplingParams(seed=7, **params))])[-1].new_ids
        c = run_engine(engine, [(ids, SamplingParams(seed=8, **params))])[0].new_ids
        assert a == b
        assert a != c  # 15 tokens from a 400-token vocabulary: different seeds differ
    finally:
        engine.stop()


def test_logprobs_are_untempered_and_top_k_sorted(tiny):
    _, model, tokenizer = tiny
    ids = tokenizer.encode(PROMPTS[1]).tolist()
    engine = Engine(model, tokenizer)
    engine.start()
    try:
        out = run_engine(engine, [(ids, SamplingParams(max_new_tokens=6, temperature=0.5, seed=1,
                                                       top_k_per_token=5, echo_prompt=True))])[0]
    finally:
        engine.stop()
    full = ids + out.new_ids
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(torch.tensor([full]))[0].float(), dim=-1)
    expected = logprobs[:-1].gather(-1, torch.tensor(full[1:]).unsqueeze(-1)).squeeze(-1)
    got = torch.tensor(out.prompt_logprobs + out.new_logprobs)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    for pos, top in enumerate(out.prompt_top + out.new_top):
        assert len(top) == 5
        values = [v for _, v in top]
        assert values == sorted(values, reverse=True)
        torch.testing.assert_close(torch.tensor(values), logprobs[pos].topk(5).values, atol=1e-4, rtol=0)


def test_queue_full_and_bad_jobs(tiny):
    _, model, tokenizer = tiny
    engine = Engine(model, tokenizer, max_queue=2)  # not started: nothing drains the queue
    ids = tokenizer.encode("hi").tolist()
    first = engine.submit(ids, SamplingParams(max_new_tokens=1))
    engine.submit(ids, SamplingParams(max_new_tokens=1))
    with pytest.raises(queue.Full):
        engine.submit(ids, SamplingParams(max_new_tokens=1))
    with pytest.raises(ValueError, match="exceeds the context"):
        engine.submit(ids, SamplingParams(max_new_tokens=model.max_seq_length))
    with pytest.raises(ValueError, match="no tokens"):
        engine.submit([], SamplingParams(max_new_tokens=1))
    pending = [first]
    engine.stop()
    with pytest.raises(RuntimeError, match="shutting down"):
        pending[0].result(timeout=1)


def test_many_concurrent_mixed_requests(tiny):
    """More requests than rows, mixed lengths, echo-only and stop sequences: all finish, greedy ones match."""
    _, model, tokenizer = tiny
    jobs, expected = [], []
    for r in range(12):
        ids = tokenizer.encode(PROMPTS[r % 4] * (1 + r % 3)).tolist()
        n = [1, 25, 0, 9][r % 4]
        jobs.append((ids, SamplingParams(max_new_tokens=n, echo_prompt=(n == 0))))
        expected.append(reference_greedy(model, ids, n, tokenizer.stop_ids) if n else [])
    ids = tokenizer.encode(PROMPTS[0]).tolist()
    text = tokenizer.decode(reference_greedy(model, ids, 30, tokenizer.stop_ids))
    stop = text[len(text) // 2: len(text) // 2 + 2]
    engine = Engine(model, tokenizer, max_batch_size=4)  # the engine owns the model's KV cache while it runs
    engine.start()
    try:
        outs = run_engine(engine, jobs)
        assert [o.new_ids for o in outs] == expected
        assert all(len(o.prompt_logprobs) == len(j[0]) - 1 for o, j in zip(outs, jobs) if j[1].echo_prompt)
        # A stop sequence ends generation as soon as its text appears.
        out = run_engine(engine, [(ids, SamplingParams(max_new_tokens=30, stop_sequences=[stop]))])[0]
        assert out.finish_reason == "stop_sequence"
        assert stop in tokenizer.decode(out.new_ids)
        assert stop not in tokenizer.decode(out.new_ids[:-1])
    finally:
        engine.stop()


def test_prefix_cache_reuses_shared_prefixes(tiny):
    """Prompts sharing a long prefix (HELM's few-shot examples) compute it once; outputs and logprobs are the same
    as without the cache, for prompts that join alone, together, or at different cached lengths."""
    _, model, tokenizer = tiny
    shared = tokenizer.encode(" ".join(PROMPTS) + " and 1 2 3 4 5 6 7 8 9").tolist()
    assert 40 <= len(shared) <= 60
    suffixes = [" 1 2 3", " héllo wörld", " The quick brown", " x"]
    prompts = [shared + tokenizer.encode(s, bos=False).tolist() for s in suffixes]
    prompts.append(shared[:20] + prompts[1][20:])  # shares only the first block
    expected = [reference_greedy(model, p, 8, tokenizer.stop_ids) for p in prompts]

    def run(prefix_cache_mb: float) -> tuple[list, Engine]:
        engine = Engine(model, tokenizer, max_batch_size=4, prefix_cache_mb=prefix_cache_mb)
        engine.start()
        try:
            outs = run_engine(engine, [(prompts[0], SamplingParams(max_new_tokens=8, top_k_per_token=3))])
            # the rest together: they join one prefill with different cached lengths; one echoes its prompt
            jobs = [(p, SamplingParams(max_new_tokens=8, top_k_per_token=3, echo_prompt=(i == 2)))
                    for i, p in enumerate(prompts[1:], start=1)]
            outs += run_engine(engine, jobs)
        finally:
            engine.stop()
        return outs, engine

    outs, engine = run(prefix_cache_mb=64)
    plain, no_cache = run(prefix_cache_mb=0)
    assert [o.new_ids for o in outs] == expected == [o.new_ids for o in plain]
    for o, p in zip(outs, plain):
        torch.testing.assert_close(torch.tensor(o.new_logprobs), torch.tensor(p.new_logprobs))
        assert [[t for t, _ in top] for top in o.new_top] == [[t for t, _ in top] for top in p.new_top]
    torch.testing.assert_close(torch.tensor(outs[2].prompt_logprobs), torch.tensor(plain[2].prompt_logprobs))
    total = sum(len(p) for p in prompts)
    assert no_cache.prefill_tokens == total
    block = engine.prefix_cache.block
    assert engine.prefix_cache.hit_tokens >= 2 * (len(shared) // block) * block + block  # the echo job computes all
    assert engine.prefill_tokens == total - engine.prefix_cache.hit_tokens

    # all submitted at once to a cold cache: the first computes the shared prefix, the rest wait a step and reuse it
    cold = Engine(model, tokenizer, max_batch_size=4, prefix_cache_mb=64)
    futures = [cold.submit(p, SamplingParams(max_new_tokens=8)) for p in prompts[:4]]
    cold.start()
    try:
        assert [f.result(timeout=60).new_ids for f in futures] == expected[:4]
    finally:
        cold.stop()
    assert cold.prefix_cache.hit_tokens == 3 * (len(shared) // block) * block


def test_prefix_cache_evicts_least_recently_used(tiny):
    _, model, tokenizer = tiny
    ids = [tokenizer.encode(f"{p} {p} {p}").tolist() for p in PROMPTS]
    kv_block_bytes = 2 * 2 * 2 * 16 * 8 * 4  # layers * (k, v) * groups * block * head_size * fp32
    engine = Engine(model, tokenizer, prefix_cache_mb=3 * kv_block_bytes / 2**20)
    engine.start()
    try:
        for i in ids + ids:
            assert run_engine(engine, [(i, SamplingParams(max_new_tokens=4))])[0].new_ids == \
                reference_greedy(model, i, 4, tokenizer.stop_ids)
            assert engine.prefix_cache.bytes <= 3 * kv_block_bytes and len(engine.prefix_cache.blocks) <= 3
    finally:
        engine.stop()


def test_prompts_joining_running_rows_are_prefilled_in_chunks_beside_them(tiny):
    """A job arriving while rows decode is prefilled a few tokens per step in the same pass as their next tokens:
    outputs, logprobs, top-k and echoed prompt logprobs equal those of the engine that prefills it in one pass, also
    when its prompt must shift the batch right, when it finds its prefix cached, and when the decode rows finish
    before its prompt does."""
    _, model, tokenizer = tiny
    short = tokenizer.encode("héllo").tolist()
    long = tokenizer.encode(" ".join(PROMPTS) + " 1 2 3 4 5 6 7 8").tolist()
    similar = long[:32] + tokenizer.encode(" héllo wörld", bos=False).tolist()  # its first 2 blocks get cached
    jobs = [
        (short, SamplingParams(max_new_tokens=30, top_k_per_token=3)),
        (short[:3], SamplingParams(max_new_tokens=2)),  # done a step into the first fill
        (long, SamplingParams(max_new_tokens=6, top_k_per_token=3)),
        (similar, SamplingParams(max_new_tokens=5)),
        (long, SamplingParams(max_new_tokens=0, echo_prompt=True, top_k_per_token=2)),
        (tokenizer.encode(PROMPTS[1]).tolist(), SamplingParams(max_new_tokens=4, echo_prompt=True)),
    ]

    def run(prefill_chunk: int):
        engine = Engine(model, tokenizer, max_batch_size=6, prefix_cache_mb=64, prefill_chunk=prefill_chunk)
        futures = [engine.submit(*jobs[0]), engine.submit(*jobs[1])]
        with torch.inference_mode():
            engine.step()
            futures += [engine.submit(*j) for j in jobs[2:]]
            for _ in range(300):
                if all(f.done() for f in futures):
                    break
                engine.step()
        engine.stop()
        return [f.result(timeout=0) for f in futures], engine

    chunked, engine = run(prefill_chunk=5)
    whole, _ = run(prefill_chunk=0)
    assert engine.fill_steps >= len(long) // 5 and engine.prefix_cache.hit_tokens >= 32
    for (ids, p), c, w in zip(jobs, chunked, whole):
        assert c.new_ids == w.new_ids == (reference_greedy(model, ids, p.max_new_tokens, tokenizer.stop_ids)
                                          if p.max_new_tokens else [])
        torch.testing.assert_close(torch.tensor(c.new_logprobs), torch.tensor(w.new_logprobs))
        assert [[t for t, _ in top] for top in c.new_top] == [[t for t, _ in top] for top in w.new_top]
        torch.testing.assert_close(torch.tensor(c.prompt_logprobs), torch.tensor(w.prompt_logprobs))
        assert [[t for t, _ in top] for top in c.prompt_top] == [[t for t, _ in top] for top in w.prompt_top]
        assert len(c.prompt_logprobs) == (len(ids) - 1 if p.echo_prompt else 0)


def test_a_cancelled_fill_is_dropped_and_the_rows_go_on(tiny):
    _, model, tokenizer = tiny
    short = tokenizer.encode("héllo").tolist()
    long = tokenizer.encode(" ".join(PROMPTS) + " 1 2 3 4 5 6 7 8").tolist()
    engine = Engine(model, tokenizer, max_batch_size=4, prefill_chunk=4)
    first = engine.submit(short, SamplingParams(max_new_tokens=20))
    with torch.inference_mode():
        engine.step()
        gone = engine.submit(long, SamplingParams(max_new_tokens=5))
        engine.step()
        assert engine.filling is not None and engine.filling.future is gone
        gone.cancel()
        fill_steps = engine.fill_steps
        engine.step()  # the next pass drops it instead of computing its next chunk
        assert engine.filling is None and engine.fill_steps == fill_steps
        for _ in range(40):
            engine.step()
    assert engine.filling is None and first.result(timeout=0).new_ids == reference_greedy(model, short, 20, tokenizer.stop_ids)
    engine.stop()
