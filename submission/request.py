"""What the engine serves: a request's sampling parameters, its result, and the request itself with its status.

A request moves WAITING (queued, or held for room in the batch) -> PREFILL (its whole prompt in one pass with the
others admitted at that step) or FILL (its prompt a chunk per pass beside the decoding rows) -> RUNNING (one token
per step) -> FINISHED (its future holds a `Completion` or an error). `submission/scheduler.py` moves it along.
"""

from __future__ import annotations

import enum
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


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


class Status(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    FILL = "fill"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Request:
    """One job and where it is: its cache row's prompt starts at slot `pad` (the slots before are padding)."""

    ids: list[int]
    params: SamplingParams
    future: Future
    status: Status = Status.WAITING
    generator: Optional[torch.Generator] = None
    out: Optional[Completion] = None
    t_submit: float = 0.0
    t_start: float = 0.0
    pad: int = 0
    # FILL only: the storage row its prompt fills, at slots pad..end; `done` prompt tokens are in the cache, of which
    # `have` came from the prefix cache; `hidden` keeps each chunk's hidden states to score an echoed prompt
    row: int = -1
    end: int = 0
    done: int = 0
    have: int = 0
    hidden: list = field(default_factory=list)

    @property
    def remaining(self) -> int:
        """Tokens it may still generate."""
        return self.params.max_new_tokens - (len(self.out.new_ids) if self.out is not None else 0)

    def fail(self, error: BaseException) -> None:
        self.status = Status.FINISHED
        if not self.future.done():
            self.future.set_exception(error)


class Worker:
    """An engine's one background thread: runs `loop` (which returns once `stop_event` is set) until stopped."""

    def __init__(self, loop: Callable[[], None], name: str) -> None:
        self.stop_event = threading.Event()
        self._loop, self._name = loop, name
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self._thread is None:
            self.stop_event.clear()
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
