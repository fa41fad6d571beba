"""BACKEND=vllm (submission/vllm_engine.py) against our engine, on SmolLM2 in fp32 on the CPU.

vLLM runs in a server process of its own venv (`make vllm-venv`, or $VLLM_VENV); every test here skips where there
is none. The same HELM-shaped requests (greedy, stop sequences, echo_prompt scoring, top_logprob) give the same text
and tokens through both backends, with logprobs within LOGPROB_TOL; a LoRA run served as a vLLM LoRA adapter gives
what its merged checkpoint gives through our engine; HELM's own client works; bad input gets the same 4xx.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_gpt.lora import LoRAConfig
from lora_fixtures import fake_run
from submission.launch import start_server, stop_server, vllm_python
from test_submission_server import helm_python, run_helm_client

ROOT = Path(__file__).resolve().parents[1]
# Two fp32 implementations (vLLM's CPU kernels, our model): measured at most 2.1e-5 apart on these requests.
LOGPROB_TOL = 1e-3
# Eager mode starts in seconds (torch.compile would take minutes); 1 GiB of KV cache is 23k SmolLM2 tokens.
VLLM_ENV = {"BACKEND": "vllm", "EAGER": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "PRECISION": "32-true"}

FEW_SHOT = ("Question: What is 2+2?\nA. 3\nB. 4\nAnswer: B\n\nQuestion: Which planet is closest to the sun?\n"
            "A. Mercury\nB. Mars\nAnswer:")
REQUESTS = [  # HELM's HTTPModelClient bodies (temperature 1e-7 is its greedy)
    {"prompt": "The capital of France is", "max_new_tokens": 24},
    {"prompt": "Q: Tom has 3 apples and buys 2 more. How many apples?\nA:", "max_new_tokens": 30,
     "stop_sequences": ["\n"]},
    {"prompt": "Once upon a time, in a small village,", "max_new_tokens": 20, "stop_sequences": [" the", "."]},
    {"prompt": FEW_SHOT, "max_new_tokens": 1, "top_k_per_token": 5, "stop_sequences": ["\n"]},
    {"prompt": "The quick brown fox jumps over the lazy dog.", "max_new_tokens": 0, "echo_prompt": True},
    {"prompt": FEW_SHOT, "max_new_tokens": 6, "echo_prompt": True, "top_k_per_token": 3},
    {"prompt": "<|im_start|>user\nWhat is 2+2? Answer with one number.<|im_end|>\n<|im_start|>assistant\n",
     "max_new_tokens": 40},  # the chat turn ends on <|im_end|>
]
BAD = [  # (path, body)
    ("/process", {"prompt": ""}),
    ("/process", {"prompt": "x", "max_new_tokens": -1}),
    ("/process", {"prompt": "x", "max_new_tokens": 9000}),  # past the 8192-token context
    ("/process", {"prompt": "x", "top_k_per_token": 5000}),
    ("/process", {"prompt": "\ud800"}),
    ("/process", {"max_new_tokens": 3}),
    ("/decode", {"tokens": [49152]}),  # past the vocabulary
    ("/tokenize", {"text": 5}),
]


def helm_body(r: dict) -> dict:
    return {"temperature": 1e-7, "num_return_sequences": 1, "top_p": 1, "echo_prompt": False, "top_k_per_token": 1,
            "stop_sequences": [], **r}


@pytest.fixture(scope="module")
def vllm_py() -> str:
    python = vllm_python()
    if python is None:
        pytest.skip("no vLLM venv (make vllm-venv, or set VLLM_VENV)")
    return python


@pytest.fixture(scope="module")
def ours(smollm2_checkpoint):
    from fastapi.testclient import TestClient

    from submission.main import create_app, load_server

    with TestClient(create_app(load_server(smollm2_checkpoint, device="cpu", precision="32-true"))) as client:
        yield client


@pytest.fixture(scope="module")
def vllm_base(vllm_py, smollm2_checkpoint, tmp_path_factory):
    proc, url = start_server({**VLLM_ENV, "CHECKPOINT_DIR": smollm2_checkpoint},
                             tmp_path_factory.mktemp("vllm") / "server.log", python=vllm_py)
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def lora_run(smollm2_checkpoint, tmp_path_factory):
    """A LoRA run on SmolLM2 (attention and MLP layers) and its merged checkpoint."""
    from scripts.merge_lora import setup as merge

    tmp = tmp_path_factory.mktemp("lora")
    lora_file, _ = fake_run(tmp / "run", smollm2_checkpoint, LoRAConfig(r=8, alpha=16, query=True, value=True,
                                                                         projection=True, mlp=True))
    return lora_file, merge(checkpoint_dir=smollm2_checkpoint, lora_path=lora_file, out_dir=tmp / "merged")


def post(client, url: str, path: str, body: dict):
    # ASCII-escaped JSON, so a lone surrogate reaches the server
    return client.post(f"{url}{path}", content=json.dumps(body), headers={"content-type": "application/json"})


def assert_same(a: dict, b: dict) -> None:
    assert a["text"] == b["text"]
    assert [t["text"] for t in a["tokens"]] == [t["text"] for t in b["tokens"]]
    for ta, tb in zip(a["tokens"], b["tokens"]):
        assert ta["logprob"] == pytest.approx(tb["logprob"], abs=LOGPROB_TOL)
        assert ta["top_logprob"].keys() == tb["top_logprob"].keys()
        for k, v in ta["top_logprob"].items():
            assert v == pytest.approx(tb["top_logprob"][k], abs=LOGPROB_TOL)
    assert a["logprob"] == pytest.approx(b["logprob"], abs=LOGPROB_TOL * max(1, len(a["tokens"])))


def compare(vllm_url: str, ours_client) -> list[dict]:
    import httpx

    answers = []
    with httpx.Client(timeout=300) as client:
        for r in REQUESTS:
            got, want = post(client, vllm_url, "/process", helm_body(r)), ours_client.post("/process", json=helm_body(r))
            assert got.status_code == want.status_code == 200, (r, got.text[:500])
            assert_same(got.json(), want.json())
            answers.append(got.json())
    return answers


def test_vllm_backend_equals_ours(vllm_base, ours):
    answers = compare(vllm_base, ours)
    # the requests exercise what they claim: a stop sequence cut, echo scoring, top-5 lists
    assert "\n" not in answers[1]["text"] and len(answers[1]["tokens"]) < 30
    assert answers[4]["text"] == REQUESTS[4]["prompt"] and answers[4]["tokens"][0]["logprob"] == 0.0
    assert len(answers[3]["tokens"][0]["top_logprob"]) == 5
    assert 0 < len(answers[6]["tokens"]) < 40  # the chat turn ended on the tokenizer's stop id, which is not returned


def test_vllm_bad_input_same_4xx(vllm_base, ours):
    import httpx

    with httpx.Client(timeout=60) as client:
        for path, body in BAD:
            got, want = post(client, vllm_base, path, body), post(ours, "", path, body)
            assert 400 <= want.status_code < 500 and got.status_code == want.status_code, (path, body, got.text)
            assert [(e["loc"], e["type"]) for e in got.json()["detail"]] == \
                [(e["loc"], e["type"]) for e in want.json()["detail"]], (path, body)


def test_helm_client_against_vllm_backend(vllm_base, ours, tmp_path):
    python = helm_python()
    if python is None:
        pytest.skip("no venv with crfm-helm (set HELM_VENV)")
    prompt, n = "The capital of France is", 12
    expected = ours.post("/process", json=helm_body({"prompt": prompt, "max_new_tokens": n})).json()["text"]
    stop = expected[len(expected) // 2: len(expected) // 2 + 2] or "\n"
    out = run_helm_client(python, vllm_base, prompt, n, stop, tmp_path)
    assert out["greedy"]["text"] == expected
    assert out["stop"]["text"] == expected[: expected.index(stop)]
    assert out["echo"]["text"] == prompt and out["echo"]["tokens"][0][1] == 0.0
    assert out["decode"]["text"] == prompt


def test_lora_adapter_equals_merged(vllm_py, lora_run, smollm2_checkpoint, ours, tmp_path):
    """The run's LoRA weights as a vLLM LoRA request on the base equal its merged checkpoint through our engine."""
    from fastapi.testclient import TestClient

    from submission.main import create_app, load_server

    lora_file, merged = lora_run
    base = ours.post("/process", json=helm_body(REQUESTS[4])).json()  # the base model's score of a fixed text
    proc, url = start_server({**VLLM_ENV, "CHECKPOINT_DIR": smollm2_checkpoint, "LORA_PATH": lora_file},
                             tmp_path / "server.log", python=vllm_py)
    try:
        with TestClient(create_app(load_server(merged, device="cpu", precision="32-true"))) as merged_client:
            answers = compare(url, merged_client)
    finally:
        stop_server(proc)
    assert abs(answers[4]["logprob"] - base["logprob"]) > 0.1  # the adapter changes the model


def test_eval_run_vllm_adapter_equals_merged(vllm_py, lora_run, smollm2_checkpoint, tmp_path, monkeypatch):
    """eval/run.py --backend vllm on the LoRA run equals eval/run.py on the merged checkpoint."""
    from eval.run import main as run

    lora_file, merged = lora_run
    for k, v in VLLM_ENV.items():
        if k != "BACKEND":
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("VLLM_VENV", str(Path(vllm_py).parents[1]))
    kw = dict(tasks="mmlu,truthfulqa", mmlu_subjects="philosophy", limit=4, perturb="",
              data_dir=ROOT / "examples" / "eval_data")
    got = run(checkpoint_dir=smollm2_checkpoint, lora_path=lora_file, backend="vllm", out=tmp_path / "vllm", **kw)
    want = run(checkpoint_dir=merged, out=tmp_path / "merged", **kw)
    assert got["runs"] == want["runs"] and got["num_requests"] == want["num_requests"] > 0
    preds = [(tmp_path / d / "predictions.jsonl").read_text().splitlines() for d in ("vllm", "merged")]
    assert preds[0] == preds[1]
