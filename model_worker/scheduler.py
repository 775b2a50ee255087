"""The batch scheduler: a bounded queue of admitted requests, decoded by the engine in batches
of at most ``max_batch`` on a dedicated decode thread.

Two admission modes (``admission``):

* ``token`` (default, for :class:`~model_worker.engine.Stepwise` engines): the decode thread
  loops over decode steps of one running batch; between two steps it takes queued requests
  up to ``max_batch`` and joins them to the batch (their prefill runs, their cache rows merge
  into the running KV cache); finished and cancelled rows leave after each step. A request
  arriving while a long one decodes gets its first token after at most one step and one
  prefill, instead of after the whole batch. Under a backlog (more waiting than free slots)
  it admits once ``min_admit`` (``max_batch // 4``) slots are free, so the backlog's
  prefills share forwards instead of costing one extra forward per freed slot.
* ``batch``: a batch runs to completion while the next one gathers (the previous behaviour).

The decode thread runs at a lower OS priority (``decode_nice``) than the HTTP threads, so the
event loop that writes the token streams and the ``/metrics`` thread are scheduled first when
the CPU is contended; the CUDA kernels and torch's CPU ops release the GIL, and the switch
interval bounds how long the loop waits for the decode thread's Python stretches.

Weight offload (``offload_when_warm``): :meth:`Scheduler.want_resident` says where the weights
should be. The scheduler moves them only while no batch runs (in token mode: once the running
batch has emptied and nothing waits) and on the decode thread, so a move never overlaps a
decode: offload once idle while warm, restore at once on promotion. A
request that arrives while the weights are away or coming back waits in the queue (bounded as
always) and is served after the restore; a warm worker still answers, restoring on demand.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from model_worker.config import WorkerConfig
from model_worker.engine import (
    DecodeSession,
    Engine,
    EngineRequest,
    FinishReason,
    Offloadable,
    SamplingParams,
    Stepwise,
)
from model_worker.errors import ServingError
from model_worker.metrics import WorkerMetrics

log = logging.getLogger("model_worker")

Event = tuple[str, int, "FinishReason | None"]
"""``(text_delta, generated_tokens_so_far, finish_reason_or_None)``."""


@dataclass(frozen=True)
class Prepared:
    """A validated request, tokenized, ready to be scheduled."""

    kind: str  # "completion" | "chat"
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool
    request_id: str
    created: int

    def cache_key(self) -> tuple[Any, ...] | None:
        """Key for deterministic requests (greedy or seeded); None otherwise."""
        p = self.params
        if p.temperature > 0 and p.seed is None:
            return None
        return (tuple(self.prompt_ids), p.max_tokens, p.temperature, p.top_p, p.seed, p.stop)


@dataclass
class Job:
    """One admitted request in the scheduler."""

    prepared: Prepared
    out: asyncio.Queue[Event | BaseException]
    arrival: float
    request: EngineRequest
    first_token_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    done: bool = field(default=False)
    generated: int = 0  # tokens emitted so far (counted in generation_tokens_total)
    key: int = 0  # the job's id in the engine process (``--engine-process``)

    @classmethod
    def of(cls, prep: Prepared) -> Job:
        """A job for ``prep`` arriving now, with an empty queue and an engine request whose
        callback the scheduler sets."""
        return cls(
            prep,
            asyncio.Queue(),
            time.perf_counter(),
            EngineRequest(prep.prompt_ids, prep.params, lambda *_: None),
        )


class JobScheduler(Protocol):
    """What serving and the HTTP edge need from a scheduler: :class:`Scheduler` (the decode
    loop on a thread of this process) or :class:`~model_worker.engine_process.EngineProcess`
    (the decode loop in a child process)."""

    max_batch: int
    running: int
    last_batch_s: float

    @property
    def pending(self) -> Any:
        """The requests admitted and not yet started (``len()`` is the waiting count)."""
        ...

    @property
    def weights(self) -> str: ...

    @property
    def failure(self) -> str | None:
        """Why the scheduler can no longer decode (the engine process died); else None."""
        ...

    @property
    def engine_pid(self) -> int | None:
        """The engine's process id when it runs in a process of its own."""
        ...

    def want_resident(self, resident: bool) -> None: ...

    def new_job(self, prep: Prepared) -> Job: ...

    def submit(self, job: Job, bounded: bool = True) -> None: ...

    def cancel(self, job: Job) -> None:
        """Drop ``job``'s row (its client left, timed out, or it is answered)."""
        ...

    async def run(self) -> None: ...

    def close(self) -> None:
        """Stop decoding for good (server shutdown); idempotent."""
        ...


