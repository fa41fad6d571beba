"""Which requests run, and where their keys/values sit in the KV storage.

The slot layout: all running rows share the slot of their next token (`pos`, the model's shared `input_pos`), so
a row's prompt ends at `pos` and starts at its `pad` (the slots before it are padding that `left_padded_attention`
hides, and from which rotary positions count). A prompt joining longer than `pos` shifts the running rows right;
when every row has padding on the left, it is trimmed. Rows stay packed at the top of the storage: a finished row's
place goes to a row from the end of the batch.

Admission, in FIFO order: with no rows running, queued requests are prefilled together while there is room (rows,
cache slots, the padding budget). With rows running and a spare row, the next request instead fills the storage's
last row a chunk per pass beside the running rows (`prefill_chunk` tokens; 0: prefill it in one pass); its prompt
is placed to end on the slot the running rows write in its last chunk's pass, and then its row joins the batch.
"""

from __future__ import annotations

import queue
from typing import Optional

import torch

from submission.kv_cache import KVStorage, PrefixCache, slots_needed
from submission.request import Request, Status


class Scheduler:
    def __init__(self, storage: KVStorage, max_batch_size: int, max_queue: int, max_seq_length: int,
                 max_prefill_tokens: int, prefill_chunk: int, prefix_cache: Optional[PrefixCache]) -> None:
        self.storage = storage
        self.max_batch_size, self.max_seq_length = max_batch_size, max_seq_length
        self.max_prefill_tokens, self.prefill_chunk = max_prefill_tokens, prefill_chunk
        self.prefix_cache = prefix_cache
        self.queue: queue.Queue[Request] = queue.Queue(maxsize=max_queue)
        self.held: Optional[Request] = None  # the next request in FIFO order, waiting for room in the batch
        self.rows: list[Request] = []  # RUNNING, in storage rows 0..len-1
        self.pos = 0  # the cache slot every row writes its next token to
        self.admitting: list[Request] = []  # PREFILL: being prefilled in one pass
        self.fill: Optional[Request] = None  # FILL: being prefilled chunk by chunk beside the rows

    def add(self, request: Request) -> None:
        """Queues a request; raises `queue.Full` when the queue is full."""
        self.queue.put_nowait(request)

    def in_flight(self) -> list[Request]:
        return self.rows + self.admitting + ([self.fill] if self.fill else [])

    def reset(self) -> None:
        """Forgets the batch (after a failed step: its requests were failed)."""
        self.rows, self.pos, self.admitting, self.fill = [], 0, [], None

    def drain(self) -> list[Request]:
        """Takes every request not finished out of the scheduler: the batch's, the held one and the queue's."""
        out = [*self.rows, *([self.held] if self.held else []), *([self.fill] if self.fill else [])]
        self.held = None
        self.reset()
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out

    # ---------------------------------------------------------------- admission
    def _next(self, block: bool) -> Optional[Request]:
        if self.held is not None:
            request, self.held = self.held, None
            return request
        try:
            return self.queue.get(timeout=0.05) if block else self.queue.get_nowait()
        except queue.Empty:
            return None

    def schedule(self) -> tuple[list[Request], bool]:
        """The requests to admit now, and whether the one request is to be filled chunk by chunk beside the running
        rows (then `place_fill` it) rather than prefilled with the others in one pass (then `place_batch` them).
        Blocks a moment for a request when nothing runs."""
        if self.fill is not None:
            return [], False  # one request fills at a time; the queue waits for it (FIFO)
        if self.rows and self.prefill_chunk > 0 and len(self.rows) <= self.max_batch_size - 2:
            request = self._next(block=False)
            if request is not None and not request.future.cancelled():
                if self._fits_fill(request):
                    return [request], True
                self.held = request
            return [], False
        new: list[Request] = []
        while len(self.rows) + len(new) < self.max_batch_size:
            request = self._next(block=not self.rows and not new)
            if request is None:
                break
            if request.future.cancelled():
                request.status = Status.FINISHED
                continue
            if not self._fits(new + [request]) or self._prefix_pending(new, request):
                self.held = request  # keeps FIFO order: it goes first once there is room (or once the prefix is cached)
                break
            new.append(request)
        for request in new:
            request.status = Status.PREFILL
        self.admitting = new
        return new, False

    def _prefix_pending(self, new: list[Request], request: Request) -> bool:
        """Whether `request` starts like one being admitted now whose prefix is not cached yet: it waits one step, to
        find that prefix in the cache instead of computing it alongside (HELM sends a run's prompts back to back)."""
        cache = self.prefix_cache
        if cache is None or request.params.echo_prompt or len(request.ids) <= cache.block:
            return False
        first = request.ids[: cache.block]
        return not cache.first_block_cached(first) and any(r.ids[: cache.block] == first for r in new)

    def _fits(self, new: list[Request]) -> bool:
        if len(new) == 1 and not self.rows:
            return True  # a request alone always fits (checked in submit)
        longest = max(len(r.ids) for r in new)
        if len(new) > 1:
            padded, real = len(new) * longest, sum(len(r.ids) for r in new)
            # Prompts are prefilled together only when padding wastes little compute (prefill is compute-bound);
            # a very different length waits for the next step's prefill.
            if padded > self.max_prefill_tokens or padded > 1.25 * real + 64:
                return False
        return slots_needed(max(self.pos, longest), self.rows + new) <= self.max_seq_length

    def _fill_layout(self, request: Request, have: int) -> tuple[int, int]:
        """(shift, end): how far the running rows must move right for `request`'s prompt to fit left of its last
        slot, and that slot, the decode slot of the step that carries the prompt's last chunk."""
        steps = -(-(len(request.ids) - have) // self.prefill_chunk)
        shift = max(0, len(request.ids) - (self.pos + steps))
        return shift, self.pos + shift + steps - 1

    def _fill_slots(self, request: Request, shift: int, end: int) -> int:
        """Cache slots the batch needs with `request` filled to `end` after shifting the rows by `shift`."""
        return max(slots_needed(self.pos + shift, self.rows), slots_needed(end + 1, [request]))

    def _fits_fill(self, request: Request) -> bool:
        shift, end = self._fill_layout(request, 0)  # no cached prefix: the most slots it can take
        return self._fill_slots(request, shift, end) <= self.max_seq_length

    # ---------------------------------------------------------------- slot layout
    def place_batch(self, new: list[Request]) -> int:
        """Lays out `new` in the storage rows after the running ones, every prompt ending left of the shared slot,
        shifting the running rows right for a longer prompt; returns that slot."""
        longest = max(len(r.ids) for r in new)
        pos = max(self.pos, longest)
        self.storage.ensure(slots_needed(pos, self.rows + new) + 1)
        if pos > self.pos and self.rows:
            self.shift(pos - self.pos)
        self.pos = pos
        for request in new:
            request.pad = pos - len(request.ids)
        return pos

    def join_batch(self, new: list[Request], keep: list[int]) -> None:
        """After their prefill, the requests `new[i]` for i in `keep` join the running rows (the others are done)."""
        B = len(self.rows)
        for dst, src in enumerate(keep):  # rows that only scored their prompt leave at once: pack the rest
            if dst != src:
                self.storage.move(B + dst, B + src, slice(0, self.pos))
        for i in keep:
            new[i].status = Status.RUNNING
        self.rows += [new[i] for i in keep]

    def place_fill(self, request: Request, have: int) -> None:
        """Makes `request` the fill, in the storage's last row; `have` of its prompt tokens come from the prefix
        cache."""
        shift, end = self._fill_layout(request, have)
        self.storage.ensure(self._fill_slots(request, shift, end) + 1)
        if shift:
            self.shift(shift)
        request.row, request.end, request.pad = self.max_batch_size - 1, end, end - len(request.ids) + 1
        request.done = request.have = have
        request.status = Status.FILL
        self.fill = request

    def next_chunk(self) -> tuple[int, int]:
        """The fill's prompt tokens a..b-1 to compute in this step's pass, in even chunks (a small leftover chunk would
        waste a pass) so that the last one lands on the fill's end slot."""
        f = self.fill
        steps = f.end - self.pos + 1  # this step and the rest: the last chunk's step has decode slot f.end
        size = -(-(len(f.ids) - f.done) // steps)
        return f.done, f.done + size

    def end_fill(self) -> Request:
        """The fill's prompt is all in its row: it stops being the fill (`join_fill` it to have it decode)."""
        request, self.fill = self.fill, None
        return request

    def join_fill(self, request: Request) -> None:
        self.storage.move(len(self.rows), request.row, slice(request.pad, request.end + 1))
        request.status = Status.RUNNING
        self.rows.append(request)

    def drop_cancelled_fill(self) -> None:
        if self.fill is not None and self.fill.future.cancelled():  # the client went away: stop filling
            self.fill.status = Status.FINISHED
            self.fill = None

    def shift(self, offset: int) -> None:
        """Moves the running rows' cache `offset` slots right (> 0) or left (< 0)."""
        self.storage.shift(len(self.rows), self.pos, offset)
        for request in self.rows:
            request.pad += offset
        self.pos += offset

    def trim(self) -> bool:
        """When every row has 32+ slots of padding on the left (a quarter of the slots or more) and no prompt is
        filling, drops those slots, so the cache stays small. Whether it did."""
        trim = min(r.pad for r in self.rows) if self.rows and self.fill is None else 0
        if trim >= 32 and trim * 4 >= self.pos:
            self.shift(-trim)
            return True
        return False

    def compact(self, done: list[bool]) -> list[int]:
        """Removes the finished rows, moving rows from the end of the batch into their places; returns, for each row
        kept, its index before."""
        B = len(self.rows)
        keep = B - sum(done)
        holes = [i for i in range(keep) if done[i]]
        movers = [i for i in range(keep, B) if not done[i]]
        order = list(range(B))  # order[new_index] = old index, for the tokens to feed
        if holes:
            h = torch.tensor(holes, device=self.storage.device)
            m = torch.tensor(movers, device=self.storage.device)
            self.storage.move(h, m, slice(0, self.pos))
            for hi, mi in zip(holes, movers):
                self.rows[hi], order[hi] = self.rows[mi], mi
        self.rows = self.rows[:keep]
        return order[:keep]
