"""The vLLM backend of the submission server (`BACKEND=vllm`): vLLM computes the tokens, everything else is ours.

    BACKEND=vllm CHECKPOINT_DIR=checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        .venv-vllm/bin/python -m uvicorn submission.main:app --port 8080

vLLM (paged KV cache, CUDA graphs, fused attention, tensor parallelism) is the engine GPU teams serve with. Here it
sits behind the same `/process`, `/tokenize`, `/decode` API as our engine: `submission.main.Server` tokenizes with
our tokenizer, validates, truncates and builds the response (stop-sequence cut, top_logprob texts, echo_prompt) for
both; `VLLMEngine` only replaces `submission.engine.Engine`: it takes token ids and sampling parameters and returns
a `Completion` future, with the same stop rules (the tokenizer's stop ids, stop sequences checked on the decoded
tail, `stop_when`), the same untempered logprobs (vLLM's "raw_logprobs") and the same top-k lists.

Settings (environment variables, beside submission/main.py's CHECKPOINT_DIR, PRECISION, MAX_BATCH_SIZE, MAX_QUEUE,
MAX_SEQ_LENGTH):
- CHECKPOINT_DIR: one of our checkpoints (exported to the HF format at start, into EXPORT_DIR) or an HF export
  already made with scripts/convert_lit_checkpoint.py (config.json + *.safetensors; what a GPU image should hold).
- LORA_PATH: a finetune run's LoRA weights (OUT/step-NNNNNN/lit_model.pth.lora, exported as a PEFT adapter at
  start; needs CHECKPOINT_DIR to be the lit base) or a PEFT adapter dir. Every request runs as a vLLM LoRA request
  on the base weights: no merged copy.
- EXPORT_DIR: where those exports go (default: a temporary dir, removed at shutdown).
- EAGER=1: skip torch.compile and CUDA graph capture (starts in seconds instead of minutes; slower steps).
- TENSOR_PARALLEL_SIZE (default 1), GPU_MEMORY_UTILIZATION (default 0.9): vLLM's own.
- VLLM_CPU_KVCACHE_SPACE: the KV cache in GiB on a CPU (vLLM's own variable).
PREFIX_CACHE_MB=0 turns vLLM's prefix caching off; QUANTIZE is not supported (vLLM has quantizations of its own).
Differences from our engine: temperatures above 2 are refused (vLLM's limit), sampled tokens come from vLLM's own
random streams (the same seed gives the same tokens within a backend, not across backends).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import tempfile
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lit_gpt.generation import GREEDY_TEMPERATURE, find_stop
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import CHECKPOINT_FILENAME, default_precision
from submission.request import Completion, SamplingParams, Worker
from submission.main import Server, field_error
from submission.schemas import MAX_TOP_K_PER_TOKEN, ProcessRequest

logger = logging.getLogger("submission.vllm")

MAX_TEMPERATURE = 2.0  # vLLM's SamplingParams refuse more
PRECISION_TO_VLLM = {"32-true": "float32", "bf16-true": "bfloat16", "16-true": "float16"}
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank


@dataclass
class _Job:
    ids: list[int]
    params: SamplingParams
    future: Future
    out: Completion
    t_submit: float
    started: bool = False  # vLLM sent its first output (the prompt is computed)


def is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def export_for_vllm(checkpoint_dir: Path, lora_path: Optional[Path], export_dir: Path) -> tuple[Path, Optional[Path]]:
    """(the HF model dir, the PEFT adapter dir or None) for vLLM, exporting our formats into `export_dir`."""
    checkpoint_dir = Path(checkpoint_dir)
    lit = (checkpoint_dir / CHECKPOINT_FILENAME).is_file()
    if not lit and not is_hf_dir(checkpoint_dir):
        raise RuntimeError(f"CHECKPOINT_DIR {checkpoint_dir}: neither {CHECKPOINT_FILENAME} nor an HF export "
                           "(config.json + *.safetensors)")
    from lit_gpt.convert_lit import convert_lit_checkpoint  # only where something needs exporting

    model_dir = checkpoint_dir
    if lit:
        model_dir = convert_lit_checkpoint(checkpoint_dir=checkpoint_dir, output_dir=export_dir / "model", format="hf")
    adapter = None
    if lora_path is not None:
        lora_path = Path(lora_path)
        if (lora_path / "adapter_config.json").is_file():
            adapter = lora_path
        elif not lit:
            raise RuntimeError(f"LORA_PATH {lora_path}: our LoRA weights export against our base checkpoint; give "
                               "CHECKPOINT_DIR as the lit checkpoint the run trained on, or LORA_PATH as a PEFT dir")
        else:
            adapter = convert_lit_checkpoint(checkpoint_dir=checkpoint_dir, output_dir=export_dir / "adapter",
                                             format="peft", lora_path=lora_path)
    return Path(model_dir), adapter


def adapter_rank(adapter_dir: Path) -> int:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    return max([int(cfg.get("r") or 8), *map(int, (cfg.get("rank_pattern") or {}).values())])


class VLLMEngine:
    """`submission.engine.Engine`'s interface (submit / start / stop, queue, max_seq_length, /health counters) over a
    vLLM `LLMEngine` stepped by a background thread."""

    def __init__(
        self,
        model_dir: Path,
        tokenizer: Tokenizer,
        adapter_dir: Optional[Path] = None,
        max_seq_length: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        max_queue: int = 256,
        dtype: str = "float32",
        prefix_caching: bool = True,
        eager: bool = False,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
    ) -> None:
        from vllm import EngineArgs, LLMEngine
        from vllm.lora.request import LoRARequest

        block = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]
        self.max_seq_length = min(max_seq_length or block, block)
        if self.max_seq_length + 1 > block:
            # One slot more than the context: an echo-only request (max_new_tokens 0, sent as 1 token that is
            # dropped) may fill the context, and vLLM wants room for a generated token. That slot is never computed.
            os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
        lora = {}
        if adapter_dir is not None:
            rank = adapter_rank(adapter_dir)
            lora = {"enable_lora": True, "max_loras": 1, "max_lora_rank": next(r for r in LORA_RANKS if r >= rank)}
        if tensor_parallel_size == 1:
            # One device: vLLM's engine and model run in this process (on a CPU, two more processes would each hold
            # a torch runtime, and the model's threads would compete with ours).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        args = EngineArgs(
            model=str(model_dir), dtype=dtype, max_model_len=self.max_seq_length + 1, skip_tokenizer_init=True,
            generation_config="vllm",  # the model's generation_config.json must not change the requests' sampling
            max_logprobs=MAX_TOP_K_PER_TOKEN, enable_prefix_caching=prefix_caching, enforce_eager=eager,
            tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            disable_log_stats=True, distributed_executor_backend="uni" if tensor_parallel_size == 1 else None,
            **({"max_num_seqs": max_batch_size} if max_batch_size else {}), **lora,
        )
        self.llm = LLMEngine.from_engine_args(args)
        self.lora = LoRARequest("adapter", 1, str(adapter_dir)) if adapter_dir is not None else None
        self.tokenizer = tokenizer
        self.stop_ids = set(tokenizer.stop_ids)
        self.queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self.prefix_cache = None  # vLLM's own; /health reports it as absent
        self.prefill_tokens = 0  # prompt tokens computed (those vLLM found in its prefix cache are not)
        self.busy: dict[str, float] = {"step": 0.0}
        self._jobs: dict[str, _Job] = {}
        self._next_id = 0
        self._worker = Worker(self._loop, "vllm-engine")
        self._stop = self._worker.stop_event

    @property
    def running(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._worker.stop(timeout)
        error = RuntimeError("the server is shutting down")
        self._fail(list(self._jobs), error)
        while True:
            try:
                self.queue.get_nowait().future.set_exception(error)
            except queue.Empty:
                break

    def submit(self, ids: list[int], params: SamplingParams) -> Future:
        """Queues a job; raises `queue.Full` when the queue is full, ValueError when it cannot fit the context."""
        if not ids:
            raise ValueError("the prompt has no tokens")
        if len(ids) + params.max_new_tokens > self.max_seq_length:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds the "
                             f"context ({self.max_seq_length})")
        job = _Job(list(ids), params, Future(), Completion(prompt_ids=list(ids), new_ids=[], new_logprobs=[],
                                                           new_top=[]), time.perf_counter())
        self.queue.put_nowait(job)
        return job.future

    # ---------------------------------------------------------------- worker
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._admit(block=not self._jobs)
                if self._jobs:
                    t0 = time.perf_counter()
                    outputs = self.llm.step()
                    self.busy["step"] += time.perf_counter() - t0
                    for out in outputs:
                        self._update(out)
            except Exception as e:  # a bug or an out-of-memory: fail the jobs in flight, keep serving
                logger.exception("vLLM step failed; failing %d jobs", len(self._jobs))
                self._fail(list(self._jobs), e)

    def _fail(self, request_ids: list[str], error: BaseException) -> None:
        for rid in request_ids:
            job = self._jobs.pop(rid)
            if not job.future.done():
                job.future.set_exception(error)
        if request_ids:
            self.llm.abort_request(request_ids)

    def _admit(self, block: bool) -> None:
        while True:
            try:
                job = self.queue.get(timeout=0.05) if block else self.queue.get_nowait()
            except queue.Empty:
                return
            block = False
            if job.future.cancelled():
                continue
            rid = str(self._next_id)
            self._next_id += 1
            try:
                self.llm.add_request(rid, {"prompt_token_ids": job.ids}, self._sampling(job.params),
                                     lora_request=self.lora)
            except Exception as e:  # vLLM refused this request: fail it alone
                job.future.set_exception(e)
                continue
            job.out.queue_time = time.perf_counter() - job.t_submit
            self._jobs[rid] = job

    def _sampling(self, p: SamplingParams):
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        greedy = p.temperature <= GREEDY_TEMPERATURE
        return VSamplingParams(
            max_tokens=max(1, p.max_new_tokens),  # 0 (echo only): one token, dropped
            temperature=0.0 if greedy else p.temperature, top_p=p.top_p, top_k=p.top_k or 0,
            seed=None if p.seed is None else p.seed % (1 << 63),
            logprobs=p.top_k_per_token, prompt_logprobs=p.top_k_per_token if p.echo_prompt else None,
            # Stops are ours (below), as in our engine: the tokenizer's stop ids end generation, stop sequences are
            # matched on our decoding of the tokens.
            ignore_eos=True, stop_token_ids=sorted(self.stop_ids), detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )

    @staticmethod
    def _top(entries: dict, k: int) -> list[tuple[int, float]]:
        """The k most likely (id, logprob) of one position's vLLM logprobs (which also hold the chosen token)."""
        ranked = sorted(entries.items(), key=lambda kv: kv[1].rank)
        return [(i, lp.logprob) for i, lp in ranked if lp.rank <= k][:k]

    def _update(self, out) -> None:
        """Takes one step's new tokens of a request (vLLM's DELTA outputs), with our engine's stop rules."""
        rid = out.request_id
        job = self._jobs.get(rid)
        if job is None:
            return
        c, p, k = job.out, job.params, job.params.top_k_per_token
        if job.future.cancelled():  # the client went away
            self._jobs.pop(rid)
            self.llm.abort_request([rid])
            return
        if not job.started:
            job.started = True
            self.prefill_tokens += len(job.ids) - (out.num_cached_tokens or 0)
        if out.prompt_logprobs and p.echo_prompt:  # [None, {id: Logprob}, ...]: tokens 1.. given their prefix
            for tok, entries in zip(job.ids[1:], out.prompt_logprobs[1:]):
                c.prompt_logprobs.append(entries[tok].logprob)
                c.prompt_top.append(self._top(entries, k))
        o = out.outputs[0]
        reason = None
        for tok, entries in zip(o.token_ids, o.logprobs or [{}] * len(o.token_ids)):
            if p.max_new_tokens == 0:
                reason = "length"
            elif tok in self.stop_ids:
                reason = "stop"
            else:
                c.new_ids.append(tok)
                c.new_logprobs.append(entries[tok].logprob)
                c.new_top.append(self._top(entries, k) if k else [])
                if p.stop_sequences and self._hit_stop(c.new_ids, p.stop_sequences):
                    reason = "stop_sequence"
                elif p.stop_when is not None and p.stop_when(self.tokenizer.decode(c.new_ids)):
                    reason = "stop_when"
                elif len(c.new_ids) >= p.max_new_tokens:
                    reason = "length"
            if reason:
                break
        if reason is None and out.finished:
            reason = o.finish_reason or "length"
        if reason is None:
            return
        self._jobs.pop(rid)
        if not out.finished:
            self.llm.abort_request([rid])
        c.finish_reason = reason
        c.run_time = time.perf_counter() - job.t_submit - c.queue_time
        logger.info("request done: %d prompt tokens, %d new tokens (%s), queued %.3fs, ran %.3fs", len(job.ids),
                    len(c.new_ids), reason, c.queue_time, c.run_time)
        if not job.future.done():
            job.future.set_result(c)

    def _hit_stop(self, ids: list[int], stop_sequences: list[str]) -> bool:
        # As our engine: a stop sequence of n characters spans at most ~4n byte-level tokens.
        window = 4 * max(len(s) for s in stop_sequences) + 8
        return find_stop(self.tokenizer.decode(ids[-window:]), stop_sequences) >= 0


