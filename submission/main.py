"""The challenge's inference server: HELM's `neurips/local` client talks to it over HTTP.

    CHECKPOINT_DIR=checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct uvicorn submission.main:app --port 8080

Endpoints: `POST /process` (generate, with logprobs), `POST /tokenize`, `POST /decode`, `GET /health`.
Settings come from environment variables (read when the app starts):

- CHECKPOINT_DIR: a converted or merged checkpoint dir (required).
- DEVICE: "cpu", "cuda" or "auto" (default: cuda when available).
- PRECISION: "32-true", "bf16-true", "16-true" (default: bf16-true on a GPU that has it, else 32-true).
- QUANTIZE: "bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq" (default: none), as the scripts' --quantize.
- MAX_BATCH_SIZE (default 8 on CPU; on a GPU up to 32, as many as fit), MAX_QUEUE (default 256): the engine's batch and queue; a full
  queue answers 503.
- MAX_SEQ_LENGTH: cap the context below the model's block size (saves KV-cache memory).
- PREFIX_CACHE_MB (default 1024; 0 turns it off): memory for the keys/values of recent prompts, so prompts sharing a
  prefix (HELM's few-shot examples) compute it once.
- PREFILL_CHUNK (default 128 on CPU, 512 on a GPU; 0 turns it off): prompt tokens per pass when a prompt arrives
  while other requests generate; each chunk shares a pass with their next tokens instead of stalling them.

- BACKEND: "ours" (default: `submission/engine.py`) or "vllm" (`submission/vllm_engine.py`, in the vLLM venv that
  `make vllm-venv` builds; its settings are listed there): the same API, validation and responses either way.

Requests are batched by `submission/engine.py` (continuous batching). A prompt that does not fit the context with
`max_new_tokens` is truncated from the left (keeping BOS) and logged; bad input gets a 4xx naming the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import time
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Optional

import starlette.responses
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool


from lit_gpt.generation import find_stop, load_model
from submission.engine import Completion, Engine, SamplingParams, default_batch_size
from submission.schemas import (
    DecodeRequest,
    DecodeResponse,
    ProcessRequest,
    ProcessResponse,
    Token,
    TokenizeRequest,
    TokenizeResponse,
)

logger = logging.getLogger("submission")


class JSONResponse(starlette.responses.JSONResponse):
    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _short(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def field_error(field: tuple, message: str, value, kind: str = "value_error") -> RequestValidationError:
    """A 422 in FastAPI's own validation format, for checks that need the loaded model."""
    return RequestValidationError([{"type": kind, "loc": ("body", *field), "msg": message, "input": value}])


