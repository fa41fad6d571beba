"""Where completions come from: the model in this process, or a challenge server over HTTP.

Both answer HELM `Request`s with the completion text HELM would score, and count tokens for HELM's prompt fitting.

- `InProcessBackend`: a checkpoint dir (plus, optionally, a LoRA run's weights merged in memory), served by the submission's own batching engine (`submission/engine.py`):
  requests run in continuous batches over the KV cache, prompts sharing a prefix (HELM's few-shot examples) compute
  it once, and the numbers are those the submitted server gives. Texts are cut at the first stop sequence.
- `HTTPBackend`: POSTs to `<server_url>/process` exactly the JSON HELM's `neurips/local` client
  (helm/clients/http_model_client.py) sends, and reads `text` back; tokens are counted with `/tokenize` and
  prompts truncated with `/tokenize` + `/decode` (helm/tokenizers/http_model_tokenizer.py). Like HELM's client,
  it leaves stop sequences to the server. Several servers (one per GPU) share the requests: each has
  `clients_per_server` requests in flight, taken in order from one list, so a faster server takes more; each
  request carries its own seed (`seed` + its index), so which server answers it changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from eval.helm import Request
from lit_gpt.generation import find_stop

# Challenge servers sample among the 200 most likely tokens unless told otherwise (HELM never sends top_k).
SERVER_TOP_K = 200


def mc_decided(mapping_keys) -> Callable[[str], bool]:
    """For a multiple-choice request generating several tokens: True once the stripped text can no longer
    become one of the letters, so the rest of the generation cannot change its (zero) score."""

    def decided(text: str) -> bool:
        s = text.strip()
        return bool(s) and not any(k.startswith(s) for k in mapping_keys)

    return decided


class InProcessBackend:
    def __init__(
        self,
        checkpoint_dir: Optional[Path] = None,
        device: str = "cpu",
        precision: Optional[str] = None,
        batch_tokens: int = 8192,
        seed: int = 1234,
        max_batch_size: Optional[int] = None,
        model=None,
        tokenizer=None,
        lora_path: Optional[Path] = None,
    ) -> None:
        if model is None:
            from lit_gpt.generation import load_model
            from lit_gpt.lora import apply_lora_run, read_lora_run

            hparams = read_lora_run(lora_path)[0] if lora_path else None  # a bad path fails before the model loads
            model, tokenizer = load_model(checkpoint_dir, device=device, precision=precision)
            if lora_path:  # merged in memory: the merged checkpoint's numbers, with no copy of it on disk
                apply_lora_run(model, lora_path, hparams)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = model.transformer.wte.weight.device
        self.batch_tokens = batch_tokens
        self._max_batch_size = max_batch_size
        self.seed = seed
        self.name = str(checkpoint_dir) if checkpoint_dir else "in-process"

    # -- token counting (HELM's window service)
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).tolist()

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.encode(text)[:max_tokens]
        bos = getattr(self.tokenizer, "bos_id", None)
        if ids and ids[0] == bos and self.tokenizer.use_bos:
            ids = ids[1:]
        out = self.tokenizer.decode(ids)
        while out and self.count_tokens(out) > max_tokens:
            out = out[:-1]
        return out

    # -- completions
    def complete(self, requests: list[Request], progress: Optional[Callable[[int], None]] = None,
                 deciders: Optional[list] = None) -> list[str]:
        from lit_gpt.generation import GREEDY_TEMPERATURE
        from submission.engine import Engine, SamplingParams, default_batch_size

        rows = self._max_batch_size or default_batch_size(self.model, self.model.max_seq_length, str(self.device))
        engine = Engine(self.model, self.tokenizer, max_batch_size=rows, max_queue=len(requests) + 1,
                        max_prefill_tokens=self.batch_tokens)
        futures: list = [None] * len(requests)
        # The longest generations are admitted first, so the batch does not end on a few long rows; each request keeps
        # its own seed (its index), so the order changes no result.
        for i in sorted(range(len(requests)), key=lambda i: -requests[i].max_tokens):
            r = requests[i]
            ids = self._fit(self.encode(r.prompt), r.max_tokens)
            max_new = min(r.max_tokens, self.model.max_seq_length - len(ids))
            if max_new < 1:
                continue
            sampling = r.temperature > GREEDY_TEMPERATURE
            params = SamplingParams(
                max_new_tokens=max_new, temperature=r.temperature, top_k=SERVER_TOP_K if sampling else None,
                top_p=r.top_p, seed=self.seed + i, top_k_per_token=0, stop_sequences=list(r.stop_sequences),
                stop_when=deciders[i] if deciders else None,
            )
            futures[i] = engine.submit(ids, params)
            if progress:
                futures[i].add_done_callback(lambda _: progress(1))
        engine.start()
        try:
            out = []
            for f in futures:
                if f is None:
                    out.append("")
                    if progress:
                        progress(1)
                    continue
                text = self.tokenizer.decode(f.result().new_ids)
                cut = find_stop(text, requests[len(out)].stop_sequences)
                out.append(text[:cut] if cut >= 0 else text)
        finally:
            engine.stop()
        return out

    def _fit(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Keep the prompt's last tokens if it would overflow the model's context (the server does the same)."""
        room = self.model.max_seq_length - max_new_tokens
        return ids[-room:] if len(ids) > room else ids


