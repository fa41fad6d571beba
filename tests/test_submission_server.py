"""The server as it runs for real: a uvicorn process on a localhost port, driven by concurrent clients and by HELM's
own client code (`HTTPModelClient`, `HTTPModelTokenizer`), which runs in a separate venv holding crfm-helm.

HELM's venv: $HELM_VENV, else the repo's .venv-helm (`make helm-venv` builds it; CI does), else /tmp/helm-venv.
Tests skip where none has crfm-helm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from submission.launch import free_port
from test_submission_engine import PROMPTS, make_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]

HELM_SCRIPT = r"""
import json, sys
from helm.common.cache import BlackHoleCacheConfig
from helm.clients.http_model_client import HTTPModelClient
from helm.tokenizers.http_model_tokenizer import HTTPModelTokenizer
from helm.common.request import Request
from helm.common.tokenization_request import TokenizationRequest, DecodeRequest

url, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = HTTPModelClient(BlackHoleCacheConfig(), base_url=url)
tokenizer = HTTPModelTokenizer(BlackHoleCacheConfig(), base_url=url)

def completion(**kwargs):
    r = client.make_request(Request(model="neurips/local", model_deployment="neurips/local", prompt=prompt, **kwargs))
    c = r.completions[0] if r.completions else None
    return {"success": r.success, "error": r.error, "text": c and c.text, "logprob": c and c.logprob,
            "tokens": c and [[t.text, t.logprob] for t in c.tokens]}

out = {
    "greedy": completion(temperature=0.0, max_tokens=n),
    "stop": completion(temperature=0.0, max_tokens=n, stop_sequences=[sys.argv[4]]),
    "echo": completion(temperature=0.0, max_tokens=0, echo_prompt=True),
    "sampled": completion(temperature=0.7, top_p=0.9, max_tokens=n, top_k_per_token=5),
}
t = tokenizer.tokenize(TokenizationRequest(text=prompt, tokenizer="neurips/local", truncation=True, max_length=4))
full = tokenizer.tokenize(TokenizationRequest(text=prompt, tokenizer="neurips/local"))
d = tokenizer.decode(DecodeRequest(tokens=[int(x.value) for x in full.tokens], tokenizer="neurips/local"))
out["tokenize"] = {"success": t.success and full.success, "short": [x.value for x in t.tokens],
                   "full": [x.value for x in full.tokens]}
out["decode"] = {"success": d.success, "text": d.text}
print(json.dumps(out))
"""


def helm_python() -> str | None:
    candidates = [os.environ.get("HELM_VENV"), ROOT / ".venv-helm", "/tmp/helm-venv"]
    for venv in filter(None, candidates):
        python = Path(venv) / "bin" / "python"
        if python.is_file() and subprocess.run(
            [str(python), "-c", "import helm.clients.http_model_client"], capture_output=True, timeout=120
        ).returncode == 0:
            return str(python)
    return None


def run_helm_client(python: str, url: str, prompt: str, n: int, stop: str, tmp_path: Path) -> dict:
    """HELM_SCRIPT's results against the server at `url` (in the crfm-helm venv's python); every call succeeded."""
    script = tmp_path / "helm_client.py"
    script.write_text(HELM_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "HELM_HTTP_MODEL_BASE_URL"}
    proc = subprocess.run([python, str(script), url, prompt, str(n), stop], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("greedy", "stop", "echo", "sampled", "tokenize", "decode"):
        assert out[key]["success"], (key, out[key])
    return out


class LiveServer:
    def __init__(self, checkpoint_dir: Path, log: Path, **env: str) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "submission.main:app", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "CHECKPOINT_DIR": str(checkpoint_dir), "DEVICE": "cpu", "PRECISION": "32-true", **env},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(log).read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError("server did not come up in 120 s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.log.close()


@pytest.fixture(scope="module", params=["tiny", "SmolLM2-135M-Instruct"])
def live(request, tmp_path_factory):
    if request.param == "tiny":
        ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), block_size=256)
    else:
        ckpt = request.getfixturevalue("smollm2_checkpoint")
    server = LiveServer(ckpt, tmp_path_factory.mktemp("log") / "server.log")
    yield ckpt, server
    server.close()


def test_concurrent_clients_get_no_errors(live):
    """A few clients for a few seconds, mixed requests: every answer is a 200 with a completion."""
    import httpx

    _, server = live
    errors, done = [], []
    stop_at = time.monotonic() + 4

    def client(seed: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(100):
                if time.monotonic() > stop_at:
                    return
                body = {"prompt": PROMPTS[(seed + i) % 4], "max_new_tokens": [1, 12, 5][i % 3],
                        "temperature": [1e-7, 0.8][seed % 2], "seed": i, "stop_sequences": ["\n\n"]}
                r = c.post("/process", json=body)
                (done if r.status_code == 200 and "text" in r.json() else errors).append(r.status_code)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(done) >= 4


def test_helm_client_against_server(live, tmp_path):
    """HELM's own client and tokenizer get successful results; greedy text equals generate/base.py's."""
    python = helm_python()
    if python is None:
        pytest.skip("no venv with crfm-helm (set HELM_VENV)")
    ckpt, server = live
    from generate.base import main as generate_main

    prompt, n = "The capital of France is", 12
    expected = generate_main(checkpoint_dir=ckpt, prompt=prompt, max_new_tokens=n, temperature=0.0, chat=False,
                             device="cpu", precision="32-true")
    stop = expected[len(expected) // 2: len(expected) // 2 + 2] or "\n"
    out = run_helm_client(python, server.url, prompt, n, stop, tmp_path)
    assert out["greedy"]["text"] == expected
    assert out["greedy"]["logprob"] == pytest.approx(sum(lp for _, lp in out["greedy"]["tokens"]))
    assert out["stop"]["text"] == expected[: expected.index(stop)]
    assert out["echo"]["text"] == prompt and out["echo"]["tokens"][0][1] == 0.0
    assert all(lp < 0 for _, lp in out["echo"]["tokens"][1:])
    assert out["tokenize"]["short"] == out["tokenize"]["full"][:4]
    assert out["decode"]["text"] == prompt