class Server:
    """The loaded model, its tokenizer and the engine; the endpoints' logic, independent of HTTP plumbing."""

    def __init__(self, model, tokenizer, engine: Engine, name: str = "") -> None:
        self.model, self.tokenizer, self.engine, self.name = model, tokenizer, engine, name
        self.token_text = lru_cache(maxsize=1 << 16)(lambda i: tokenizer.token_texts([i])[0])

    def close(self) -> None:
        """Frees what the server made besides its engine (nothing here; the vLLM backend's export dir)."""

    # ------------------------------------------------------------------ /process
    def prepare(self, req: ProcessRequest) -> tuple[list[int], SamplingParams, bool]:
        context = self.engine.max_seq_length
        if req.max_new_tokens >= context:
            raise field_error(
                ("max_new_tokens",), f"Input should be less than {context} (this model's context, which must also "
                "hold at least one prompt token)", req.max_new_tokens, "less_than",
            )
        ids = self.tokenizer.encode(req.prompt).tolist()
        room = context - req.max_new_tokens
        truncated = len(ids) > room
        if truncated:
            # Keep the end of the prompt (what the model must continue), and BOS where the model wants one.
            head = ids[:1] if self.tokenizer.use_bos else []
            logger.warning(
                "prompt of %d tokens truncated from the left to %d to leave room for %d new tokens (context %d)",
                len(ids), room, req.max_new_tokens, context,
            )
            ids = head + ids[len(ids) - (room - len(head)):]
        params = SamplingParams(
            max_new_tokens=req.max_new_tokens,
            temperature=req.temperature,
            top_k=req.top_k or None,
            top_p=req.top_p,
            seed=req.seed,
            echo_prompt=bool(req.echo_prompt),
            top_k_per_token=req.top_k_per_token,
            stop_sequences=[s for s in req.stop_sequences if s],
        )
        return ids, params, truncated

    def respond(self, req: ProcessRequest, out: Completion, truncated: bool, t0: float) -> ProcessResponse:
        tok = self.tokenizer
        k = req.top_k_per_token
        new_ids = out.new_ids
        texts = tok.token_texts(new_ids)
        text = tok.decode(new_ids)
        cut = find_stop(text, req.stop_sequences)
        if cut >= 0:
            # Keep the tokens that contribute text before the stop sequence (HELM cuts at token boundaries too).
            text, n, start = text[:cut], 0, 0
            while n < len(texts) and start < cut:
                start += len(texts[n])
                n += 1
            new_ids, texts = new_ids[:n], texts[:n]
        tokens = [
            Token(text=t, logprob=lp, top_logprob=self._top(top, k))
            for t, lp, top in zip(texts, out.new_logprobs, out.new_top)
        ]
        if req.echo_prompt:
            # The first prompt token has no prefix to be predicted from: logprob 0, as HELM's own HF client does.
            prompt_tokens = [
                Token(text=t, logprob=lp, top_logprob=self._top(top, k))
                for t, lp, top in zip(tok.token_texts(out.prompt_ids), [0.0] + out.prompt_logprobs,
                                      [[]] + out.prompt_top)
            ]
            tokens = prompt_tokens + tokens
            prompt_text = tok.decode(out.prompt_ids, skip_special_tokens=True) if truncated else req.prompt
            text = prompt_text + text
        return ProcessResponse(
            text=text, tokens=tokens, logprob=sum(t.logprob for t in tokens), request_time=time.perf_counter() - t0
        )

    def _top(self, top: list[tuple[int, float]], k: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, lp in top[:k]:
            text = self.token_text(i)
            if text not in out:  # two ids with the same text: the likelier one (topk comes sorted)
                out[text] = lp
        return out

    async def process(self, req: ProcessRequest) -> ProcessResponse:
        t0 = time.perf_counter()
        ids, params, truncated = await run_in_threadpool(self.prepare, req)
        if params.max_new_tokens == 0 and not params.echo_prompt:
            out = Completion(prompt_ids=ids, new_ids=[], new_logprobs=[], new_top=[])
        else:
            try:
                future = self.engine.submit(ids, params)
            except queue.Full:
                raise HTTPException(503, "the server is busy (request queue full); retry later",
                                    headers={"Retry-After": "1"})
            out = await asyncio.wrap_future(future)
        return await run_in_threadpool(self.respond, req, out, truncated, t0)

    # ------------------------------------------------------------------ /tokenize, /decode
    def tokenize(self, req: TokenizeRequest) -> TokenizeResponse:
        t0 = time.perf_counter()
        # The text's own tokens, as HELM's tokenizers count them (no BOS): /decode gives the text back.
        ids = self.tokenizer.encode(req.text, bos=False).tolist()
        if req.truncation:
            ids = ids[: req.max_length]
        return TokenizeResponse(tokens=ids, request_time=time.perf_counter() - t0)

    def decode(self, req: DecodeRequest) -> DecodeResponse:
        t0 = time.perf_counter()
        vocab = self.tokenizer.vocab_size
        for i, t in enumerate(req.tokens):
            if not 0 <= t < vocab:
                raise field_error(("tokens", i), f"token id must be in [0, {vocab})", t)
        return DecodeResponse(text=self.tokenizer.decode(req.tokens), request_time=time.perf_counter() - t0)


def load_server(
    checkpoint_dir: Path | str,
    device: str = "auto",
    precision: Optional[str] = None,
    quantize: Optional[str] = None,
    max_batch_size: Optional[int] = None,
    max_queue: int = 256,
    max_seq_length: Optional[int] = None,
    prefix_cache_mb: float = 1024,
    prefill_chunk: Optional[int] = None,
) -> Server:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    model, tokenizer = load_model(checkpoint_dir, device=device, precision=precision, quantize=quantize)
    logger.info("loaded %s on %s in %.1fs", checkpoint_dir, device, time.perf_counter() - t0)
    context = min(max_seq_length or model.max_seq_length, model.max_seq_length)
    max_batch_size = max_batch_size or default_batch_size(model, context, device)
    engine = Engine(model, tokenizer, max_batch_size=max_batch_size, max_queue=max_queue, max_seq_length=context,
                    prefix_cache_mb=prefix_cache_mb, prefill_chunk=prefill_chunk)
    logger.info("batching up to %d requests, context %d, prefix cache %g MB, prefill chunk %d", max_batch_size,
                engine.max_seq_length, prefix_cache_mb, engine.prefill_chunk)
    return Server(model, tokenizer, engine, name=Path(checkpoint_dir).name)


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    return int(value) if value else None


def server_from_env() -> Server:
    backend = os.environ.get("BACKEND") or "ours"
    if backend == "vllm":
        from submission.vllm_engine import server_from_env as vllm_server_from_env

        return vllm_server_from_env()
    if backend != "ours":
        raise RuntimeError(f"BACKEND {backend!r}: expected ours or vllm")
    checkpoint_dir = os.environ.get("CHECKPOINT_DIR")
    if not checkpoint_dir:
        raise RuntimeError("set CHECKPOINT_DIR to the checkpoint dir to serve")
    return load_server(
        checkpoint_dir,
        device=os.environ.get("DEVICE", "auto"),
        precision=os.environ.get("PRECISION") or None,
        quantize=os.environ.get("QUANTIZE") or None,
        max_batch_size=_env_int("MAX_BATCH_SIZE"),
        max_queue=_env_int("MAX_QUEUE") or 256,
        max_seq_length=_env_int("MAX_SEQ_LENGTH"),
        prefix_cache_mb=float(os.environ.get("PREFIX_CACHE_MB") or 1024),
        prefill_chunk=_env_int("PREFILL_CHUNK"),
    )


def create_app(server: Optional[Server] = None) -> FastAPI:
    """The FastAPI app; without `server`, the model is loaded from the environment when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.server = server or await run_in_threadpool(server_from_env)
        app.state.server.engine.start()
        try:
            yield
        finally:
            app.state.server.engine.stop()
            app.state.server.close()

    app = FastAPI(title="lit-gpt submission", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default handler echoes each bad input back: a 1 MB prompt, or a lone surrogate that its UTF-8
        # response encoder cannot write (a 500). Echo a short repr instead, in ASCII-safe JSON.
        errors = [{**{k: v for k, v in e.items() if k not in ("input", "ctx", "url")}, "input": _short(e.get("input"))}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    def state(request: Request) -> Server:
        return request.app.state.server

    @app.post("/process")
    async def process(input_data: ProcessRequest, request: Request) -> ProcessResponse:
        return await state(request).process(input_data)

    @app.post("/tokenize")
    def tokenize(input_data: TokenizeRequest, request: Request) -> TokenizeResponse:
        return state(request).tokenize(input_data)

    @app.post("/decode")
    def decode(input_data: DecodeRequest, request: Request) -> DecodeResponse:
        return state(request).decode(input_data)

    @app.get("/health")
    def health(request: Request) -> dict:
        s = state(request)
        cache = s.engine.prefix_cache
        return {"status": "ok", "model": s.name, "running": s.engine.running, "queued": s.engine.queue.qsize(),
                "prefill_tokens": s.engine.prefill_tokens, "busy_s": {k: round(v, 3) for k, v in s.engine.busy.items()},
                "prefix_cache": None if cache is None else {"hit_tokens": cache.hit_tokens, "mb": cache.bytes / 2**20}}

    return app


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
