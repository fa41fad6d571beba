"""The engine's scheduler on its own: admission order, request status and the slot layout of the KV storage."""

from __future__ import annotations

import queue
from concurrent.futures import Future

import pytest
import torch

from submission.kv_cache import KVStorage, PrefixCache
from submission.request import Request, SamplingParams, Status
from submission.scheduler import Scheduler
from test_submission_kv_cache import filled, tiny_model


def make(max_batch_size: int = 4, prefill_chunk: int = 0, prefix_cache=None, max_queue: int = 8) -> Scheduler:
    storage = KVStorage(tiny_model(), rows=max_batch_size, max_slots=200)
    return Scheduler(storage, max_batch_size, max_queue, max_seq_length=200, max_prefill_tokens=8192,
                     prefill_chunk=prefill_chunk, prefix_cache=prefix_cache)


def request(n_ids: int, max_new: int = 4, first: int = 1) -> Request:
    return Request(list(range(first, first + n_ids)), SamplingParams(max_new_tokens=max_new), Future())


def admit(s: Scheduler, new: list[Request]) -> None:
    """What the engine does with a batch `schedule` gives it (no forward pass: the layout is what is tested)."""
    s.place_batch(new)
    s.join_batch(new, list(range(len(new))))
    s.admitting = []


def test_prompts_of_similar_length_are_admitted_together_in_fifo_order():
    s = make(max_queue=4)
    a, b, c, cancelled = request(10), request(10), request(60), request(10)
    for r in (a, b, c, cancelled):
        s.add(r)
    with pytest.raises(queue.Full):
        s.add(request(3))
    assert all(r.status is Status.WAITING for r in (a, b, c))
    new, chunked = s.schedule()
    assert new == [a, b] and not chunked  # c's padding would waste too much: it waits, first in line
    assert a.status is b.status is Status.PREFILL and s.admitting == [a, b] and s.held is c
    admit(s, [a, b])
    assert a.status is Status.RUNNING and s.rows == [a, b] and s.pos == 10 and a.pad == b.pad == 0
    cancelled.future.cancel()
    new, _ = s.schedule()
    assert new == [c]  # the cancelled one is dropped
    assert cancelled.status is Status.FINISHED
    admit(s, [c])  # the longer prompt shifts the running rows right
    assert s.pos == 60 and [r.pad for r in s.rows] == [50, 50, 0]


def test_a_prompt_sharing_an_uncached_prefix_waits_a_step_to_find_it_cached():
    s = make(prefix_cache=PrefixCache(2**20))
    a, b = request(40), request(40)
    s.add(a)
    s.add(b)
    new, _ = s.schedule()
    assert new == [a] and s.held is b


def test_a_prompt_joining_running_rows_is_laid_out_to_end_on_its_last_chunks_slot():
    s = make(prefill_chunk=8)
    a = request(10, max_new=40)
    s.add(a)
    admit(s, s.schedule()[0])
    filled(s.storage, 1)
    d = request(30)
    s.add(d)
    new, chunked = s.schedule()
    assert new == [d] and chunked
    s.place_fill(d, have=0)
    # 4 chunks of 8; the rows move 16 slots right so that its 30 tokens end on slot 10 + 16 + 4 - 1
    assert d.status is Status.FILL and s.fill is d and d.row == 3
    assert s.pos == 26 and a.pad == 16 and (d.pad, d.end) == (0, 29)
    assert s.schedule() == ([], False)  # one fill at a time
    s.storage.write(d.row, 0, torch.ones(2, 2, 2, 30, 4))
    assert s.end_fill() is d and s.fill is None
    s.join_fill(d)
    assert d.status is Status.RUNNING and s.rows == [a, d]
    assert s.storage.read(1, 0, 30).eq(1).all()


def test_padding_left_of_every_row_is_trimmed_and_finished_rows_are_packed():
    s = make()
    rows = [request(10), request(10), request(10)]
    s.rows, s.pos = rows, 100
    for r, pad in zip(rows, (40, 50, 60)):
        r.pad = pad
    filled(s.storage, 100)
    before = [s.storage.read(i, 40, 100) for i in range(3)]
    assert s.trim()
    assert s.pos == 60 and [r.pad for r in rows] == [0, 10, 20]
    assert all(torch.equal(s.storage.read(i, 0, 60), before[i]) for i in range(3))
    assert not s.trim()  # row 0 has no padding left
    order = s.compact([True, False, False])
    assert order == [2, 1] and s.rows == [rows[2], rows[1]]
    assert torch.equal(s.storage.read(0, 0, 60), before[2])


def test_drain_hands_back_every_request_not_done():
    s = make(max_batch_size=2)
    a, b, c, d = request(10), request(10), request(10), request(10)
    for r in (a, b, c, d):
        s.add(r)
    admit(s, s.schedule()[0])
    assert s.rows == [a, b]
    assert s.drain() == [a, b, c, d]
    assert s.rows == [] and s.queue.empty() and s.pos == 0
