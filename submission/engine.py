"""A continuous-batching inference engine over the model's KV cache: the loop that runs the passes.

HELM sends requests from several client threads; one forward pass over a batch costs about as much as over one row
when decoding (the weights are read once per step either way), so the engine keeps every request in flight in one
batch:

- `submit()` puts a request on a bounded queue (`queue.Full` when it is full: the server answers 503).
- A background thread runs `step()` in a loop: admit queued requests into the running batch (prefill them together,
  left-padded), then one decode step for every row, each row with its own sampling parameters, generator and stop
  conditions; finished rows leave the batch at once (their futures resolve), and new requests join at the next step.

Who does what: `submission/scheduler.py` picks the requests to admit and lays out their cache rows and slots
(shifting, trimming, packing); `submission/kv_cache.py` holds the keys/values (the storage, the prefix cache) and
is the only code that reaches into the model's KV cache and builds its attention inputs (`bind_model_cache`,
`prefill_inputs`, `decode_group`, `chunk_group`); `submission/sampling.py` turns hidden states
into tokens, stops and log-probabilities; `submission/request.py` is a request and its status. Each forward pass
sees a view of the storage up to its last slot, so attention never spans unused capacity.

Chunked prefill beside decoding: a request that arrives while rows are decoding is not prefilled in one pass that
stalls them. Its prompt goes into the last row of the cache storage, `prefill_chunk` tokens per step, and each of
those steps is one `forward_groups` pass over the chunk and the decode rows' next tokens together: the weights are
read once for both, so the decode tokens come almost free while prefill keeps the cores busy.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Optional

import torch

from lit_gpt.model import GPT
from submission.kv_cache import KVStorage, PrefixCache, bind_model_cache, chunk_group, decode_group, prefill_inputs
from submission.request import Completion, Request, SamplingParams, Status, Worker
from submission.sampling import accept, head_logits, new_generator, pick_tokens, score_prompt
from submission.scheduler import Scheduler

logger = logging.getLogger("submission.engine")


def default_batch_size(model, context: int, device: str) -> int:
    """8 rows on CPU; on a GPU up to 32, as many as full-context KV caches fit in 60% of the free memory."""
    if not device.startswith("cuda"):
        return 8
    cfg = model.config
    weight = model.transformer.wte.weight
    itemsize = weight.element_size() if weight.is_floating_point() else 4
    per_row = cfg.n_layer * 2 * cfg.n_query_groups * cfg.head_size * context * itemsize
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(32, int(0.6 * free / per_row)))


def default_prefill_chunk(device: str) -> int:
    """Prompt tokens per pass beside decode rows: enough that a pass is compute-bound (the decode rows' tokens then
    cost almost nothing), few enough that they advance often. 128 on this project's 2-core CPU (bench/RESULTS.md:
    64 and 256 drained the same 100 HELM-like requests slower); on a GPU a pass reads all weights in the time of a
    few hundred tokens' compute."""
    return 512 if device.startswith("cuda") else 128


