"""The engine process's side of ``--engine-process``: load the engine, then run the
token-level decode loop (the same admission rules as :meth:`Scheduler._decode_loop
<model_worker.scheduler.Scheduler._decode_loop>`; with ``admission=batch`` a batch runs to
completion before the next is taken) on requests the parent sends over a pipe,
and send back ONE message per prefill or decode step with every event of that step.

Parent -> child messages: ``("admit", key, prompt_ids, SamplingParams)``, ``("cancel", key)``,
``("resident", bool)`` (with ``offload_when_warm``: where the weights should be once idle),
``("stop",)``. Child -> parent: ``("hello", info)`` once loaded (or ``("failed", reason)``),
``("weights", where, seconds, error)`` when the weights start to move back (``restoring``)
or have moved (``device``, ``host``; ``error`` set when a move failed: offload is off from
then on), and ``("step", running, batch_size, started, events)`` where ``batch_size`` is 0 for an
admission (prefill) and the rows decoded for a step, ``started`` lists ``(key, t)`` of the
jobs taken from the queue, and ``events`` lists ``(key, text_delta, tokens_so_far,
finish_reason, t, error)``: ``error`` is None, or the message of an engine failure that ended
this row (a 500). Times are :func:`time.perf_counter` (``CLOCK_MONOTONIC`` on Linux: the
same clock in both processes). The child exits on ``stop`` or when the parent's end of the
pipe closes (the parent died).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from model_worker.config import ConfigError, WorkerConfig
from model_worker.engine import (
    DecodeSession,
    Engine,
    EngineRequest,
    FinishReason,
    Offloadable,
    Stepwise,
    TransformersEngine,
)
from model_worker.scheduler import decode_threads

log = logging.getLogger("model_worker.engine")

StepEvent = tuple[int, str, int, "FinishReason | None", float, "str | None"]
"""``(key, text_delta, tokens_so_far, finish_reason, perf_counter_t, error_or_None)``."""


def load_engine(cfg: WorkerConfig) -> TransformersEngine:
    """The worker's engine as the configuration describes it (the default factory)."""
    return TransformersEngine.load(
        cfg.model_path, cfg.served_name, cfg.dtype, cfg.device, cfg.quantization, cfg.revision
    )


