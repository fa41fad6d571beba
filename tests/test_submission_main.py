"""The HTTP API's semantics (submission/main.py) on a tiny random model, through FastAPI's TestClient."""

from __future__ import annotations

import logging

import pytest
import torch
from fastapi.testclient import TestClient

from lit_gpt.generation import generate
from submission.engine import SamplingParams
from submission.main import create_app, load_server
from test_submission_engine import PROMPTS, make_tiny_checkpoint

BLOCK_SIZE = 96


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), block_size=BLOCK_SIZE)
    return load_server(ckpt, device="cpu", precision="32-true", max_batch_size=4, max_queue=8)


@pytest.fixture(scope="module")
def client(server):
    with TestClient(create_app(server)) as c:
        yield c


def reference(server, prompt_ids: list[int], n: int) -> list[int]:
    """One request alone through lit_gpt.generation.generate, on a copy of the model (the engine owns its cache)."""
    import copy

    model = copy.deepcopy(server.model)
    out = []
    for t in generate(model, torch.tensor(prompt_ids), n, stop_ids=server.tokenizer.stop_ids):
        if t in server.tokenizer.stop_ids:
            break
        out.append(t)
    return out


def full_logprobs(server, ids: list[int]) -> torch.Tensor:
    import copy

    model = copy.deepcopy(server.model)
    model.clear_kv_cache()
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)