def _init_decode_thread(nice: int, torch_threads: int) -> None:
    """Set up the decode thread: torch's intra-op thread count (when given) and a nice value
    raised by ``nice`` (Linux: per thread, elsewhere a no-op); the OpenMP pool this thread
    starts later inherits the nice value."""
    if torch_threads > 0:
        import torch

        torch.set_num_threads(torch_threads)
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError as exc:  # e.g. a seccomp profile forbids it: run at normal priority
        log.warning("could not lower the decode thread's priority: %s", exc)


def record_weight_move(metrics: WorkerMetrics, to_device: bool, took_s: float) -> None:
    """Log a finished weight move and set its metrics (the offload gauge; the restore
    histogram for a move back to the device): in process and from the engine process."""
    if to_device:
        metrics.weight_restore.observe(took_s)
    log.info(
        "weights %s in %.3fs", "restored to the device" if to_device else "offloaded", took_s
    )
    metrics.weights_offloaded.set(0.0 if to_device else 1.0)


def queue_full(waiting: int, max_queue: int, max_batch: int, last_batch_s: float) -> ServingError:
    """The 429 for a full queue, with a ``Retry-After`` of about how long the ``waiting``
    requests take to get a batch slot (``last_batch_s`` per batch of ``max_batch``)."""
    retry = max(1, math.ceil(last_batch_s * (1 + waiting / max_batch)))
    return ServingError(
        429,
        f"server busy: {waiting} requests waiting (max_queue={max_queue})",
        type_="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(retry)},
    )


def decode_threads(torch_threads: int, device: str) -> int:
    """The decode thread's torch intra-op thread count: ``torch_threads`` when set, else 1
    when the model is on a GPU (its forwards are kernel launches; an OpenMP pool of every
    host core made each forward 3x slower and stalled steps for 0.4-0.7 s on an H200
    machine with 16 cores, see docs/model-worker.md), else 0 (torch's default)."""
    if torch_threads > 0:
        return torch_threads
    return 1 if device.startswith("cuda") else 0