class VLLMServer(Server):
    """`Server` with the checks vLLM needs beyond ours, and the export dir to remove at shutdown."""

    def __init__(self, tokenizer, engine: VLLMEngine, name: str, cleanup: Optional[Path] = None) -> None:
        super().__init__(None, tokenizer, engine, name=name)
        self.cleanup = cleanup

    def prepare(self, req: ProcessRequest):
        if req.temperature > MAX_TEMPERATURE:
            raise field_error(("temperature",), f"Input should be less than or equal to {MAX_TEMPERATURE} (the "
                               "vLLM backend's limit)", req.temperature, "less_than_equal")
        return super().prepare(req)

    def close(self) -> None:
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def load_vllm_server(
    checkpoint_dir: Path | str,
    lora_path: Optional[Path | str] = None,
    precision: Optional[str] = None,
    max_batch_size: Optional[int] = None,
    max_queue: int = 256,
    max_seq_length: Optional[int] = None,
    prefix_caching: bool = True,
    eager: bool = False,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    export_dir: Optional[Path | str] = None,
) -> VLLMServer:
    if precision is not None and precision not in PRECISION_TO_VLLM:
        raise RuntimeError(f"PRECISION {precision!r}: the vLLM backend takes one of {', '.join(PRECISION_TO_VLLM)}")
    checkpoint_dir = Path(checkpoint_dir)
    cleanup = None
    if export_dir is None:
        export_dir = cleanup = Path(tempfile.mkdtemp(prefix="vllm-export-"))
    t0 = time.perf_counter()
    try:
        model_dir, adapter_dir = export_for_vllm(checkpoint_dir, Path(lora_path) if lora_path else None,
                                                 Path(export_dir))
        tokenizer = Tokenizer(checkpoint_dir)
        engine = VLLMEngine(model_dir, tokenizer, adapter_dir, max_seq_length=max_seq_length,
                            max_batch_size=max_batch_size, max_queue=max_queue,
                            dtype=PRECISION_TO_VLLM[precision or default_precision()], prefix_caching=prefix_caching,
                            eager=eager, tensor_parallel_size=tensor_parallel_size,
                            gpu_memory_utilization=gpu_memory_utilization)
    except BaseException:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        raise
    logger.info("vLLM serving %s%s, context %d, in %.1fs", model_dir, f" with adapter {adapter_dir}" if adapter_dir
                else "", engine.max_seq_length, time.perf_counter() - t0)
    return VLLMServer(tokenizer, engine, name=checkpoint_dir.name, cleanup=cleanup)


def server_from_env() -> VLLMServer:
    from submission.main import _env_int

    checkpoint_dir = os.environ.get("CHECKPOINT_DIR")
    if not checkpoint_dir:
        raise RuntimeError("set CHECKPOINT_DIR to the checkpoint dir to serve")
    if os.environ.get("QUANTIZE"):
        raise RuntimeError("QUANTIZE is not supported by the vLLM backend (serve a quantized HF export instead)")
    return load_vllm_server(
        checkpoint_dir,
        lora_path=os.environ.get("LORA_PATH") or None,
        precision=os.environ.get("PRECISION") or None,
        max_batch_size=_env_int("MAX_BATCH_SIZE"),
        max_queue=_env_int("MAX_QUEUE") or 256,
        max_seq_length=_env_int("MAX_SEQ_LENGTH"),
        prefix_caching=float(os.environ.get("PREFIX_CACHE_MB") or 1) > 0,
        eager=os.environ.get("EAGER", "") not in ("", "0"),
        tensor_parallel_size=_env_int("TENSOR_PARALLEL_SIZE") or 1,
        gpu_memory_utilization=float(os.environ.get("GPU_MEMORY_UTILIZATION") or 0.9),
        export_dir=os.environ.get("EXPORT_DIR") or None,
    )
