"""``--engine-process``: the engine and its token-level decode loop in a child process.

In-process, the decode thread and the event loop that writes the token streams share one
GIL: the decode thread waits for it each time it wakes the loop, and the HTTP side reached
about a third of the engine's in-process rate (docs/model-worker.md). vLLM v1 runs its
engine core in a separate process for the same reason. Here the parent keeps HTTP,
tokenization, the bounded queue (429), timeouts, drain, metrics and the result cache;
:class:`EngineProcess` has the interface of :class:`~model_worker.scheduler.Scheduler` that
serving uses, sends each admitted request to the child (:mod:`model_worker.engine_core`) and
gets back one message per decode step, which a reader thread hands to the event loop with
one wake-up.

Failures: an engine error fails only the rows it concerns (a 500), as in-process. If the
child dies, every unanswered request gets a 503 ``engine_unavailable``, new ones too, and
``/readyz`` and ``/healthz`` turn 503 (the kubelet restarts the container). The child is a
daemon process, is stopped on shutdown, and exits by itself when the parent's end of its
pipe closes (the parent died).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import threading
from collections.abc import Callable, Sequence
from itertools import count
from typing import Any

from model_worker.config import ConfigError, WorkerConfig
from model_worker.engine import Encoding, Engine, EngineRequest, load_tokenizer
from model_worker.engine_core import StepEvent, child_main, load_engine
from model_worker.errors import ServingError
from model_worker.metrics import WorkerMetrics
from model_worker.scheduler import Job, Prepared, queue_full, record_weight_move

log = logging.getLogger("model_worker")
#: how long a stopping engine process gets before it is killed
STOP_WAIT_S = 5.0


class EngineError(RuntimeError):
    """An engine failure in the engine process, for the rows it concerned (a 500)."""


class EngineFront(Encoding):
    """The parent's view of the model: the tokenizer, and what the engine process reported
    once loaded (name, context, device, weight bytes). Decoding happens in the child."""

    def __init__(self, tokenizer: Any, info: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        self.info = info
        self.weight_bytes = int(info["weight_bytes"])

    @property
    def model_name(self) -> str:
        return str(self.info["model_name"])

    @property
    def max_context(self) -> int:
        return int(self.info["max_context"])

    @property
    def device(self) -> str:
        return str(self.info["device"])

    def generate(self, batch: Sequence[EngineRequest]) -> None:
        raise NotImplementedError("with --engine-process the engine process decodes")


class EngineProcess:
    """A :class:`~model_worker.scheduler.JobScheduler` whose decode loop runs in a child
    process; see the module docstring. Event-loop methods only, except the reader thread."""

    def __init__(
        self,
        cfg: WorkerConfig,
        metrics: WorkerMetrics,
        factory: Callable[[WorkerConfig], Engine] | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.max_queue = cfg.max_queue
        self.max_batch = cfg.max_batch
        self.running = 0
        self.last_batch_s = 0.5
        self.pending: dict[int, Job] = {}  # sent, not yet taken from the child's queue
        self._live: dict[int, Job] = {}  # sent, not yet finished, failed or cancelled
        self._keys = count(1)
        self._failure: str | None = None
        self._closed = False
        ctx = mp.get_context("spawn")
        self._inbox_child, self._to_child = ctx.Pipe(duplex=False)
        self._from_child, self._outbox_child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=child_main,
            args=(cfg, factory or load_engine, self._inbox_child, self._outbox_child),
            name="surgecast-engine",
            daemon=True,
        )
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._weights = "device"

    # ---- start and stop -------------------------------------------------------------------
    async def start(self) -> EngineFront:
        """Spawn the engine process and load the tokenizer meanwhile; returns once the engine
        has loaded (raises ``ConfigError`` when the child's load failed on the configuration,
        ``RuntimeError`` when it failed otherwise or the child died)."""
        loop = asyncio.get_running_loop()
        self._proc.start()
        self._inbox_child.close()  # the child's ends: closed here, so EOF means it is gone
        self._outbox_child.close()
        tokenizer_f = asyncio.to_thread(load_tokenizer, self.cfg.model_path, self.cfg.revision)
        hello_f = asyncio.to_thread(self._recv_hello)
        tokenizer, info = await asyncio.gather(tokenizer_f, hello_f)
        self._reader = threading.Thread(
            target=self._read, args=(loop,), name="engine-reader", daemon=True
        )
        self._reader.start()
        log.info(
            "engine process %d serving %s on %s", info["pid"], info["model_name"], info["device"]
        )
        return EngineFront(tokenizer, info)

    def _recv_hello(self) -> dict[str, Any]:
        try:
            msg = self._from_child.recv()
        except (EOFError, OSError):
            self._proc.join(STOP_WAIT_S)
            raise RuntimeError(
                f"the engine process exited while loading (exit code {self._proc.exitcode})"
            ) from None
        if msg[0] != "hello":
            if msg[2]:  # the child's ConfigError: the operator's to fix, logged without a trace
                raise ConfigError(msg[1])
            raise RuntimeError(f"the engine process failed to load: {msg[1]}")
        info: dict[str, Any] = msg[1]
        return info

    async def run(self) -> None:
        """Held for the server's lifetime (the child decodes); stops the child when
        cancelled."""
        try:
            await asyncio.Event().wait()
        finally:
            self.close()

    def close(self) -> None:
        """Ask the child to stop, then terminate or kill it if it does not; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._proc.pid is None:  # never started
            return
        self._send(("stop",))
        self._proc.join(STOP_WAIT_S)
        if self._proc.is_alive():  # it ignores SIGTERM (see engine_core.child_main)
            log.warning("engine process did not stop in %.0fs: killing it", STOP_WAIT_S)
            self._proc.kill()
            self._proc.join()
        self._to_child.close()
        if self._reader is not None:
            self._reader.join(STOP_WAIT_S)  # it saw EOF; it owns the receiving end
        self._from_child.close()

    # ---- the interface serving uses -------------------------------------------------------
    @property
    def weights(self) -> str:
        """Where the engine process last said the weights are: ``device``, ``host`` or
        ``restoring`` (to the device)."""
        return self._weights

    @property
    def failure(self) -> str | None:
        return self._failure

    @property
    def engine_pid(self) -> int | None:
        return self._proc.pid

    def want_resident(self, resident: bool) -> None:
        """Ask the engine process for the weights on the device (``True``) or in host
        memory once idle (``offload_when_warm``; otherwise nothing moves)."""
        if self.cfg.offload_when_warm:
            self._send(("resident", resident))

    def new_job(self, prep: Prepared) -> Job:
        job = Job.of(prep)
        job.key = next(self._keys)
        return job

    @property
    def free_slots(self) -> int:
        if self.cfg.admission == "batch" and self.running:
            return 0  # batch mode: a running batch admits nobody
        return max(0, self.max_batch - self.running)

    def submit(self, job: Job, bounded: bool = True) -> None:
        """Send ``job`` to the engine process; 429 as :meth:`Scheduler.submit
        <model_worker.scheduler.Scheduler.submit>`, 503 once the engine process is gone."""
        if self._failure is not None:
            raise ServingError(503, self._failure, "service_unavailable", code="engine_unavailable")
        waiting = len(self.pending)
        if bounded and waiting - self.free_slots >= self.max_queue:
            raise queue_full(waiting, self.max_queue, self.max_batch, self.last_batch_s)
        p = job.prepared
        if not self._send(("admit", job.key, p.prompt_ids, p.params)):
            raise ServingError(
                503, "the engine process is gone", "service_unavailable", code="engine_unavailable"
            )
        self.pending[job.key] = job
        self._live[job.key] = job
        self.metrics.waiting.set(len(self.pending))

    def cancel(self, job: Job) -> None:
        if self._live.pop(job.key, None) is None:
            return  # finished, failed or already cancelled
        job.request.cancelled.set()
        if self.pending.pop(job.key, None) is not None:
            self.metrics.waiting.set(len(self.pending))
        self._send(("cancel", job.key))

    def _send(self, msg: tuple[Any, ...]) -> bool:
        try:
            with self._send_lock:
                self._to_child.send(msg)
        except (OSError, ValueError):  # the child is gone, or the pipe is closed
            return False
        return True

    # ---- messages from the engine process -------------------------------------------------
    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        """The reader thread: one ``call_soon_threadsafe`` per message (per decode step)."""
        while True:
            try:
                msg = self._from_child.recv()
            except (EOFError, OSError):
                break
            try:
                loop.call_soon_threadsafe(self._on_message, msg)
            except RuntimeError:  # the loop is closed: the server is gone
                return
        self._proc.join(STOP_WAIT_S)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            loop.call_soon_threadsafe(self._on_exit, self._proc.exitcode)

    def _on_message(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "weights":
            self._on_weights(msg)
        else:
            self._on_step(msg)

    def _on_weights(self, msg: tuple[Any, ...]) -> None:
        _, where, took, error = msg
        self._weights = where
        if error is not None:
            log.error("the engine process could not move the weights (%s); offload disabled",
                      error)
            return
        if took is not None:  # None: a restore has started
            record_weight_move(self.metrics, where == "device", took)

    def _on_step(self, msg: tuple[Any, ...]) -> None:
        _, running, batch_size, started, events = msg
        for key, t in started:
            job = self.pending.pop(key, None)
            if job is not None:
                job.started_at = t
                self.metrics.queue_time.observe(t - job.arrival)
                self.metrics.prompt_tokens.inc(len(job.prepared.prompt_ids))
        if started:
            self.metrics.waiting.set(len(self.pending))
        for event in events:
            self._event(event)
        if batch_size:
            self.metrics.batch_size.observe(batch_size)
        self.running = running
        self.metrics.running.set(running)

    def _event(self, event: StepEvent) -> None:
        key, delta, n, finish, t, error = event
        job = self._live.get(key)
        if job is None:
            return  # cancelled meanwhile
        if error is not None:
            del self._live[key]
            job.out.put_nowait(EngineError(error))
            return
        if n > job.generated:
            self.metrics.generation_tokens.inc(n - job.generated)
            job.generated = n
        if n >= 1 and job.first_token_at is None:
            job.first_token_at = t
        if finish is not None:
            del self._live[key]
            job.finished_at = t
            job.done = True
            if job.started_at is not None:
                self.last_batch_s = t - job.started_at  # the Retry-After estimate
        job.out.put_nowait((delta, n, finish))

    def _on_exit(self, exitcode: int | None) -> None:
        if self._closed:
            return
        self._failure = f"the engine process exited unexpectedly (exit code {exitcode})"
        log.error("%s; failing %d unanswered requests", self._failure, len(self._live))
        for job in self._live.values():
            job.out.put_nowait(
                ServingError(503, self._failure, "service_unavailable", code="engine_unavailable")
            )
        self._live.clear()
        self.pending.clear()
        self.running = 0
        self.metrics.running.set(0)
        self.metrics.waiting.set(0)