class Engine:
    def __init__(
        self,
        model: GPT,
        tokenizer,
        max_batch_size: int = 8,
        max_queue: int = 128,
        max_seq_length: Optional[int] = None,
        max_prefill_tokens: int = 8192,
        prefix_cache_mb: float = 1024,
        prefill_chunk: Optional[int] = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = set(tokenizer.stop_ids)
        self.max_batch_size = max_batch_size
        self.max_seq_length = min(max_seq_length or model.max_seq_length, model.max_seq_length)
        self.max_prefill_tokens = max_prefill_tokens
        self.storage = KVStorage(model, max_batch_size, self.max_seq_length)
        self.device = self.storage.device
        # 0: a request arriving while rows decode is prefilled in one pass, stalling them
        self.prefill_chunk = default_prefill_chunk(str(self.device)) if prefill_chunk is None else prefill_chunk
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb > 0 else None
        self.scheduler = Scheduler(self.storage, max_batch_size, max_queue, self.max_seq_length, max_prefill_tokens,
                                   self.prefill_chunk, self.prefix_cache)
        self.queue = self.scheduler.queue
        self._logits: Optional[torch.Tensor] = None  # (rows, vocab) pending logits of each row's next token
        self._next_tokens: list[int] = []  # each row's sampled token, the input of the next pass

        self._worker = Worker(self._loop, "engine")
        self._stop = self._worker.stop_event
        # Counters, for /health, bench/ and tests.
        self.steps = 0  # decode steps run
        self.max_rows_seen = 0
        self.trims = 0
        self.fill_steps = 0  # passes that carried a prompt chunk beside decode rows
        self.prefill_tokens = 0  # prompt tokens computed (those found in the prefix cache are not)
        # seconds the worker spent per phase: "prefill" (whole prompts), "fill" (chunk passes with the decode rows),
        # "decode" (decode-only passes), "sample" (picking tokens, stop checks); /health reports them
        self.busy: dict[str, float] = {"prefill": 0.0, "fill": 0.0, "decode": 0.0, "sample": 0.0}
        self._stats = [0, 0, time.perf_counter()]  # steps, rows stepped, since

    # ---------------------------------------------------------------- public API
    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the worker and fails every request not done yet (running, held or queued)."""
        self._worker.stop(timeout)
        bind_model_cache(self.model, None)
        self.storage.release()
        error = RuntimeError("the server is shutting down")
        for request in self.scheduler.drain():
            request.fail(error)
        self._logits = None

    def submit(self, ids: list[int], params: SamplingParams) -> Future:
        """Queues a request; raises `queue.Full` when the queue is full, ValueError when it cannot fit the context."""
        if not ids:
            raise ValueError("the prompt has no tokens")
        if len(ids) + params.max_new_tokens > self.max_seq_length:
            raise ValueError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds the context "
                f"({self.max_seq_length})"
            )
        request = Request(list(ids), params, Future(), t_submit=time.perf_counter())
        self.scheduler.add(request)
        return request.future

    def step(self) -> None:
        """One turn of the worker's loop: admit queued requests, then one pass for the running rows (and the prompt
        being filled). Tests drive an engine that is not started with it, so the timing is exact."""
        with torch.inference_mode():
            self._admit()
            if self.scheduler.rows or self.scheduler.fill is not None:
                self._step()

    @property
    def running(self) -> int:
        """Requests in the batch: decoding rows, and the one whose prompt is being filled."""
        return len(self.scheduler.rows) + (self.scheduler.fill is not None)

    @property
    def filling(self) -> Optional[Request]:
        """The request whose prompt is being prefilled chunk by chunk beside the decoding rows, if any."""
        return self.scheduler.fill

    # ---------------------------------------------------------------- worker
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as e:  # a bug or an out-of-memory: fail the requests in flight, keep serving
                requests = self.scheduler.in_flight()
                logger.exception("engine step failed; failing %d jobs", len(requests))
                for request in requests:
                    request.fail(e)
                self._reset()

    def _reset(self) -> None:
        self.scheduler.reset()
        self._logits = None

    def _admit(self) -> None:
        """Moves queued requests into the batch: the next one into a chunked fill beside the running rows, or queued
        ones prefilled together (`Scheduler.schedule` decides)."""
        new, chunked = self.scheduler.schedule()
        if chunked:
            self._start_fill(new[0])
        elif new:
            t0 = time.perf_counter()
            self._prefill(new)
            self.scheduler.admitting = []
            self.busy["prefill"] += time.perf_counter() - t0

    def _begin(self, request: Request, t0: float) -> None:
        request.t_start = t0
        request.out = Completion(prompt_ids=request.ids, new_ids=[], new_logprobs=[], new_top=[],
                                 queue_time=t0 - request.t_submit)
        request.generator = new_generator(request, self.device)

    def _lookup(self, request: Request) -> Optional[torch.Tensor]:
        """The keys/values of `request`'s longest cached prefix (an echoed prompt is computed whole, to score it)."""
        if self.prefix_cache is None or request.params.echo_prompt:
            return None
        return self.prefix_cache.lookup(request.ids)

    def _keep_prefix(self, request: Request, row: int, have: int) -> None:
        """Stores the prompt blocks of `request` (in `row` from its `pad`) the prefix cache lacks."""
        start = request.pad
        self.prefix_cache.store(request.ids, lambda a, b: self.storage.read(row, start + a, start + b), have)

    def _prefill(self, new: list[Request]) -> None:
        """Prefills `new` in one pass, in the storage rows after the running ones; those with tokens to generate join
        the batch."""
        t0 = time.perf_counter()
        s = self.scheduler
        pos = s.place_batch(new)
        longest = max(len(r.ids) for r in new)
        B, b = len(s.rows), len(new)
        # Cached prefixes go straight into the rows' slots; the forward covers the longest uncached rest (S tokens,
        # so rows with a shorter rest recompute a few of their cached tokens, to the same values).
        cached = [self._lookup(r) for r in new]
        have = [0 if kv is None else kv.shape[3] for kv in cached]
        for i, (request, kv) in enumerate(zip(new, cached)):
            if kv is not None:
                self.storage.write(B + i, request.pad, kv)
        S = max(len(r.ids) - n for r, n in zip(new, have))
        self.prefill_tokens += sum(len(r.ids) - n for r, n in zip(new, have))
        idx, input_pos, position_ids, mask = prefill_inputs([r.ids for r in new], S, self.device)
        bind_model_cache(self.model, self.storage, slice(B, B + b), slice(pos - longest, pos))
        hidden = self.model(idx, input_pos, position_ids=position_ids, mask=mask, return_hidden=True)
        logits = head_logits(self.model, hidden[:, -1])
        if self.prefix_cache is not None:
            for i, request in enumerate(new):
                self._keep_prefix(request, B + i, have[i])

        keep: list[int] = []
        for i, request in enumerate(new):
            self._begin(request, t0)
            if request.params.echo_prompt:
                score_prompt(self.model, request, hidden[i, S - len(request.ids):])
            if request.params.max_new_tokens == 0:
                self._finish(request, "length")
            else:
                keep.append(i)
        del hidden
        s.join_batch(new, keep)
        kept_logits = logits[keep]
        self._logits = kept_logits if self._logits is None or B == 0 else torch.cat([self._logits, kept_logits])
        self.max_rows_seen = max(self.max_rows_seen, len(s.rows))

    def _start_fill(self, request: Request) -> None:
        """Starts filling `request`'s prompt beside the running rows, from its cached prefix if there is one."""
        cached = self._lookup(request)
        have = 0 if cached is None else cached.shape[3]
        self.scheduler.place_fill(request, have)
        if cached is not None:
            self.storage.write(request.row, request.pad, cached)
        self.prefill_tokens += len(request.ids) - have
        self._begin(request, time.perf_counter())

    def _finish_fill(self, hidden_last: torch.Tensor) -> None:
        """The whole prompt is in the fill row: cache its prefix, score it (echo), and move it into the batch."""
        request = self.scheduler.end_fill()
        if self.prefix_cache is not None and not request.params.echo_prompt:
            self._keep_prefix(request, request.row, request.have)
        if request.params.echo_prompt:
            score_prompt(self.model, request, torch.cat(request.hidden))
        if request.params.max_new_tokens == 0:
            self._finish(request, "length")
            return
        B = len(self.scheduler.rows)
        self.scheduler.join_fill(request)
        logits = head_logits(self.model, hidden_last.unsqueeze(0))
        self._logits = logits if self._logits is None or B == 0 else torch.cat([self._logits, logits])
        self.max_rows_seen = max(self.max_rows_seen, len(self.scheduler.rows))

    def _step(self) -> None:
        t0 = time.perf_counter()
        if self.scheduler.rows:
            self._sample()
        t1 = time.perf_counter()
        self.busy["sample"] += t1 - t0
        phase = "fill" if self.scheduler.fill is not None else "decode"
        try:
            self._forward_step()
        finally:
            self.busy[phase] += time.perf_counter() - t1

    def _forward_step(self) -> None:
        """One pass for the rows' next tokens, with the fill's next chunk when a prompt is being filled."""
        s = self.scheduler
        s.drop_cancelled_fill()
        if not s.rows and s.fill is None:
            self._reset()
            return
        B = len(s.rows)
        groups = [decode_group(self._next_tokens, [r.pad for r in s.rows], s.pos, self.device)] if B else []
        if s.fill is not None:
            f, (a, b) = s.fill, s.next_chunk()
            groups.append(chunk_group(f.ids[a:b], a, f.row, f.pad, self.device))
        bind_model_cache(self.model, self.storage)
        hidden = self.model.forward_groups(groups)
        s.pos += 1
        if B:
            self._logits = head_logits(self.model, hidden[0][:, -1])
            self.steps += 1
            self._stats[0] += 1
            self._stats[1] += B
        if s.fill is not None:
            f, chunk = s.fill, hidden[-1][0]
            f.done += chunk.shape[0]
            if f.params.echo_prompt:
                f.hidden.append(chunk)
            self.fill_steps += 1
            if f.done == len(f.ids):
                if s.pos - 1 != f.end:
                    raise RuntimeError(f"prefill of a joining prompt ended at slot {s.pos - 1}, not {f.end}")
                self._finish_fill(chunk[-1])
        if time.perf_counter() - self._stats[2] > 10 and self._stats[0]:
            self._log_summary()
        if not s.rows and s.fill is None:
            self._reset()
            return
        if s.trim():
            self.trims += 1

    def _log_summary(self) -> None:
        """A periodic summary of the decode loop."""
        n, rows, t0 = self._stats
        cache = self.prefix_cache
        logger.info("decode: %d steps in %.1fs (%.0f ms/step), %.1f rows/step, cache slots %d/%d; prompt tokens "
                    "computed %d, from the prefix cache %d; busy s %s", n, time.perf_counter() - t0,
                    1e3 * (time.perf_counter() - t0) / n, rows / n, self.scheduler.pos, self.storage.capacity,
                    self.prefill_tokens, cache.hit_tokens if cache else 0,
                    {k: round(v, 1) for k, v in self.busy.items()})
        self._stats = [0, 0, time.perf_counter()]

    def _sample(self) -> None:
        """Picks each row's next token from its pending logits, records it, and drops the rows that are done."""
        rows = self.scheduler.rows
        tokens, chosen, top_ids, top_values = pick_tokens(rows, self._logits)
        done = [False] * len(rows)
        for i, request in enumerate(rows):
            if request.future.cancelled():  # the client went away: free the row
                request.status = Status.FINISHED
                done[i] = True
                continue
            reason = accept(request, tokens[i], chosen[i], top_ids[i] if top_ids else None,
                            top_values[i] if top_values else None, self.tokenizer, self.stop_ids)
            if reason is not None:
                done[i] = self._finish(request, reason)
        self._next_tokens = [tokens[i] for i in self.scheduler.compact(done)]  # each kept row's token, in row order
        if not self.scheduler.rows:
            self._logits = None

    def _finish(self, request: Request, reason: str) -> bool:
        out = request.out
        out.finish_reason = reason
        out.run_time = time.perf_counter() - request.t_start
        request.status = Status.FINISHED
        n = len(out.new_ids)
        logger.info(
            "request done: %d prompt tokens, %d new tokens (%s), queued %.3fs, ran %.3fs, %.1f tokens/s, batch %d",
            len(request.ids), n, reason, out.queue_time, out.run_time, n / max(out.run_time, 1e-9),
            len(self.scheduler.rows),
        )
        if not request.future.done():
            request.future.set_result(out)
        return True
