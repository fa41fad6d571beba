"""A continuous-batching inference engine over the model's KV cache.

HELM sends requests from several client threads; one forward pass over a batch costs about as much as over one row
when decoding (the weights are read once per step either way), so the engine keeps every request in flight in one
batch:

- `submit()` puts a job on a bounded queue (`queue.Full` when it is full: the server answers 503).
- A background thread runs the loop: admit queued jobs into the running batch (prefill them together, left-padded),
  then one decode step for every row, each row with its own sampling parameters, generator and stop conditions;
  finished rows leave the batch at once (their futures resolve), and new jobs join at the next step.

The KV cache: every layer's keys/values live in one storage tensor (max_batch_size, groups, capacity, head_size).
All rows share the slot of their next token (`pos`, the model's shared `input_pos`), so a row's prompt ends at `pos`
and starts after `pad` slots of padding that `left_padded_attention` hides (and from which rotary positions count).
A joining prompt longer than `pos` shifts the running rows right; when every row has padding on the left, it is
trimmed. Each forward pass sees a view of the storage up to its last slot, so attention never spans unused capacity.

The prefix cache: HELM's prompts repeat long prefixes (every MMLU question of a subject starts with the same 5-shot
examples, every GSM8K question with the same chain-of-thought examples). After a prefill, the keys/values of each
prompt are kept in blocks of 16 tokens, keyed by everything up to the block's end; a later prompt copies the blocks
of its longest cached prefix into its cache slots and computes only the rest. Keys are cached after the rotary
embedding at the prompt's own positions (which start at 0 whatever the slot), so they are valid in any row.

Chunked prefill beside decoding: a job that arrives while rows are decoding is not prefilled in one pass that
stalls them. Its prompt goes into the last row of the cache storage, `prefill_chunk` tokens per step, and each of
those steps is one `forward_groups` pass over the chunk and the decode rows' next tokens together: the weights are
read once for both, so the decode tokens come almost free while prefill keeps the cores busy. The prompt is placed
to end on the slot the decode rows write in its last chunk's step; then its row joins the batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from lit_gpt.generation import GREEDY_TEMPERATURE, find_stop, sample
from lit_gpt.model import GPT, Group, left_padded_attention

logger = logging.getLogger("submission.engine")


@dataclass
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0
    top_k: Optional[int] = None
    top_p: float = 1.0
    seed: Optional[int] = None
    echo_prompt: bool = False  # also score the prompt tokens
    top_k_per_token: int = 1
    stop_sequences: list[str] = field(default_factory=list)
    stop_when: Optional[Callable[[str], bool]] = None  # in-process callers: stop once this holds for the text so far


@dataclass
class Completion:
    """What the engine computed for one job; the server turns it into the HTTP response."""

    prompt_ids: list[int]
    new_ids: list[int]  # generated tokens, without the stop token that ended generation
    new_logprobs: list[float]  # log-probability of each generated token (untempered distribution)
    new_top: list[list[tuple[int, float]]]  # the top_k_per_token (id, logprob) at each generated position
    prompt_logprobs: list[float] = field(default_factory=list)  # echo_prompt: tokens 1.. of the prompt
    prompt_top: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str = "length"  # "length" | "stop" (a stop id) | "stop_sequence" | "stop_when"
    queue_time: float = 0.0
    run_time: float = 0.0


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


class PrefixCache:
    """Keys/values of prompt prefixes in blocks of `block` tokens, least recently used dropped beyond `max_bytes`.

    A block is keyed by a hash chained over all blocks before it, and its own tokens are compared on a hit."""

    def __init__(self, max_bytes: int, block: int = 16) -> None:
        self.max_bytes, self.block = max_bytes, block
        self.blocks: OrderedDict[int, tuple[tuple[int, ...], torch.Tensor]] = OrderedDict()
        self.bytes = self.hit_tokens = 0

    def _keys(self, ids: list[int], n_blocks: int) -> list[tuple[int, tuple[int, ...]]]:
        h, out = 0, []
        for k in range(n_blocks):
            tokens = tuple(ids[k * self.block : (k + 1) * self.block])
            h = hash((h, tokens))
            out.append((h, tokens))
        return out

    def lookup(self, ids: list[int]) -> Optional[torch.Tensor]:
        """(n_layer, 2, groups, n, head_size) keys/values of the longest cached prefix of `ids` (n a multiple of the
        block, leaving at least one token to compute), or None."""
        found = []
        for h, tokens in self._keys(ids, (len(ids) - 1) // self.block):
            entry = self.blocks.get(h)
            if entry is None or entry[0] != tokens:
                break
            self.blocks.move_to_end(h)
            found.append(entry[1])
        if not found:
            return None
        self.hit_tokens += len(found) * self.block
        return torch.cat(found, dim=3)

    def first_block_cached(self, ids: list[int]) -> bool:
        return self._keys(ids, 1)[0][0] in self.blocks

    def store(self, ids: list[int], read: Callable[[int, int], torch.Tensor], have: int = 0) -> None:
        """Keeps the blocks of `ids` not cached yet; `read(a, b)` gives the keys/values of tokens a..b-1 as
        (n_layer, 2, groups, b - a, head_size). `have`: how many tokens a lookup just found."""
        keys = self._keys(ids, len(ids) // self.block)
        missing = [k for k in range(have // self.block, len(keys)) if keys[k][0] not in self.blocks]
        if not missing:
            return
        first = missing[0] * self.block
        kv = read(first, len(keys) * self.block)
        for k in missing:
            block = kv[:, :, :, k * self.block - first : (k + 1) * self.block - first].clone()
            self.blocks[keys[k][0]] = (keys[k][1], block)
            self.bytes += block.numel() * block.element_size()
        while self.bytes > self.max_bytes and self.blocks:
            _, (_, block) = self.blocks.popitem(last=False)
            self.bytes -= block.numel() * block.element_size()


@dataclass
class _Fill:
    """A job whose prompt is being prefilled chunk by chunk in storage row `row`, at slots start..end."""

    job: "_Job"
    row: int
    start: int
    end: int
    done: int  # prompt tokens already in the cache (the cached prefix, then each chunk)
    have: int  # of which found in the prefix cache
    hidden: list = field(default_factory=list)  # echo_prompt: every chunk's hidden states, to score the prompt


@dataclass
class _Job:
    ids: list[int]
    params: SamplingParams
    future: Future
    generator: Optional[torch.Generator] = None
    out: Optional[Completion] = None
    t_submit: float = 0.0
    t_start: float = 0.0


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
        weight = model.transformer.wte.weight
        self.device = weight.device
        self.dtype = weight.dtype if weight.is_floating_point() else torch.float32
        # 0: a job arriving while rows decode is prefilled in one pass, stalling them
        self.prefill_chunk = default_prefill_chunk(str(self.device)) if prefill_chunk is None else prefill_chunk
        cfg = model.config
        self._cache_shape = (max_batch_size, cfg.n_query_groups, cfg.head_size)
        self.queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb > 0 else None
        self.prefill_tokens = 0  # prompt tokens computed (those found in the prefix cache are not)

        # Batch state, touched only by the worker thread.
        self._rows: list[_Job] = []
        self._pads: list[int] = []
        self._pos = 0  # the cache slot every row writes its next token to
        self._logits: Optional[torch.Tensor] = None  # (rows, vocab) pending logits of each row's next token
        self._held: Optional[_Job] = None  # the next job in FIFO order, waiting for room in the batch
        self._admitting: list[_Job] = []  # being prefilled
        self._fill: Optional[_Fill] = None  # a job being prefilled chunk by chunk beside the decode rows
        self._capacity = 0
        self._k: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []

        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.steps = 0  # decode steps run (for /health and tests)
        self.max_rows_seen = 0
        self.trims = 0
        self.fill_steps = 0  # passes that carried a prompt chunk beside decode rows
        # seconds the worker spent per phase: "prefill" (whole prompts), "fill" (chunk passes with the decode rows),
        # "decode" (decode-only passes), "sample" (picking tokens, stop checks); /health reports them
        self.busy: dict[str, float] = {"prefill": 0.0, "fill": 0.0, "decode": 0.0, "sample": 0.0}
        self._stats = [0, 0, time.perf_counter()]  # steps, rows stepped, since

    # ---------------------------------------------------------------- public API
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.model.clear_kv_cache()
        self._k, self._v, self._capacity = [], [], 0
        error = RuntimeError("the server is shutting down")
        self._fail([*self._rows, *([self._held] if self._held else []), *([self._fill.job] if self._fill else [])], error)
        self._rows, self._held, self._fill = [], None, None
        while True:
            try:
                self._fail([self.queue.get_nowait()], error)
            except queue.Empty:
                break

    def submit(self, ids: list[int], params: SamplingParams) -> Future:
        """Queues a job; raises `queue.Full` when the queue is full, ValueError when it cannot fit the context."""
        if not ids:
            raise ValueError("the prompt has no tokens")
        if len(ids) + params.max_new_tokens > self.max_seq_length:
            raise ValueError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds the context "
                f"({self.max_seq_length})"
            )
        job = _Job(list(ids), params, Future(), t_submit=time.perf_counter())
        self.queue.put_nowait(job)
        return job.future

    # ---------------------------------------------------------------- worker
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with torch.inference_mode():
                    self._admit()
                    if self._rows or self._fill:
                        self._step()
            except Exception as e:  # a bug or an out-of-memory: fail the jobs in flight, keep serving
                jobs = self._rows + self._admitting + ([self._fill.job] if self._fill else [])
                logger.exception("engine step failed; failing %d jobs", len(jobs))
                self._fail(jobs, e)
                self._reset()

    def _reset(self) -> None:
        self._rows, self._pads, self._pos, self._logits, self._admitting = [], [], 0, None, []
        self._fill = None

    @property
    def running(self) -> int:
        return len(self._rows) + (self._fill is not None)

    @staticmethod
    def _fail(jobs: list[_Job], error: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    def _next_job(self, block: bool) -> Optional[_Job]:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        try:
            return self.queue.get(timeout=0.05) if block else self.queue.get_nowait()
        except queue.Empty:
            return None

    def _admit(self) -> None:
        """Moves queued jobs into the batch. With rows running and a spare row, the next job starts a chunked fill
        beside them; otherwise queued jobs are prefilled together while there is room (rows, cache slots, budget)."""
        if self._fill is not None:
            return  # one job fills at a time; the queue waits for it (FIFO)
        if self._rows and self.prefill_chunk > 0 and len(self._rows) <= self.max_batch_size - 2:
            job = self._next_job(block=False)
            if job is not None and not job.future.cancelled():
                if self._fits_fill(job):
                    self._start_fill(job)
                else:
                    self._held = job
            return
        new: list[_Job] = []
        while len(self._rows) + len(new) < self.max_batch_size:
            job = self._next_job(block=not self._rows and not new)
            if job is None:
                break
            if job.future.cancelled():
                continue
            if not self._fits(new + [job]) or self._prefix_pending(new, job):
                self._held = job  # keeps FIFO order: it goes first once there is room (or once the prefix is cached)
                break
            new.append(job)
        if new:
            t0 = time.perf_counter()
            self._admitting = new
            self._prefill(new)
            self._admitting = []
            self.busy["prefill"] += time.perf_counter() - t0

    def _prefix_pending(self, new: list[_Job], job: _Job) -> bool:
        """Whether `job` starts like a job being admitted now whose prefix is not cached yet: it waits one step, to
        find that prefix in the cache instead of computing it alongside (HELM sends a run's prompts back to back)."""
        cache = self.prefix_cache
        if cache is None or job.params.echo_prompt or len(job.ids) <= cache.block:
            return False
        first = job.ids[: cache.block]
        return not cache.first_block_cached(first) and any(j.ids[: cache.block] == first for j in new)

    def _fits(self, new: list[_Job]) -> bool:
        if len(new) == 1 and not self._rows:
            return True  # a job alone always fits (checked in submit)
        longest = max(len(j.ids) for j in new)
        if len(new) > 1:
            padded, real = len(new) * longest, sum(len(j.ids) for j in new)
            # Prompts are prefilled together only when padding wastes little compute (prefill is compute-bound);
            # a very different length waits for the next step's prefill.
            if padded > self.max_prefill_tokens or padded > 1.25 * real + 64:
                return False
        pos = max(self._pos, longest)
        shift = pos - self._pos
        need = max(
            [self._pos + shift + r.params.max_new_tokens - len(r.out.new_ids) for r in self._rows]
            + [pos + j.params.max_new_tokens for j in new]
        )
        return need <= self.max_seq_length

    def _fill_layout(self, job: _Job, have: int) -> tuple[int, int]:
        """(shift, end): how far the running rows must move right for `job`'s prompt to fit left of its last slot,
        and that slot, the decode slot of the step that carries the prompt's last chunk."""
        steps = -(-(len(job.ids) - have) // self.prefill_chunk)
        shift = max(0, len(job.ids) - (self._pos + steps))
        return shift, self._pos + shift + steps - 1

    def _fill_need(self, job: _Job, shift: int, end: int) -> int:
        """Cache slots the batch needs with `job` filled to `end` after shifting the rows by `shift`."""
        return max([self._pos + shift + r.params.max_new_tokens - len(r.out.new_ids) for r in self._rows]
                   + [end + 1 + job.params.max_new_tokens])

    def _fits_fill(self, job: _Job) -> bool:
        shift, end = self._fill_layout(job, 0)  # no cached prefix: the most slots it can take
        return self._fill_need(job, shift, end) <= self.max_seq_length

    def _start_fill(self, job: _Job) -> None:
        cached = None
        if self.prefix_cache is not None and not job.params.echo_prompt:
            cached = self.prefix_cache.lookup(job.ids)
        have = 0 if cached is None else cached.shape[3]
        shift, end = self._fill_layout(job, have)
        self._ensure_capacity(self._fill_need(job, shift, end) + 1)
        if shift:
            self._shift(shift)
        row, start = self.max_batch_size - 1, end - len(job.ids) + 1
        if cached is not None:
            self._write_kv(row, start, cached)
        self.prefill_tokens += len(job.ids) - have
        self._begin(job, time.perf_counter())
        self._fill = _Fill(job, row, start, end, done=have, have=have)

    def _fill_group(self) -> Group:
        """The fill's next chunk: the prompt's last chunk lands on this step's decode slot."""
        f = self._fill
        steps = f.end - self._pos + 1  # this step and the rest: the last chunk's step has decode slot f.end
        n = len(f.job.ids) - f.done
        size = -(-n // steps)  # even chunks (a small leftover chunk would waste a pass)
        a = f.done
        local = torch.arange(a, a + size, device=self.device)  # prompt positions; the row's keys start at f.start
        mask, position_ids = left_padded_attention(torch.zeros(1, dtype=torch.long, device=self.device), size, a + size,
                                                   local)
        idx = torch.tensor([f.job.ids[a : a + size]], device=self.device)
        return Group(idx, slice(f.row, f.row + 1), local + f.start, position_ids, mask, key_start=f.start)

    def _finish_fill(self, hidden_last: torch.Tensor) -> None:
        """The whole prompt is in the fill row: cache its prefix, score it (echo), and move it into the batch."""
        f, self._fill = self._fill, None
        job, row, start = f.job, f.row, f.start
        if self.prefix_cache is not None and not job.params.echo_prompt:
            self.prefix_cache.store(job.ids, self._kv_reader(row, start), f.have)
        if job.params.echo_prompt:
            self._score_prompt(job, torch.cat(f.hidden))
        if job.params.max_new_tokens == 0:
            self._finish(job, "length")
            return
        B = len(self._rows)
        for t in (*self._k, *self._v):
            t[B, :, start : f.end + 1] = t[row, :, start : f.end + 1]
        self._rows.append(job)
        self._pads.append(start)
        logits = self._head(hidden_last.unsqueeze(0))
        self._logits = logits if self._logits is None or B == 0 else torch.cat([self._logits, logits])
        self.max_rows_seen = max(self.max_rows_seen, len(self._rows))

    def _write_kv(self, row: int, start: int, kv: torch.Tensor) -> None:
        """Puts cached keys/values (n_layer, 2, groups, n, head_size) into `row`'s slots start..start+n-1."""
        end = start + kv.shape[3]
        for layer, (k, v) in enumerate(zip(self._k, self._v)):
            k[row, :, start:end] = kv[layer, 0]
            v[row, :, start:end] = kv[layer, 1]

    def _kv_reader(self, row: int, start: int) -> Callable[[int, int], torch.Tensor]:
        """For `PrefixCache.store`: the keys/values of the prompt tokens a..b-1 of the prompt at `row`, `start`."""
        def read(a: int, b: int) -> torch.Tensor:
            return torch.stack([torch.stack([k[row, :, start + a : start + b], v[row, :, start + a : start + b]])
                                for k, v in zip(self._k, self._v)])
        return read

    def _begin(self, job: _Job, t0: float) -> None:
        job.t_start = t0
        job.out = Completion(prompt_ids=job.ids, new_ids=[], new_logprobs=[], new_top=[], queue_time=t0 - job.t_submit)
        p = job.params
        if p.temperature > GREEDY_TEMPERATURE:
            job.generator = torch.Generator(device=self.device)
            if p.seed is not None:
                job.generator.manual_seed(p.seed)
            else:
                job.generator.seed()

    def _ensure_capacity(self, slots: int) -> None:
        if slots <= self._capacity:
            return
        capacity = min(max(slots, 2 * self._capacity, 256), max(self.max_seq_length, slots))
        B, G, hs = self._cache_shape
        for store in (self._k, self._v):
            for i in range(self.model.config.n_layer):
                grown = torch.zeros(B, G, capacity, hs, device=self.device, dtype=self.dtype)
                if i < len(store):
                    grown[:, :, : self._capacity] = store[i]
                    store[i] = grown
                else:
                    store.append(grown)
        self._capacity = capacity

    def _use_cache(self, rows: slice, slots: slice) -> None:
        """Points every layer's KV cache at a view of the storage, so the model reads and writes it in place."""
        self.model.attach_kv_cache([k[rows, :, slots] for k in self._k], [v[rows, :, slots] for v in self._v])

    def _shift(self, offset: int) -> None:
        """Moves the running rows' cache `offset` slots right (> 0) or left (< 0)."""
        B, pos = len(self._rows), self._pos
        for store in (self._k, self._v):
            for t in store:
                if offset > 0:
                    t[:B, :, offset : pos + offset] = t[:B, :, :pos].clone()
                else:
                    t[:B, :, : pos + offset] = t[:B, :, -offset:pos].clone()
        self._pads = [p + offset for p in self._pads]
        self._pos += offset

    def _prefill(self, new: list[_Job]) -> None:
        t0 = time.perf_counter()
        longest = max(len(j.ids) for j in new)
        pos = max(self._pos, longest)
        need = max([pos + j.params.max_new_tokens for j in new]
                   + [pos + r.params.max_new_tokens - len(r.out.new_ids) for r in self._rows])
        self._ensure_capacity(need + 1)
        if pos > self._pos and self._rows:
            self._shift(pos - self._pos)
        self._pos = pos

        B, b = len(self._rows), len(new)
        # Cached prefixes go straight into the rows' slots; the forward covers the longest uncached rest (S tokens,
        # so rows with a shorter rest recompute a few of their cached tokens, to the same values).
        cached = [self.prefix_cache.lookup(j.ids) if self.prefix_cache is not None and not j.params.echo_prompt
                  else None for j in new]
        have = [0 if kv is None else kv.shape[3] for kv in cached]
        for i, (job, kv) in enumerate(zip(new, cached)):
            if kv is not None:
                self._write_kv(B + i, pos - len(job.ids), kv)
        S = max(len(j.ids) - n for j, n in zip(new, have))
        self.prefill_tokens += sum(len(j.ids) - n for j, n in zip(new, have))
        pads = torch.tensor([longest - len(j.ids) for j in new], device=self.device)
        idx = torch.tensor([([0] * (longest - len(j.ids)) + j.ids)[longest - S:] for j in new], device=self.device)
        input_pos = torch.arange(longest - S, longest, device=self.device)
        mask, position_ids = left_padded_attention(pads, S, longest, input_pos)
        if S == longest and not pads.any():  # no padding, nothing cached: plain causal attention (the fast kernel)
            mask = None
        self._use_cache(slice(B, B + b), slice(pos - longest, pos))
        hidden = self.model(idx, input_pos, position_ids=position_ids, mask=mask, return_hidden=True)
        logits = self._head(hidden[:, -1])
        if self.prefix_cache is not None:
            for i, job in enumerate(new):
                self.prefix_cache.store(job.ids, self._kv_reader(B + i, pos - len(job.ids)), have[i])

        keep: list[int] = []
        for i, job in enumerate(new):
            self._begin(job, t0)
            p = job.params
            if p.echo_prompt:
                self._score_prompt(job, hidden[i, S - len(job.ids):])
            if p.max_new_tokens == 0:
                self._finish(job, "length")
            else:
                keep.append(i)
        del hidden
        if len(keep) < b:  # rows that only scored their prompt leave at once: pack the rest
            for dst, src in enumerate(keep):
                if dst != src:
                    for t in (*self._k, *self._v):
                        t[B + dst, :, : pos] = t[B + src, :, : pos]
        self._rows += [new[i] for i in keep]
        self._pads += [pos - len(new[i].ids) for i in keep]
        kept_logits = logits[keep]
        self._logits = kept_logits if self._logits is None or B == 0 else torch.cat([self._logits, kept_logits])
        self.max_rows_seen = max(self.max_rows_seen, len(self._rows))

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """float logits of a few rows' final hidden states (rows, n_embd). On a CPU, `F.linear` over 2-8 rows takes
        a slow path for a large head (SmolLM2's 49k x 576: 13-26 ms against 3-6 ms as `W @ h.T`; bench/decode_step.py),
        so those rows go through `W @ h.T`: the same products, in another order."""
        head = self.model.lm_head
        if hidden.device.type == "cpu" and 2 <= hidden.shape[0] <= 8 and type(head) is torch.nn.Linear:
            out = (head.weight @ hidden.T).T
            return (out if head.bias is None else out + head.bias).float()
        return head(hidden).float()

    def _score_prompt(self, job: _Job, hidden: torch.Tensor, chunk: int = 256) -> None:
        """Log-probabilities of prompt tokens 1.. given their prefix (the first token has none)."""
        targets = torch.tensor(job.ids[1:], device=hidden.device)
        k = min(job.params.top_k_per_token, self.model.config.padded_vocab_size)
        for s in range(0, len(job.ids) - 1, chunk):
            logprobs = torch.log_softmax(self.model.lm_head(hidden[s : s + chunk][: len(targets) - s]).float(), dim=-1)
            t = targets[s : s + chunk]
            job.out.prompt_logprobs += logprobs.gather(-1, t.unsqueeze(-1)).squeeze(-1).tolist()
            if k:
                values, ids = logprobs.topk(k, dim=-1)
                job.out.prompt_top += [list(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]
            else:
                job.out.prompt_top += [[] for _ in range(t.numel())]

    def _step(self) -> None:
        t0 = time.perf_counter()
        if self._rows:
            self._sample()
        t1 = time.perf_counter()
        self.busy["sample"] += t1 - t0
        phase = "fill" if self._fill is not None else "decode"
        try:
            self._forward_step()
        finally:
            self.busy[phase] += time.perf_counter() - t1

    def _forward_step(self) -> None:
        """One pass for the rows' next tokens, with the fill's next chunk when a prompt is being filled."""
        if self._fill is not None and self._fill.job.future.cancelled():  # the client went away: stop filling
            self._fill = None
        if not self._rows and self._fill is None:
            self._reset()
            return
        B = len(self._rows)
        groups = ([self._decode_group()] if B else []) + ([self._fill_group()] if self._fill is not None else [])
        self._use_cache(slice(None), slice(None))
        hidden = self.model.forward_groups(groups)
        self._pos += 1
        if B:
            self._logits = self._head(hidden[0][:, -1])
            self.steps += 1
            self._stats[0] += 1
            self._stats[1] += B
        if self._fill is not None:
            f, chunk = self._fill, hidden[-1][0]
            f.done += chunk.shape[0]
            if f.job.params.echo_prompt:
                f.hidden.append(chunk)
            self.fill_steps += 1
            if f.done == len(f.job.ids):
                if self._pos - 1 != f.end:
                    raise RuntimeError(f"prefill of a joining prompt ended at slot {self._pos - 1}, not {f.end}")
                self._finish_fill(chunk[-1])
        if time.perf_counter() - self._stats[2] > 10 and self._stats[0]:  # a periodic summary of the decode loop
            n, rows, t0 = self._stats
            cache = self.prefix_cache
            logger.info("decode: %d steps in %.1fs (%.0f ms/step), %.1f rows/step, cache slots %d/%d; prompt tokens "
                        "computed %d, from the prefix cache %d; busy s %s", n, time.perf_counter() - t0,
                        1e3 * (time.perf_counter() - t0) / n, rows / n, self._pos, self._capacity, self.prefill_tokens,
                        cache.hit_tokens if cache else 0, {k: round(v, 1) for k, v in self.busy.items()})
            self._stats = [0, 0, time.perf_counter()]
        if not self._rows and self._fill is None:
            self._reset()
            return
        # All rows padded on the left (and no prompt filling): drop those slots, so the cache stays small.
        trim = min(self._pads) if self._rows and self._fill is None else 0
        if trim >= 32 and trim * 4 >= self._pos:
            self._shift(-trim)
            self.trims += 1

    def _decode_group(self) -> Group:
        """The rows' next tokens at the shared slot `pos`; attention reads from the first slot any row uses."""
        B, pos, first = len(self._rows), self._pos, min(self._pads)
        input_pos = torch.tensor([pos], device=self.device)
        pads = torch.tensor(self._pads, device=self.device) - first
        mask, position_ids = left_padded_attention(pads, 1, pos + 1 - first, input_pos - first)
        idx = torch.tensor(self._next_tokens, device=self.device).unsqueeze(1)
        return Group(idx, slice(0, B), input_pos, position_ids, mask, key_start=first)

    def _sample(self) -> None:
        """Picks each row's next token from its pending logits, records it, and drops the rows that are done."""
        rows, logits = self._rows, self._logits
        logprobs = torch.log_softmax(logits, dim=-1)  # untempered: what the model assigns, whatever the sampling
        tokens = logits.argmax(dim=-1)
        for i, job in enumerate(rows):
            p = job.params
            if p.temperature > GREEDY_TEMPERATURE:
                tokens[i] = sample(logits[i : i + 1], p.temperature, p.top_k or None, p.top_p, job.generator)[0]
        k = min(max(job.params.top_k_per_token for job in rows), logprobs.shape[-1])
        top = logprobs.topk(k, dim=-1) if k else None
        token_list = tokens.tolist()
        chosen = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
        top_ids, top_values = (top.indices.tolist(), top.values.tolist()) if top is not None else (None, None)

        done = [False] * len(rows)
        for i, job in enumerate(rows):
            tok, out, p = token_list[i], job.out, job.params
            if job.future.cancelled():  # the client went away: free the row
                done[i] = True
                continue
            if tok in self.stop_ids:
                done[i] = self._finish(job, "stop")
                continue
            out.new_ids.append(tok)
            out.new_logprobs.append(chosen[i])
            kk = p.top_k_per_token
            out.new_top.append(list(zip(top_ids[i][:kk], top_values[i][:kk])) if kk else [])
            if p.stop_sequences and self._hit_stop(out.new_ids, p.stop_sequences):
                done[i] = self._finish(job, "stop_sequence")
            elif p.stop_when is not None and p.stop_when(self.tokenizer.decode(out.new_ids)):
                done[i] = self._finish(job, "stop_when")
            elif len(out.new_ids) >= p.max_new_tokens:
                done[i] = self._finish(job, "length")

        self._next_tokens = [token_list[i] for i in self._compact(done)]  # each kept row's token, in row order
        if not self._rows:
            self._logits = None

    def _hit_stop(self, ids: list[int], stop_sequences: list[str]) -> bool:
        # A stop sequence of n characters spans at most ~4n byte-level tokens: decoding that tail is enough.
        window = 4 * max(len(s) for s in stop_sequences) + 8
        return find_stop(self.tokenizer.decode(ids[-window:]), stop_sequences) >= 0

    def _compact(self, done: list[bool]) -> list[int]:
        """Removes finished rows, moving rows from the end of the batch into their places; returns, for each row
        kept, its index before."""
        B = len(self._rows)
        keep = B - sum(done)
        holes = [i for i in range(keep) if done[i]]
        movers = [i for i in range(keep, B) if not done[i]]
        order = list(range(B))  # order[new_index] = old index, for the tokens to feed
        if holes:
            h = torch.tensor(holes, device=self.device)
            m = torch.tensor(movers, device=self.device)
            for t in (*self._k, *self._v):
                t[h, :, : self._pos] = t[m, :, : self._pos]
            for hi, mi in zip(holes, movers):
                self._rows[hi], self._pads[hi], order[hi] = self._rows[mi], self._pads[mi], mi
        self._rows, self._pads = self._rows[:keep], self._pads[:keep]
        return order[:keep]

    def _finish(self, job: _Job, reason: str) -> bool:
        out = job.out
        out.finish_reason = reason
        out.run_time = time.perf_counter() - job.t_start
        n = len(out.new_ids)
        logger.info(
            "request done: %d prompt tokens, %d new tokens (%s), queued %.3fs, ran %.3fs, %.1f tokens/s, batch %d",
            len(job.ids), n, reason, out.queue_time, out.run_time, n / max(out.run_time, 1e-9), len(self._rows),
        )
        if not job.future.done():
            job.future.set_result(out)
        return True

