"""Where completions come from: the model in this process, or a challenge server over HTTP.

Both answer HELM `Request`s with the completion text HELM would score, and count tokens for HELM's prompt fitting.

- `InProcessBackend`: a checkpoint dir. Requests for one greedy token (HELM's multiple-choice questions) are scored
  in left-padded batches from the next-token logits; the rest use the KV-cached `lit_gpt.generation.generate`,
  cut at the first stop sequence.
- `HTTPBackend`: POSTs to `<server_url>/process` exactly the JSON HELM's `neurips/local` client
  (helm/clients/http_model_client.py) sends, and reads `text` back; tokens are counted with `/tokenize` and
  prompts truncated with `/tokenize` + `/decode` (helm/tokenizers/http_model_tokenizer.py). Like HELM's client,
  it leaves stop sequences to the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

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
        model=None,
        tokenizer=None,
    ) -> None:
        if model is None:
            from lit_gpt.generation import load_model

            model, tokenizer = load_model(checkpoint_dir, device=device, precision=precision)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = model.transformer.wte.weight.device
        self.batch_tokens = batch_tokens
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
        out: list[Optional[str]] = [None] * len(requests)
        single = [i for i, r in enumerate(requests) if r.max_tokens == 1 and r.temperature <= 1e-5]
        for i, text in self._next_token_batched([requests[i].prompt for i in single], single, progress):
            out[i] = text
        for i, r in enumerate(requests):
            if out[i] is None:
                out[i] = self._generate(r, i, deciders[i] if deciders else None)
                if progress:
                    progress(1)
        return out

    @torch.inference_mode()
    def _next_token_batched(self, prompts: list[str], index: list[int], progress):
        from lit_gpt.model import left_padded_attention

        encoded = [self._fit(self.encode(p), 1) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda j: -len(encoded[j]))
        start = 0
        while start < len(order):
            longest = len(encoded[order[start]])
            size = max(1, min(len(order) - start, self.batch_tokens // max(longest, 1)))
            batch = order[start : start + size]
            start += size
            T = longest
            idx = torch.zeros(len(batch), T, dtype=torch.long)
            pads = torch.tensor([T - len(encoded[j]) for j in batch])
            for row, j in enumerate(batch):
                idx[row, T - len(encoded[j]):] = torch.tensor(encoded[j])
            mask, pos = left_padded_attention(pads.to(self.device), T, T)
            hidden = self.model(idx.to(self.device), position_ids=pos, mask=mask, return_hidden=True)[:, -1]
            tokens = self.model.lm_head(hidden).argmax(dim=-1).tolist()
            for row, j in enumerate(batch):
                yield index[j], self._text([tokens[row]])
            if progress:
                progress(len(batch))

    def _text(self, ids: list[int]) -> str:
        ids = [t for t in ids if t not in self.tokenizer.stop_ids]
        return self.tokenizer.decode(ids)

    def _fit(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Keep the prompt's last tokens if it would overflow the model's context (the server does the same)."""
        room = self.model.max_seq_length - max_new_tokens
        return ids[-room:] if len(ids) > room else ids

    def _generate(self, r: Request, i: int, decided: Optional[Callable[[str], bool]]) -> str:
        from lit_gpt.generation import GREEDY_TEMPERATURE, generate

        ids = self._fit(self.encode(r.prompt), r.max_tokens)
        max_new = min(r.max_tokens, self.model.max_seq_length - len(ids))
        if max_new < 1:
            return ""
        gen = torch.Generator(device=self.device).manual_seed(self.seed + i)
        sampling = r.temperature > GREEDY_TEMPERATURE
        new: list[int] = []
        text = ""
        for tok in generate(self.model, torch.tensor(ids), max_new, temperature=r.temperature,
                            top_k=SERVER_TOP_K if sampling else None, top_p=r.top_p,
                            stop_ids=self.tokenizer.stop_ids, generator=gen):
            if tok in self.tokenizer.stop_ids:
                break
            new.append(tok)
            text = self.tokenizer.decode(new)
            cut = find_stop(text, r.stop_sequences)
            if cut >= 0:
                return text[:cut]
            if decided is not None and decided(text):
                break
        return text


class HTTPBackend:
    def __init__(self, server_url: str, timeout: float = 3000.0, client=None) -> None:
        import httpx

        self.base_url = server_url.rstrip("/")
        # `client`: any httpx.Client, e.g. FastAPI's TestClient for an in-process app.
        self.client = client if client is not None else httpx.Client(timeout=timeout)
        self.name = self.base_url

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        try:
            response = self.client.post(f"{self.base_url}{path}", json=body)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPStatusError as e:
            raise RuntimeError(f"{self.base_url}{path} answered {e.response.status_code}: {e.response.text[:500]}") from e
        except httpx.HTTPError as e:
            raise RuntimeError(f"{self.base_url}{path}: {type(e).__name__}: {e}") from e

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
        out = []
        for r in requests:
            out.append(self._post("/process", self.raw_request(r))["text"])
            if progress:
                progress(1)
        return out