class HTTPBackend:
    def __init__(self, server_url: str, timeout: float = 3000.0, client=None, clients_per_server: int = 4,
                 seed: Optional[int] = None) -> None:
        import httpx

        # "URL1,URL2,...": several servers of the same model; tokens are counted on the first.
        self.urls = [u.strip().rstrip("/") for u in server_url.split(",") if u.strip()] or ([""] if client else [])
        if not self.urls:
            raise ValueError("no server URL given")
        self.base_url = self.urls[0]
        # `client`: any httpx.Client, e.g. FastAPI's TestClient for an in-process app (then one request at a time).
        self.client = client if client is not None else httpx.Client(timeout=timeout)
        self.clients_per_server = 1 if client is not None else clients_per_server
        self.seed = seed
        self.name = ",".join(self.urls)

    def _post(self, path: str, body: dict, base_url: Optional[str] = None) -> dict:
        import httpx

        url = f"{base_url or self.base_url}{path}"
        try:
            response = self.client.post(url, json=body)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPStatusError as e:
            raise RuntimeError(f"{url} answered {e.response.status_code}: {e.response.text[:500]}") from e
        except httpx.HTTPError as e:
            raise RuntimeError(f"{url}: {type(e).__name__}: {e}") from e

    @staticmethod
    def raw_request(r: Request) -> dict:
        """The exact body HELM's HTTPModelClient posts to /process."""
        return {
            "prompt": r.prompt,
            "temperature": 1e-7 if r.temperature == 0 else r.temperature,
            "num_return_sequences": r.num_completions,
            "max_new_tokens": r.max_tokens,
            "top_p": r.top_p,
            "echo_prompt": r.echo_prompt,
            "top_k_per_token": r.top_k_per_token,
            "stop_sequences": list(r.stop_sequences),
        }

    def count_tokens(self, text: str) -> int:
        return len(self._post("/tokenize", {"text": text, "truncation": False, "max_length": 2048})["tokens"])

    def truncate(self, text: str, max_tokens: int) -> str:
        tokens = self._post("/tokenize", {"text": text, "truncation": True, "max_length": max_tokens})["tokens"]
        out = self._post("/decode", {"tokens": tokens})["text"]
        while out and self.count_tokens(out) > max_tokens:
            out = out[:-1]
        return out

    def complete(self, requests: list[Request], progress: Optional[Callable[[int], None]] = None,
                 deciders: Optional[list] = None) -> list[str]:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        out: list[Optional[str]] = [None] * len(requests)
        lock, next_index, failed = threading.Lock(), iter(range(len(requests))), threading.Event()

        def worker(url: str) -> None:
            while not failed.is_set():
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                body = self.raw_request(requests[i])
                if self.seed is not None:
                    body["seed"] = self.seed + i
                try:
                    out[i] = self._post("/process", body, url)["text"]
                except BaseException:
                    failed.set()  # the other workers stop taking requests
                    raise
                if progress:
                    progress(1)

        workers = [url for url in self.urls for _ in range(self.clients_per_server)]
        with ThreadPoolExecutor(len(workers)) as pool:
            for f in [pool.submit(worker, url) for url in workers]:
                f.result()  # a server's error stops the run, as with one server
        return out