class EngineCore:
    """The child's decode loop over a :class:`Stepwise` engine; see the module docstring."""

    def __init__(
        self, engine: Stepwise, cfg: WorkerConfig, inbox: Connection, outbox: Connection
    ) -> None:
        self.engine = engine
        self.max_batch = cfg.max_batch
        self.min_admit = max(1, self.max_batch // 4)
        #: ``batch`` admission: a batch runs to completion before the next is taken
        self.token_level = cfg.admission == "token"
        self.batch_wait_s = cfg.batch_wait_ms / 1000.0
        self.inbox = inbox
        self.outbox = outbox
        self.pending: deque[tuple[int, EngineRequest]] = deque()
        self.reqs: dict[int, EngineRequest] = {}  # key -> request, queued or decoding
        self.keys: dict[int, int] = {}  # id(request) -> key
        self.events: list[StepEvent] = []
        self.started: list[tuple[int, float]] = []
        self.stopping = False
        #: the engine, when its weights may leave the device while the worker is warm
        self.movable: Offloadable | None = (
            engine if cfg.offload_when_warm and isinstance(engine, Offloadable) else None
        )
        self.want_resident = True

    # ---- messages from the parent ---------------------------------------------------------
    def _emitter(self, key: int) -> Callable[[str, int, FinishReason | None], None]:
        def emit(delta: str, n: int, finish: FinishReason | None) -> None:
            self.events.append((key, delta, n, finish, time.perf_counter(), None))

        return emit

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "admit":
            _, key, prompt_ids, params = msg
            req = EngineRequest(prompt_ids, params, self._emitter(key))
            self.reqs[key] = req
            self.keys[id(req)] = key
            self.pending.append((key, req))
        elif kind == "cancel":
            queued = self.reqs.get(msg[1])
            if queued is not None:
                queued.cancelled.set()
        elif kind == "resident":
            self.want_resident = bool(msg[1])
        elif kind == "stop":
            self.stopping = True

    def receive(self, timeout_s: float | None) -> None:
        """Handle the parent's messages: wait up to ``timeout_s`` for the first (None:
        forever, 0: not at all), then take every message already there."""
        try:
            ready = self.inbox.poll(timeout_s)
            while ready and not self.stopping:
                self._handle(self.inbox.recv())
                ready = self.inbox.poll(0)
        except (EOFError, OSError):  # the parent is gone
            self.stopping = True

    # ---- bookkeeping ----------------------------------------------------------------------
    def _forget(self, req: EngineRequest) -> int | None:
        key = self.keys.pop(id(req), None)
        if key is not None:
            self.reqs.pop(key, None)
        return key

    def _take(self, n: int) -> list[EngineRequest]:
        taken: list[EngineRequest] = []
        now = time.perf_counter()
        while self.pending and len(taken) < n:
            key, req = self.pending.popleft()
            if req.cancelled.is_set():
                self._forget(req)
                continue
            taken.append(req)
            self.started.append((key, now))
        return taken

    def _fail(self, reqs: list[EngineRequest], exc: BaseException) -> None:
        now = time.perf_counter()
        for req in reqs:
            key = self._forget(req)
            if key is not None:
                self.events.append((key, "", 0, None, now, str(exc) or type(exc).__name__))

    def _leave(self, left: list[EngineRequest]) -> None:
        for req in left:
            if req.error is not None:  # this row alone failed (a 500)
                self._fail([req], req.error)
            else:
                self._forget(req)

    def _send(self, running: int, batch_size: int) -> None:
        msg = ("step", running, batch_size, self.started, self.events)
        self.started, self.events = [], []
        self._tell(msg)

    def _move(self, to_device: bool) -> None:
        """Move the weights (blocking, between batches) and tell the parent; a failed move
        is logged and turns the offload off (the engine decodes wherever its weights are)."""
        m = self.movable
        assert m is not None
        if to_device:
            self._tell(("weights", "restoring", None, None))
        try:
            took = m.restore() if to_device else m.offload()
        except Exception as exc:
            log.exception("moving the weights %s failed; offload disabled",
                          "back" if to_device else "out")
            self.movable = None
            where = "host" if m.offloaded else "device"
            self._tell(("weights", where, None, f"{type(exc).__name__}: {exc}"))
            return
        self._tell(("weights", "device" if to_device else "host", took, None))

    def _settle_weights(self) -> None:
        """Idle: put the weights where the parent last asked."""
        m = self.movable
        if m is not None and m.offloaded == self.want_resident:
            self._move(to_device=self.want_resident)

    def _tell(self, msg: tuple[Any, ...]) -> None:
        try:
            self.outbox.send(msg)
        except OSError:  # the parent is gone
            self.stopping = True

    def _decoding(self) -> list[EngineRequest]:
        """The requests taken from the queue and not yet left."""
        queued = {id(req) for _, req in self.pending}
        return [req for req in self.reqs.values() if id(req) not in queued]

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        """Decode until ``stop`` or the parent leaves."""
        batch: DecodeSession = self.engine.new_batch()
        while not self.stopping:
            if not len(batch) and not self.pending:
                self._settle_weights()
                self.receive(None)  # idle: sleep until a message comes
                deadline = time.perf_counter() + self.batch_wait_s
                while not self.stopping and len(self.pending) < self.max_batch:
                    left_s = deadline - time.perf_counter()
                    if left_s <= 0:
                        break
                    self.receive(left_s)  # let a burst gather, as the in-process loop does
                continue
            if self.movable is not None and self.movable.offloaded:
                self._move(to_device=True)  # queued requests wait for the restore
            self.receive(0)
            try:
                batch = self._iteration(batch)
            except Exception as exc:  # a bug outside the engine calls: fail the rows
                log.exception("decode loop failed")
                self._fail(self._decoding(), exc)
                batch = self.engine.new_batch()
                self._send(0, 0)

    def _iteration(self, batch: DecodeSession) -> DecodeSession:
        room = self.max_batch - len(batch) if batch.can_admit else 0
        if not self.token_level and len(batch):
            room = 0  # batch-level admission: nobody joins a running batch
        if 0 < room < self.min_admit and len(batch) and len(self.pending) > room:
            room = 0  # a backlog: let a few slots free up and prefill them together
        reqs = self._take(room) if room > 0 else []
        if reqs:
            try:
                left = batch.admit(reqs)
            except Exception as exc:
                log.exception("engine failed admitting %d requests", len(reqs))
                self._fail(reqs, exc)
            else:
                self._leave(left)
            self._send(len(batch), 0)  # their first tokens, before the next step's forward
        if not len(batch):
            return batch
        size = len(batch)
        try:
            left = batch.step()
        except Exception as exc:
            log.exception("engine failed on a batch of %d", size)
            self._fail(self._decoding(), exc)
            batch = self.engine.new_batch()
        else:
            self._leave(left)
        self._send(len(batch), size)
        return batch


def child_main(
    cfg: WorkerConfig,
    factory: Callable[[WorkerConfig], Engine],
    inbox: Connection,
    outbox: Connection,
) -> None:
    """The engine process's entry point (spawned): load, say hello, decode until told to
    stop or the parent leaves. SIGINT and SIGTERM are ignored: a terminal's Ctrl-C or a
    runtime that signals the whole process group would otherwise kill the engine under a
    draining parent; the parent stops it (``stop``, else SIGKILL)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s engine: %(message)s"
    )
    try:
        engine = factory(cfg)
        if not isinstance(engine, Stepwise):
            raise TypeError(f"{type(engine).__name__} cannot decode step by step")
        threads = decode_threads(cfg.torch_threads, engine.device)
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
    except ConfigError as exc:  # the operator's to fix: the message says it all
        log.error("engine load failed: %s", exc)
        outbox.send(("failed", str(exc), True))
        return
    except Exception as exc:
        log.exception("engine load failed")
        outbox.send(("failed", f"{type(exc).__name__}: {exc}", False))
        return
    info = {
        "model_name": engine.model_name,
        "max_context": engine.max_context,
        "device": engine.device,
        "weight_bytes": int(getattr(engine, "weight_bytes", 0)),
        "pid": os.getpid(),
    }
    if cfg.gc_freeze:  # as the parent does after warmup: full collections skip the model
        gc.collect()
        gc.freeze()
    outbox.send(("hello", info))
    EngineCore(engine, cfg, inbox, outbox).run()