class Scheduler:
    """Groups queued requests into batches and runs the engine on the decode thread."""

    def __init__(self, engine: Engine, metrics: WorkerMetrics, cfg: WorkerConfig) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_queue = cfg.max_queue
        self.max_batch = cfg.max_batch
        self.batch_wait_s = cfg.batch_wait_ms / 1000.0
        self.pending: deque[Job] = deque()
        self._qlock = threading.Lock()  # pending is popped by the decode thread (token mode)
        self.running = 0
        self._stepwise: Stepwise | None = (
            engine if cfg.admission == "token" and isinstance(engine, Stepwise) else None
        )
        self._stopping = False
        # token mode with more requests waiting than free slots: admit once this many slots
        # are free, so the prefills of a backlog share a forward instead of one per step
        self.min_admit = max(1, self.max_batch // 4)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self.last_batch_s = 0.5
        self._lock = threading.Lock()
        self._buffer: list[tuple[Job, Event | BaseException]] = []
        self._flush_scheduled = False
        self._stepping = False  # the token-mode decode loop is running (it wakes the loop)
        self._decode = ThreadPoolExecutor(
            1,
            "decode",
            initializer=_init_decode_thread,
            initargs=(cfg.decode_nice, decode_threads(cfg.torch_threads, engine.device)),
        )
        self._movable: Offloadable | None = engine if isinstance(engine, Offloadable) else None
        self._want_resident = True
        self.restoring = False

    @property
    def weights(self) -> str:
        """Where the weights are: ``device``, ``host`` or ``restoring`` (to the device)."""
        if self.restoring:
            return "restoring"
        eng = self.engine
        return "host" if isinstance(eng, Offloadable) and eng.offloaded else "device"

    def want_resident(self, resident: bool) -> None:
        """Ask for the weights on the device (``True``) or in host memory once idle."""
        if self._movable is None:
            return
        self._want_resident = resident
        self._wake.set()

    async def _move(self, to_device: bool) -> None:
        """Move the weights on the decode thread; a failed move is logged and turns the
        offload off (the engine decodes wherever its weights are), never the scheduler."""
        movable = self._movable
        assert movable is not None
        loop = asyncio.get_running_loop()
        self.restoring = to_device
        try:
            took = await loop.run_in_executor(
                self._decode, movable.restore if to_device else movable.offload
            )
        except Exception:
            log.exception(
                "moving the weights %s failed; offload disabled", "back" if to_device else "out"
            )
            self._movable = None
            return
        finally:
            self.restoring = False
        record_weight_move(self.metrics, to_device, took)

    async def _settle_weights(self) -> None:
        """Idle: put the weights where :meth:`want_resident` asked."""
        m = self._movable
        if m is not None and m.offloaded == self._want_resident:
            await self._move(to_device=self._want_resident)

    def new_job(self, prep: Prepared) -> Job:
        """A job for ``prep`` whose engine callback feeds its queue (call on the event loop)."""
        job = Job.of(prep)
        self._loop = asyncio.get_running_loop()
        job.request.emit = self._emitter(job, self._loop)
        return job

    def cancel(self, job: Job) -> None:
        """Drop ``job``'s row: the decode thread removes it before the next step."""
        job.request.cancelled.set()

    @property
    def failure(self) -> str | None:
        """Always None: the decode thread fails rows, never the scheduler."""
        return None

    @property
    def engine_pid(self) -> int | None:
        """None: the engine runs in this process."""
        return None

    def close(self) -> None:
        """Stop the decode loop after its current step."""
        self._stopping = True
        self._decode.shutdown(wait=False)

    @property
    def admission(self) -> str:
        """``token`` when requests join running batches, else ``batch``."""
        return "token" if self._stepwise is not None else "batch"

    @property
    def free_slots(self) -> int:
        """Batch slots the queued requests will take without waiting for a row to finish:
        free rows of the running batch (token mode), the whole next batch when idle."""
        if self._stepwise is None and self.running:
            return 0  # batch mode: a running batch admits nobody
        return max(0, self.max_batch - self.running)

    def submit(self, job: Job, bounded: bool = True) -> None:
        """Queue ``job``; raise 429 when more than ``max_queue`` requests would wait beyond
        the free batch slots (unless ``bounded`` is False): a burst on an idle worker fills
        the batch, it is not refused."""
        with self._qlock:
            waiting = len(self.pending)
            if not bounded or waiting - self.free_slots < self.max_queue:
                self.pending.append(job)
                self.metrics.waiting.set(waiting + 1)
                self._wake.set()
                return
        raise queue_full(waiting, self.max_queue, self.max_batch, self.last_batch_s)

    def _take(self, n: int, running: int) -> list[Job]:
        """Pop up to ``n`` queued jobs that are not cancelled (any thread), and count them
        as running beside the ``running`` rows already decoding, in the same critical
        section as :meth:`submit`'s check: a job in its prefill is neither waiting nor
        uncounted, so a long prefill cannot let the queue bound admit more."""
        jobs: list[Job] = []
        with self._qlock:
            while self.pending and len(jobs) < n:
                job = self.pending.popleft()
                if not job.request.cancelled.is_set():
                    jobs.append(job)
            self.metrics.waiting.set(len(self.pending))
            if jobs:
                self._set_running(running + len(jobs))
        return jobs

    def _started(self, jobs: list[Job]) -> None:
        now = time.perf_counter()
        for job in jobs:
            job.started_at = now
            self.metrics.queue_time.observe(now - job.arrival)
            self.metrics.prompt_tokens.inc(len(job.prepared.prompt_ids))

    def _emitter(self, job: Job, loop: asyncio.AbstractEventLoop) -> Callable[..., None]:
        """The engine-thread callback of ``job``. Events of all rows are buffered and handed
        to the event loop with one wake-up per decode step, not one per row: each wake-up is
        a write to the loop's self-pipe, and the decode thread then waits for the GIL while
        the woken loop runs (it took 25 % of the decode thread's time, one per row). In
        token mode the decode loop wakes the loop itself after each step (:meth:`_kick`);
        in batch mode the first event of a burst wakes it."""

        def emit(delta: str, n: int, finish: FinishReason | None) -> None:
            now = time.perf_counter()
            if n > job.generated:  # counted as generated, whether the request then
                self.metrics.generation_tokens.inc(n - job.generated)  # finishes or not
                job.generated = n
            if n >= 1 and job.first_token_at is None:
                job.first_token_at = now
            if finish is not None:
                job.finished_at = now
            with self._lock:
                self._buffer.append((job, (delta, n, finish)))
                if self._flush_scheduled or self._stepping:
                    return
                self._flush_scheduled = True
            loop.call_soon_threadsafe(self._flush)

        return emit

    def _kick(self) -> None:
        """Hand the events buffered during a decode step to the event loop (one wake-up)."""
        loop = self._loop
        with self._lock:
            if not self._buffer or self._flush_scheduled or loop is None:
                return
            self._flush_scheduled = True
        loop.call_soon_threadsafe(self._flush)

    def _fail(self, jobs: list[Job], exc: BaseException) -> None:
        """Hand ``exc`` to each job's consumer (a 500); callable from the decode thread."""
        if not jobs:
            return
        loop = self._loop
        assert loop is not None, "jobs exist only once new_job ran on the event loop"
        with self._lock:
            self._buffer.extend((job, exc) for job in jobs)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            items, self._buffer = self._buffer, []
            self._flush_scheduled = False
        for job, event in items:
            job.out.put_nowait(event)

    async def run(self) -> None:
        """The scheduling loop (a task for the server's lifetime)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self.pending:
                    self._wake.clear()  # before settling: a change meanwhile re-wakes us
                    await self._settle_weights()
                    if not self.pending:
                        await self._wake.wait()
                if self.batch_wait_s > 0 and len(self.pending) < self.max_batch:
                    await asyncio.sleep(self.batch_wait_s)
                if self._stepwise is not None:
                    if self._movable is not None and self._movable.offloaded:
                        await self._move(to_device=True)  # queued requests wait for the restore
                    # runs until the batch is empty and nothing waits
                    await loop.run_in_executor(self._decode, self._decode_loop, self._stepwise)
                    continue
                batch = self._take(self.max_batch, 0)
                if not batch:
                    continue
                if self._movable is not None and self._movable.offloaded:
                    await self._move(to_device=True)  # queued requests wait for the restore
                await self._run_batch(batch)
        finally:
            self._stopping = True
            self._decode.shutdown(wait=False)

    def _set_running(self, n: int) -> None:
        self.running = n
        self.metrics.running.set(n)

    def _decode_loop(self, engine: Stepwise) -> None:
        """Token-level admission, on the decode thread: admit queued jobs between steps up to
        ``max_batch``, step, drop the rows that left; return once the batch is empty and
        nothing waits. An engine failure fails the jobs it concerns (500), never the loop."""
        batch: DecodeSession = engine.new_batch()
        live: dict[int, Job] = {}  # id(EngineRequest) -> job
        self._stepping = True  # emit() buffers; _kick() wakes the loop once per step
        try:
            while not self._stopping:
                self._kick()
                room = self.max_batch - len(batch) if batch.can_admit else 0
                if 0 < room < self.min_admit and len(batch) and len(self.pending) > room:
                    room = 0  # a backlog: let a few slots free up and prefill them together
                jobs = self._take(room, len(batch)) if room > 0 else []
                if jobs:
                    self._started(jobs)
                    try:
                        left = batch.admit([j.request for j in jobs])
                    except Exception as exc:
                        log.exception("engine failed admitting %d requests", len(jobs))
                        self._fail(jobs, exc)
                    else:
                        live.update((id(j.request), j) for j in jobs)
                        self._leave(live, left)
                    self._set_running(len(batch))
                    self._kick()  # their first tokens, before the next step's forward
                if not len(batch):
                    if jobs:
                        continue  # all finished at their first token; more may wait
                    return
                self.metrics.batch_size.observe(len(batch))
                try:
                    left = batch.step()
                except Exception as exc:
                    log.exception("engine failed on a batch of %d", len(batch))
                    self._fail(list(live.values()), exc)
                    live.clear()
                    batch = engine.new_batch()
                else:
                    self._leave(live, left)
                self._set_running(len(batch))
        except Exception as exc:  # a bug outside the engine calls: fail the rows, keep serving
            log.exception("decode loop failed")
            self._fail(list(live.values()), exc)
        finally:
            self._stepping = False
            self._kick()
            self._set_running(0)

    def _leave(self, live: dict[int, Job], left: list[EngineRequest]) -> None:
        now = time.perf_counter()
        for req in left:
            job = live.pop(id(req), None)
            if job is not None and req.error is not None:
                self._fail([job], req.error)  # this row alone failed (a 500)
            if job is not None and job.started_at is not None:
                self.last_batch_s = now - job.started_at  # the Retry-After estimate

    async def _run_batch(self, batch: list[Job]) -> None:
        """Batch-level admission: decode ``batch`` to completion."""
        start = time.perf_counter()
        self._started(batch)
        self.metrics.batch_size.observe(len(batch))
        self._set_running(len(batch))
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._decode, self.engine.generate, [j.request for j in batch]
            )
        except Exception as exc:  # engine failure: every request of the batch gets a 500
            log.exception("engine failed on a batch of %d", len(batch))
            for job in batch:
                job.out.put_nowait(exc)
        else:
            for job in batch:
                if job.request.error is not None:  # a row that failed alone
                    job.out.put_nowait(job.request.error)
        finally:
            self._set_running(0)
            self.last_batch_s = time.perf_counter() - start
