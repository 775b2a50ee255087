"""The thin HTTP edge: FastAPI routes over :class:`OpenAIServing`, and the uvicorn server
with a SIGTERM drain. Run with ``python -m model_worker --model-path DIR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_worker.config import ConfigError, WorkerConfig, load_config
from model_worker.engine import Engine
from model_worker.engine_core import load_engine
from model_worker.engine_process import EngineProcess
from model_worker.errors import CLIENT_CLOSED
from model_worker.lifecycle import Lifecycle
from model_worker.metrics import CONTENT_TYPE, MetricsServer, WorkerMetrics
from model_worker.protocol import ChatCompletionRequest, CompletionRequest
from model_worker.scheduler import JobScheduler
from model_worker.serving import OpenAIServing, ServingError

log = logging.getLogger("model_worker")
#: seconds before the end of the grace period at which unfinished requests get a 503 (at most
#: a quarter of the grace period), so that they are answered before the process exits
ABORT_MARGIN_S = 2.0
#: how often a non-streaming request checks whether its client is still there
DISCONNECT_POLL_S = 0.25


@dataclass
class WorkerRuntime:
    """What the app holds once started (``app.state.worker``)."""

    cfg: WorkerConfig
    metrics: WorkerMetrics
    lifecycle: Lifecycle
    serving: OpenAIServing | None = None
    started_at: float = 0.0
    ready_after_s: float | None = None
    load_error: str | None = None
    metrics_server: MetricsServer | None = None
    engine_process: EngineProcess | None = None

    @property
    def engine_failure(self) -> str | None:
        """Why the engine can no longer decode (its process died), else None."""
        return self.serving.scheduler.failure if self.serving is not None else None


def _error(exc: ServingError) -> JSONResponse:
    return JSONResponse(exc.body.model_dump(), status_code=exc.status, headers=exc.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 as soon as it is known to exceed ``limit`` bytes (from
    ``Content-Length``, else while it streams in): a huge body is never held in memory."""
    too_large = ServingError(
        413,
        f"request body exceeds the {limit} byte limit",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def unless_disconnected(
    request: Request, work: Coroutine[Any, Any, dict[str, Any]]
) -> dict[str, Any] | None:
    """Await ``work`` while polling for the client's disconnect every
    :data:`DISCONNECT_POLL_S`; when the client leaves first, cancel ``work`` (its row leaves
    the batch) and return None."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                return None
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive now (torch, transformers, the model's
    modules, FastAPI) to the collector's permanent generation (:func:`gc.freeze`), so the
    full collections that allocation under load triggers no longer walk them: they stopped
    the whole process (decode thread, event loop, ``/metrics``) for 0.24-0.44 s each on the
    tiny model. Returns the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def create_app(
    cfg: WorkerConfig, engine_factory: Callable[[WorkerConfig], Engine] | None = None
) -> FastAPI:
    """The worker app; the model loads in the background so ``/healthz`` answers at once."""

    factory = engine_factory or load_engine
    metrics = WorkerMetrics(cfg.served_name)
    rt = WorkerRuntime(cfg, metrics, Lifecycle(cfg.start_role, metrics.set_state))
    rt.started_at = time.perf_counter()
    tasks: list[asyncio.Task[Any]] = []

    async def start() -> None:
        try:
            t0 = time.perf_counter()
            engine: Engine
            scheduler: JobScheduler | None = None
            if cfg.engine_process:  # the factory must pickle: a module-level function
                proc = EngineProcess(cfg, metrics, factory)
                scheduler = proc
                rt.engine_process = proc
                engine = await proc.start()
            else:
                engine = await asyncio.to_thread(factory, cfg)
            metrics.load_seconds.set(time.perf_counter() - t0)
            metrics.weight_bytes.set(float(getattr(engine, "weight_bytes", 0)))
            rt.serving = OpenAIServing(cfg, engine, metrics, rt.lifecycle, scheduler)
            tasks.append(asyncio.create_task(rt.serving.scheduler.run()))
            warm_s = await rt.serving.warmup()
            log.info(
                "model %s loaded in %.2fs, warmed up in %.2fs on %s",
                engine.model_name,
                time.perf_counter() - t0 - warm_s,
                warm_s,
                engine.device,
            )
            if cfg.offload_when_warm:
                sched = rt.serving.scheduler
                rt.lifecycle.on_role(lambda role: sched.want_resident(role == "active"))
            if cfg.role_file is not None:
                from model_worker.lifecycle import read_role_file

                role = read_role_file(cfg.role_file)
                if role in ("warm", "active"):
                    rt.lifecycle.set_role(role)
                watch = rt.lifecycle.watch_role_file(cfg.role_file, applied=role)
                tasks.append(asyncio.create_task(watch))
            if cfg.gc_freeze:
                freeze_startup_objects()
            rt.lifecycle.mark_warmed_up()
            rt.ready_after_s = time.perf_counter() - rt.started_at
        except ConfigError as exc:  # a wrong path, id, cache or network: no traceback
            log.error("model load failed: %s", exc)
            rt.load_error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # surfaced on /readyz and /status; liveness stays up
            log.exception("model load failed")
            rt.load_error = f"{type(exc).__name__}: {exc}"

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # the decode thread runs Python between torch ops; a short switch interval bounds how
        # long the event loop and the metrics thread wait for the GIL (process-wide setting)
        sys.setswitchinterval(cfg.switch_interval_ms / 1000.0)
        if cfg.metrics_port is not None:
            rt.metrics_server = MetricsServer(metrics, cfg.host, cfg.metrics_port)
            log.info("metrics also on port %d", rt.metrics_server.port)
        tasks.append(asyncio.create_task(start()))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            if rt.serving is not None:
                rt.serving.scheduler.close()
            elif rt.engine_process is not None:  # still loading
                rt.engine_process.close()
            if rt.metrics_server is not None:
                rt.metrics_server.close()

    app = FastAPI(title="surgecast model worker", lifespan=lifespan)
    app.state.worker = rt

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # unknown route (404), wrong method (405), ...: OpenAI's error body, not FastAPI's
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        err = ServingError(exc.status_code, str(exc.detail), code=code)
        err.headers.update(exc.headers or {})
        return _error(err)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return _error(ServingError(500, "internal server error", "server_error"))

    def serving() -> OpenAIServing:
        if rt.serving is None:
            raise ServingError(
                503,
                "model is loading",
                "service_unavailable",
                code="worker_loading",
                headers={"Retry-After": "1"},
            )
        return rt.serving

    async def generate(request: Request, kind: str) -> Response:
        endpoint = request.url.path
        try:
            s = serving()
            s.check_api_key(request.headers.get("authorization"))
            raw = await read_body(request, cfg.max_body_bytes)
            parsed: CompletionRequest | ChatCompletionRequest = (
                s.parse(CompletionRequest, raw)
                if kind == "completion"
                else s.parse(ChatCompletionRequest, raw)
            )
            prep = await s.prepare(parsed)
            if prep.stream:
                # counted by its final outcome, once it ends (an in-band 504/503/500 too)
                lines = await s.stream(prep, lambda st: metrics.count_request(endpoint, st))
                return StreamingResponse(lines, media_type="text/event-stream")
            body = await unless_disconnected(request, s.generate(prep))
            if body is None:  # the client left: its row was cancelled, nobody to answer
                metrics.count_request(endpoint, CLIENT_CLOSED)
                return Response(status_code=CLIENT_CLOSED)
        except ServingError as exc:
            metrics.count_request(endpoint, exc.status)
            return _error(exc)
        except Exception:  # answered by the app's 500 handler; counted here
            metrics.count_request(endpoint, 500)
            raise
        metrics.count_request(endpoint, 200)
        return JSONResponse(body)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, "chat")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            s = serving()
            s.check_api_key(request.headers.get("authorization"))
        except ServingError as exc:
            return _error(exc)
        return JSONResponse(s.models())

    @app.get("/healthz")
    async def healthz() -> Response:
        failure = rt.engine_failure  # the engine process died: restart the container
        if failure is not None:
            return JSONResponse({"status": "engine_dead", "error": failure}, status_code=503)
        return JSONResponse({"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> Response:
        failure = rt.engine_failure
        ready = rt.lifecycle.ready and failure is None
        error = failure or rt.load_error
        body = {"ready": ready, "state": rt.lifecycle.state.value, "error": error}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/status")
    async def status() -> Response:
        s = rt.serving
        return JSONResponse(
            {
                "model": cfg.served_name,
                "state": rt.lifecycle.state.value,
                "role": rt.lifecycle.role.value,
                "ready": rt.lifecycle.ready,
                "device": s.engine.device if s else None,
                "quantization": cfg.quantization,
                "weights": s.scheduler.weights if s else None,
                "engine_pid": s.scheduler.engine_pid if s else None,
                "weight_bytes": getattr(s.engine, "weight_bytes", None) if s else None,
                "in_flight": rt.lifecycle.in_flight,
                "waiting": len(s.scheduler.pending) if s else 0,
                "running": s.scheduler.running if s else 0,
                "cache_entries": len(s.cache) if s else 0,
                "ready_after_s": rt.ready_after_s,
                "metrics_port": rt.metrics_server.port if rt.metrics_server else None,
                "error": rt.engine_failure or rt.load_error,
            }
        )

    @app.get("/metrics")
    async def prom() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def admin_role(request: Request, role: str) -> Response:
        try:
            if rt.serving is None:
                serving()
            assert rt.serving is not None
            rt.serving.check_admin(request.headers.get("authorization"))
            if rt.lifecycle.state.value == "draining":
                raise ServingError(409, "worker is draining", "conflict_error")
        except ServingError as exc:
            return _error(exc)
        changed = rt.lifecycle.set_role(role)
        return JSONResponse({"role": role, "changed": changed, "state": rt.lifecycle.state.value})

    @app.post("/admin/promote")
    async def promote(request: Request) -> Response:
        return await admin_role(request, "active")

    @app.post("/admin/demote")
    async def demote(request: Request) -> Response:
        return await admin_role(request, "warm")

    return app


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM first drains: readiness false and new requests 503 at once, the
    listener stays open so late-routed requests get a clean 503, and the process exits when
    accepted work is done. The whole drain, uvicorn's own shutdown included, fits in one
    budget, ``grace_period_s``: :data:`ABORT_MARGIN_S` before its end the requests still
    unanswered get a clean 503 (an in-band error event then ``[DONE]`` for streams)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_period_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace_period_s = grace_period_s
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self._draining and self._loop is not None:
            self._draining = True
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))
            return
        super().handle_exit(sig, frame)

    async def _drain(self) -> None:
        rt: WorkerRuntime = self.app.state.worker
        budget = self.grace_period_s
        deadline = time.monotonic() + budget
        margin = min(ABORT_MARGIN_S, budget / 4)
        log.info(
            "SIGTERM: draining %d in-flight requests (grace %.1fs)", rt.lifecycle.in_flight, budget
        )
        ok = await rt.lifecycle.drain(budget - margin)
        if not ok and rt.serving is not None:
            n = rt.serving.abort_all()
            log.warning("grace period ending: %d unfinished requests answered 503", n)
            ok = await rt.lifecycle.wait_idle(deadline - time.monotonic())
        log.info("drain %s; exiting", "complete" if ok else "timed out")
        # uvicorn's own wait for open connections gets what is left of the budget, not a
        # second grace period
        remaining = deadline - time.monotonic()
        self.config.timeout_graceful_shutdown = max(1, math.ceil(remaining))
        self.should_exit = True


def serve(
    cfg: WorkerConfig, engine_factory: Callable[[WorkerConfig], Engine] | None = None
) -> None:
    """Run the worker with the SIGTERM drain until it exits."""
    app = create_app(cfg, engine_factory)
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        timeout_graceful_shutdown=max(1, math.ceil(cfg.grace_period_s)),
    )
    DrainingServer(config, app, cfg.grace_period_s).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model_worker``."""
    try:
        cfg = load_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    serve(cfg)
    return 0
