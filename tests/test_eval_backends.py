import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from eval.backends import HTTPBackend, InProcessBackend, find_stop, mc_decided
from eval.helm import Request
from lit_gpt.config import Config
from lit_gpt.generation import generate
from lit_gpt.model import GPT


class ByteTokenizer:
    """UTF-8 bytes as token ids: a complete tokenizer small enough for tests."""

    vocab_size = 256
    bos_id = eos_id = None
    use_bos = False
    stop_ids: set = set()

    def encode(self, text, bos=None, eos=False, max_length=-1):
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)

    def decode(self, ids, skip_special_tokens=False):
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def tiny_backend(seed: int = 0) -> InProcessBackend:
    torch.manual_seed(seed)
    config = Config(name="tiny", block_size=256, vocab_size=256, padded_vocab_size=256, n_layer=2, n_head=4, n_embd=32,
                    n_query_groups=2, bias=False, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP",
                    intermediate_size=64)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)  # large weights: sharp, prompt-dependent next-token distributions
    return InProcessBackend(model=model, tokenizer=ByteTokenizer(), batch_tokens=64)


PROMPTS = ["Question: 2+2?\nA. 3\nB. 4\nAnswer:", "short", "A much longer prompt with several words in it.", "xy"]


def test_batched_next_token_equals_unbatched_argmax():
    backend = tiny_backend()
    got = backend.complete([Request(p, 1, 0.0) for p in PROMPTS])
    for prompt, text in zip(PROMPTS, got):
        ids = backend.tokenizer.encode(prompt)
        with torch.no_grad():
            logits = backend.model(ids.unsqueeze(0))[0, -1]
        assert text == backend.tokenizer.decode([int(logits.argmax())])
        assert text == backend.tokenizer.decode([next(generate(backend.model, ids, 1))])


def test_generation_stops_at_stop_sequences():
    backend = tiny_backend()
    prompt = PROMPTS[0]
    full = backend.tokenizer.decode(list(generate(backend.model, backend.tokenizer.encode(prompt), 30)))
    assert backend.complete([Request(prompt, 30, 0.0)]) == [full]
    stop = full[5:7]
    [cut] = backend.complete([Request(prompt, 30, 0.0, (stop,))])
    assert cut == full[: full.find(stop)] and stop not in cut
    # sampled generations are reproducible (seeded per request)
    assert backend.complete([Request(prompt, 20, 0.7)]) == backend.complete([Request(prompt, 20, 0.7)])


def test_multiple_choice_decider():
    decided = mc_decided({"A": "x", "B": "y"})
    assert not decided("") and not decided(" A") and not decided(" A \n")
    assert decided(" A\n\nQuestion") and decided(" (a)")
    assert find_stop("abc###def\n\n", ["\n\n", "###"]) == 3 and find_stop("abc", ["x"]) == -1


def test_count_and_truncate():
    backend = tiny_backend()
    assert backend.count_tokens("héllo") == len("héllo".encode())
    assert backend.truncate("abcdef", 4) == "abcd"


class ChallengeHandler(BaseHTTPRequestHandler):
    """The challenge API (/process, /tokenize, /decode) answered by an in-process backend."""

    backend: InProcessBackend
    bodies: list
    lock = threading.Lock()  # the backend's model holds one KV cache: one request at a time

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append((self.path, body))
        b = self.backend
        if self.path == "/process":
            temperature = body["temperature"] if body["temperature"] > 1e-5 else 0.0
            with self.lock:
                [text] = b.complete([Request(body["prompt"], body["max_new_tokens"], temperature,
                                             tuple(body["stop_sequences"]))])
            out = {"text": text, "tokens": [], "logprob": 0.0, "request_time": 0.0}
        elif self.path == "/tokenize":
            ids = b.tokenizer.encode(body["text"]).tolist()
            out = {"tokens": ids[: body["max_length"]] if body["truncation"] else ids, "request_time": 0.0}
        else:
            out = {"text": b.tokenizer.decode(body["tokens"]), "request_time": 0.0}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_http_backend_speaks_helm_schema_and_matches_in_process():
    backend = tiny_backend()
    handler = type("H", (ChallengeHandler,), {"backend": backend, "bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        http = HTTPBackend(f"http://127.0.0.1:{server.server_port}/")
        requests = [Request(PROMPTS[0], 1, 0.0, (), 1, 5), Request(PROMPTS[2], 12, 0.0, ("\n",))]
        assert http.complete(requests) == backend.complete(requests)
        assert http.count_tokens("hello") == 5 and http.truncate("abcdef", 3) == "abc"
    finally:
        server.shutdown()
    # requests are in flight together: their bodies arrive in any order
    first, second = sorted((b for p, b in handler.bodies if p == "/process"), key=lambda b: b["max_new_tokens"])
    # exactly the fields and values HELM's HTTPModelClient sends
    assert first == {
        "prompt": PROMPTS[0], "temperature": 1e-7, "num_return_sequences": 1, "max_new_tokens": 1, "top_p": 1.0,
        "echo_prompt": False, "top_k_per_token": 5, "stop_sequences": [],
    }
    assert second["stop_sequences"] == ["\n"] and second["max_new_tokens"] == 12


def test_http_backend_against_submission_server(smollm2_checkpoint):
    """The challenge server (submission/main.py) answers our HTTP backend as the in-process model does."""
    SMOLLM2 = smollm2_checkpoint
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from submission.main import create_app, load_server

    server = load_server(SMOLLM2, device="cpu")
    with TestClient(create_app(server)) as client:
        http = HTTPBackend("", client=client)
        local = InProcessBackend(SMOLLM2)  # its own model: the server's engine keeps a KV cache on its copy
        requests = [Request("Question: What is 2+2?\nA. 3\nB. 4\nAnswer:", 1, 0.0, (), 1, 5),
                    Request("Q: Tom has 3 apples and buys 2 more. How many apples?\nA:", 24, 0.0, ("\n\n",))]
        assert http.complete(requests) == local.complete(requests)
        prompt = "The quick brown fox jumps over the lazy dog."
        assert http.count_tokens(prompt) == local.count_tokens(prompt)
