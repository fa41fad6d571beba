import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.generation import find_stop, generate, sample
from lit_gpt.model import GPT


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(Config.from_name("tiny-llama")).eval()


def test_sample_greedy_at_low_temperature():
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 4.9]])
    assert sample(logits, temperature=0.0).tolist() == [1, 0]
    assert sample(logits, temperature=1e-7).tolist() == [1, 0]  # HELM's "greedy"


def test_sample_top_k_only_draws_the_k_best():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 2.9]])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, temperature=10.0, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {3, 4}


def test_sample_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    g = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, temperature=1.0, top_p=0.7, generator=g)) for _ in range(300)}
    assert draws == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7
    draws = {int(sample(logits, temperature=1.0, top_p=0.5, generator=g)) for _ in range(100)}
    assert draws == {0}


def test_sample_is_reproducible_with_a_seeded_generator():
    logits = torch.randn(4, 50)
    a = sample(logits, 1.0, generator=torch.Generator().manual_seed(7))
    b = sample(logits, 1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_generate_greedy_equals_argmax_of_full_forward():
    model = tiny_model()
    prompt = torch.tensor([5, 17, 42, 9])
    out = list(generate(model, prompt, max_new_tokens=10))
    assert len(out) == 10
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(10):
            nxt = model(seq.unsqueeze(0))[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1)])
    assert out == seq[4:].tolist()
    assert model.transformer.h[0].attn.kv_cache is None  # the cache is released


def test_generate_stops_after_a_stop_id():
    model = tiny_model()
    prompt = torch.tensor([5, 17, 42, 9])
    full = list(generate(model, prompt, max_new_tokens=10))
    stop = full[3]
    out = list(generate(model, prompt, max_new_tokens=10, stop_ids={stop}))
    assert out == full[: full.index(stop) + 1]


def test_generate_rejects_overlong_requests():
    model = tiny_model()
    with pytest.raises(ValueError, match="exceeds the model's context"):
        list(generate(model, torch.ones(100, dtype=torch.long), max_new_tokens=100))


@pytest.mark.parametrize("quantize", [None, "bnb.nf4"])
def test_load_model_full_and_4bit(smollm2_checkpoint, quantize):
    """load_model serves generate/, eval/ and the server; 4-bit (QLoRA-style) weights also load on CPU."""
    if quantize:
        pytest.importorskip("bitsandbytes")
    from lit_gpt.generation import load_model

    model, tokenizer = load_model(smollm2_checkpoint, quantize=quantize)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    ids = tokenizer.encode(text, bos=False)
    out = [t for t in generate(model, ids, 12, stop_ids=tokenizer.stop_ids) if t not in tokenizer.stop_ids]
    answer = tokenizer.decode(out)
    if quantize is None:
        assert answer.startswith("The capital of France is Paris")
    else:  # 4-bit rounding may change the wording, not the fact
        assert "Paris" in answer, answer


def test_find_stop_gives_the_earliest_stop_sequence():
    assert find_stop("abc\n\nQuestion:", ["\n\n", "Question"]) == 3
    assert find_stop("abc", ["x", ""]) == -1  # no hit; an empty stop sequence never matches