def process(client, **body):
    r = client.post("/process", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_greedy_matches_generate(client, server):
    tok = server.tokenizer
    ids = tok.encode(PROMPTS[1]).tolist()
    expected = reference(server, ids, 12)
    # HELM's wire format: temperature 1e-7 means greedy.
    out = process(client, prompt=PROMPTS[1], temperature=1e-7, num_return_sequences=1, max_new_tokens=12, top_p=1,
                  echo_prompt=False, top_k_per_token=1, stop_sequences=[])
    assert out["text"] == tok.decode(expected)
    assert len(out["tokens"]) == len(expected)
    assert "".join(t["text"] for t in out["tokens"]) == out["text"]
    assert out["logprob"] == pytest.approx(sum(t["logprob"] for t in out["tokens"]))
    assert out["request_time"] > 0
    # Greedy: each chosen token is the top-1 entry.
    for t in out["tokens"]:
        assert list(t["top_logprob"].values()) == [pytest.approx(t["logprob"])]


def test_logprobs_and_top_logprob(client, server):
    tok = server.tokenizer
    out = process(client, prompt=PROMPTS[0], temperature=0.7, seed=3, max_new_tokens=8, top_k_per_token=4)
    ids = tok.encode(PROMPTS[0]).tolist()
    new_ids = tok.encode(out["text"], bos=False).tolist()
    logprobs = full_logprobs(server, ids + new_ids)
    if len(new_ids) == len(out["tokens"]):  # the re-encoded text gives the same ids (BPE usually round-trips)
        for j, t in enumerate(out["tokens"]):
            row = logprobs[len(ids) - 1 + j]
            assert t["logprob"] == pytest.approx(row[new_ids[j]].item(), abs=1e-4)  # untempered
            values, top_ids = row.topk(4)
            assert len(t["top_logprob"]) <= 4
            expected = {}
            for i, v in zip(top_ids.tolist(), values.tolist()):
                expected.setdefault(tok.token_texts([i])[0], v)
            assert t["top_logprob"] == pytest.approx(expected, abs=1e-4)


def test_echo_prompt_logprobs_equal_full_forward(client, server):
    tok = server.tokenizer
    ids = tok.encode(PROMPTS[3]).tolist()
    out = process(client, prompt=PROMPTS[3], temperature=0, max_new_tokens=5, echo_prompt=True, top_k_per_token=2)
    assert out["text"].startswith(PROMPTS[3])
    new_ids = reference(server, ids, 5)
    assert out["text"] == PROMPTS[3] + tok.decode(new_ids)
    tokens = out["tokens"]
    assert len(tokens) == len(ids) + len(new_ids)
    assert [t["text"] for t in tokens[: len(ids)]] == tok.token_texts(ids)
    assert tokens[0]["logprob"] == 0.0 and tokens[0]["top_logprob"] == {}
    full = ids + new_ids
    logprobs = full_logprobs(server, full)
    expected = logprobs[:-1].gather(-1, torch.tensor(full[1:]).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(torch.tensor([t["logprob"] for t in tokens[1:]]), expected, atol=1e-4, rtol=0)
    assert out["logprob"] == pytest.approx(expected.sum().item(), abs=1e-3)
    # Scoring only (HELM's language-modeling requests): max_new_tokens=0 with echo_prompt.
    score = process(client, prompt=PROMPTS[3], temperature=0, max_new_tokens=0, echo_prompt=True)
    assert score["text"] == PROMPTS[3]
    assert [t["logprob"] for t in score["tokens"]] == pytest.approx([t["logprob"] for t in tokens[: len(ids)]],
                                                                     abs=1e-5)
    empty = process(client, prompt="x", max_new_tokens=0)
    assert (empty["text"], empty["tokens"], empty["logprob"]) == ("", [], 0.0)


def test_stop_sequences_end_generation_and_are_cut(client, server):
    tok = server.tokenizer
    ids = tok.encode(PROMPTS[0]).tolist()
    free = tok.decode(reference(server, ids, 30))
    stop = free[len(free) // 2: len(free) // 2 + 2]
    out = process(client, prompt=PROMPTS[0], temperature=1e-7, max_new_tokens=30, stop_sequences=[stop, "zzzz"])
    assert out["text"] == free[: free.index(stop)]
    assert stop not in out["text"]
    joined = "".join(t["text"] for t in out["tokens"])
    assert joined.startswith(out["text"]) and stop not in joined[: len(out["text"])]
    assert out["logprob"] == pytest.approx(sum(t["logprob"] for t in out["tokens"]))


def test_seeded_sampling_is_reproducible(client):
    body = dict(prompt=PROMPTS[2], temperature=1.0, top_k=100, top_p=0.95, max_new_tokens=20)
    a = process(client, seed=11, **body)
    b = process(client, seed=11, **body)
    c = process(client, seed=12, **body)
    assert a["text"] == b["text"] and a["tokens"] == b["tokens"]
    assert a["text"] != c["text"]


def test_long_prompt_is_truncated_from_the_left(client, server, caplog):
    tok = server.tokenizer
    prompt = " ".join(PROMPTS * 30)
    ids = tok.encode(prompt).tolist()
    assert len(ids) > BLOCK_SIZE
    n = 10
    kept = [tok.bos_id] + ids[len(ids) - (BLOCK_SIZE - n - 1):]  # BOS and the end of the prompt
    with caplog.at_level(logging.WARNING, logger="submission"):
        out = process(client, prompt=prompt, temperature=0, max_new_tokens=n, echo_prompt=True)
    assert "truncated from the left" in caplog.text
    assert len(out["tokens"]) == len(kept) + len(reference(server, kept, n))
    assert out["text"] == tok.decode(kept, skip_special_tokens=True) + tok.decode(reference(server, kept, n))
    # A 1 MB prompt: the same documented truncation, never an error.
    big = ("Lorem ipsum dolor sit amet, 12 + 30 = 42. " * 30000)[: 1 << 20]
    r = client.post("/process", json=dict(prompt=big, max_new_tokens=3, temperature=0))
    assert r.status_code == 200, r.text


def test_tokenize_and_decode(client, server):
    text = "héllo wörld — 東京 🙂 The quick brown fox"
    r = client.post("/tokenize", json={"text": text, "truncation": False, "max_length": 2})
    ids = r.json()["tokens"]
    assert ids == server.tokenizer.encode(text, bos=False).tolist() and len(ids) > 2
    assert client.post("/decode", json={"tokens": ids}).json()["text"] == text
    short = client.post("/tokenize", json={"text": text, "truncation": True, "max_length": 3}).json()
    assert short["tokens"] == ids[:3] and short["request_time"] >= 0
    assert client.post("/tokenize", json={"text": ""}).json()["tokens"] == []


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/process", {"max_new_tokens": 5}, "prompt"),
        ("/process", {"prompt": ""}, "prompt"),
        ("/process", {"prompt": 5}, "prompt"),
        ("/process", {"prompt": "hi", "max_new_tokens": -1}, "max_new_tokens"),
        ("/process", {"prompt": "hi", "max_new_tokens": 10**12}, "max_new_tokens"),
        ("/process", {"prompt": "hi", "max_new_tokens": BLOCK_SIZE}, "max_new_tokens"),  # no room for the prompt
        ("/process", {"prompt": "hi", "max_new_tokens": "many"}, "max_new_tokens"),
        ("/process", {"prompt": "hi", "temperature": "hot"}, "temperature"),
        ("/process", {"prompt": "hi", "temperature": -1}, "temperature"),
        ("/process", {"prompt": "hi", "top_p": 0}, "top_p"),
        ("/process", {"prompt": "hi", "top_k_per_token": -2}, "top_k_per_token"),
        ("/process", {"prompt": "hi", "stop_sequences": "\n"}, "stop_sequences"),
        ("/process", {"prompt": "hi", "seed": 2**70}, "seed"),
        ("/process", b'{"prompt": "a\\ud800b"}', "prompt"),  # a lone surrogate escaped in JSON
        ("/tokenize", {"text": ["a"]}, "text"),
        ("/tokenize", {"text": "a", "max_length": 0}, "max_length"),
        ("/decode", {"tokens": "12"}, "tokens"),
        ("/decode", {"tokens": [1, 10**6]}, "tokens"),
        ("/decode", {"tokens": [-1]}, "tokens"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client, path, body, field):
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    locs = [e["loc"] for e in r.json()["detail"]]
    assert any(field in loc for loc in locs), locs


def test_malformed_bodies_are_4xx(client):
    assert client.post("/process", content=b'{"prompt": "\xff\xfe"}',
                       headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/process", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/process", content=b"[]", headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/process").status_code == 405


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    before = r.json()["busy_s"]
    assert set(before) == {"prefill", "fill", "decode", "sample"}
    assert client.post("/process", json={"prompt": "The quick", "max_new_tokens": 16}).status_code == 200
    after = client.get("/health").json()["busy_s"]
    assert all(after[k] >= before[k] for k in before) and sum(after.values()) > sum(before.values())


def test_full_queue_answers_503(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path)
    server = load_server(ckpt, device="cpu", precision="32-true", max_queue=1)
    with TestClient(create_app(server)) as client:
        server.engine.stop()  # nothing drains the queue now
        server.engine.submit([1, 2], SamplingParams(max_new_tokens=1))
        r = client.post("/process", json={"prompt": "hi"})
        assert r.status_code == 503 and "busy" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
