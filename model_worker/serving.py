"""OpenAI serving logic: validation, admission (bounded queue, drain), the batch scheduler,
the deterministic-result cache, and response building. No web framework here: functions
return plain dicts / async iterators of SSE lines, or raise :class:`ServingError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from model_worker.config import WorkerConfig
from model_worker.engine import (
    Engine,
    EngineInputError,
    EngineRequest,
    FinishReason,
    SamplingParams,
)
from model_worker.lifecycle import Lifecycle
from model_worker.metrics import WorkerMetrics
from model_worker.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorBody,
    ErrorDetail,
    ModelCard,
    ModelList,
    Usage,
)

log = logging.getLogger("model_worker")
R = TypeVar("R", bound=BaseModel)
MAX_SEED = 2**63 - 1


class ServingError(Exception):
    """A request that gets an OpenAI-style error body instead of a result."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(
            error=ErrorDetail(message=message, type=type_, param=param, code=code)
        )
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ServingError:
    """A 400 for a client mistake."""
    return ServingError(400, message, param=param, code=code)


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


@dataclass(frozen=True)
class Result:
    """A finished generation."""

    text: str
    completion_tokens: int
    finish_reason: FinishReason


class ResultCache:
    """A bounded LRU of deterministic results (event-loop only)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[Any, ...], Result] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> Result | None:
        hit = self._data.get(key)
        if hit is not None:
            self._data.move_to_end(key)
        return hit

    def put(self, key: tuple[Any, ...], value: Result) -> None:
        if self.size <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


Event = tuple[str, int, "FinishReason | None"]


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


class Scheduler:
    """Groups queued requests into batches of at most ``max_batch`` and runs the engine in a
    thread; a batch runs to completion while the next one gathers (batch-level admission)."""

    def __init__(self, engine: Engine, metrics: WorkerMetrics, cfg: WorkerConfig) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_queue = cfg.max_queue
        self.max_batch = cfg.max_batch
        self.batch_wait_s = cfg.batch_wait_ms / 1000.0
        self.pending: deque[Job] = deque()
        self.running = 0
        self._wake = asyncio.Event()
        self.last_batch_s = 0.5
        self._lock = threading.Lock()
        self._buffer: list[tuple[Job, Event]] = []
        self._flush_scheduled = False

    def submit(self, job: Job) -> None:
        """Queue ``job`` or raise 429 when the queue is full."""
        if len(self.pending) >= self.max_queue:
            retry = max(1, math.ceil(self.last_batch_s * (1 + len(self.pending) / self.max_batch)))
            raise ServingError(
                429,
                f"server busy: {len(self.pending)} requests waiting (max_queue={self.max_queue})",
                type_="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(retry)},
            )
        self.pending.append(job)
        self.metrics.waiting.set(len(self.pending))
        self._wake.set()

    def _emitter(self, job: Job, loop: asyncio.AbstractEventLoop) -> Callable[..., None]:
        """The engine-thread callback of ``job``. Events of all rows are buffered and handed
        to the event loop with one wake-up per decode step, not one per row: on a busy CPU
        each cross-thread hand-off costs a GIL switch."""

        def emit(delta: str, n: int, finish: FinishReason | None) -> None:
            now = time.perf_counter()
            if n >= 1 and job.first_token_at is None:
                job.first_token_at = now
            if finish is not None:
                job.finished_at = now
            with self._lock:
                self._buffer.append((job, (delta, n, finish)))
                if self._flush_scheduled:
                    return
                self._flush_scheduled = True
            loop.call_soon_threadsafe(self._flush)

        return emit

    def _flush(self) -> None:
        with self._lock:
            items, self._buffer = self._buffer, []
            self._flush_scheduled = False
        for job, event in items:
            job.out.put_nowait(event)

    async def run(self) -> None:
        """The scheduling loop (a task for the server's lifetime)."""
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            if self.batch_wait_s > 0 and len(self.pending) < self.max_batch:
                await asyncio.sleep(self.batch_wait_s)
            batch: list[Job] = []
            while self.pending and len(batch) < self.max_batch:
                job = self.pending.popleft()
                if not job.request.cancelled.is_set():
                    batch.append(job)
            self.metrics.waiting.set(len(self.pending))
            if not batch:
                continue
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        for job in batch:
            job.started_at = start
            self.metrics.queue_time.observe(start - job.arrival)
            self.metrics.prompt_tokens.inc(len(job.prepared.prompt_ids))
        self.metrics.batch_size.observe(len(batch))
        self.running = len(batch)
        self.metrics.running.set(self.running)
        try:
            await asyncio.to_thread(self.engine.generate, [j.request for j in batch])
        except Exception as exc:  # engine failure: every request of the batch gets a 500
            log.exception("engine failed on a batch of %d", len(batch))
            for job in batch:
                job.out.put_nowait(exc)
        finally:
            self.running = 0
            self.metrics.running.set(0)
            self.last_batch_s = time.perf_counter() - start


class OpenAIServing:
    """Everything behind the routes."""

    def __init__(
        self, cfg: WorkerConfig, engine: Engine, metrics: WorkerMetrics, lifecycle: Lifecycle
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.scheduler = Scheduler(engine, metrics, cfg)
        self.cache = ResultCache(cfg.cache_size)
        self.created = int(time.time())

    # ---- auth ---------------------------------------------------------------------------
    def check_api_key(self, authorization: str | None) -> None:
        """401 unless the bearer token matches ``api_key`` (when one is set)."""
        if self.cfg.api_key is None:
            return
        if authorization != f"Bearer {self.cfg.api_key}":
            raise ServingError(
                401, "invalid or missing API key", "authentication_error", code="invalid_api_key"
            )

    def check_admin(self, authorization: str | None) -> None:
        """403 when the admin API is off, 401 on a wrong token."""
        if self.cfg.admin_token is None:
            raise ServingError(403, "admin API disabled: set admin_token", "permission_error")
        if authorization != f"Bearer {self.cfg.admin_token}":
            raise ServingError(401, "invalid admin token", "authentication_error")

    # ---- parsing and validation -----------------------------------------------------------
    @staticmethod
    def parse(model: type[R], raw: bytes) -> R:
        """Body bytes -> schema; malformed JSON or wrong types are a 400 naming the field."""
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad_request(f"malformed JSON body: {exc}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise bad_request("the request body must be a JSON object", code="invalid_json")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise bad_request(f"{loc}: {err['msg']}", param=loc or None) from None

    def prepare(self, req: CompletionRequest | ChatCompletionRequest) -> Prepared:
        """Validate sampling fields and tokenize; raises 400s."""
        if req.model != self.engine.model_name:
            raise bad_request(
                f"model {req.model!r} does not exist; this worker serves "
                f"{self.engine.model_name!r}",
                param="model",
                code="model_not_found",
            )
        if req.n != 1:
            raise bad_request("only n=1 is supported", param="n")
        max_tokens = self.cfg.default_max_tokens if req.max_tokens is None else req.max_tokens
        if not 1 <= max_tokens <= self.cfg.max_tokens_cap:
            raise bad_request(
                f"max_tokens must be in [1, {self.cfg.max_tokens_cap}], got {max_tokens}",
                param="max_tokens",
            )
        if not 0.0 <= req.temperature <= 2.0:
            raise bad_request("temperature must be in [0, 2]", param="temperature")
        if not 0.0 < req.top_p <= 1.0:
            raise bad_request("top_p must be in (0, 1]", param="top_p")
        if req.seed is not None and not 0 <= req.seed <= MAX_SEED:
            raise bad_request(f"seed must be in [0, {MAX_SEED}]", param="seed")
        try:
            if isinstance(req, CompletionRequest):
                kind = "completion"
                prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
                if len(prompts) != 1:
                    raise bad_request("exactly one prompt per request is supported", "prompt")
                if not prompts[0].strip():
                    raise bad_request("prompt is empty", param="prompt")
                ids = self.engine.encode_prompt(prompts[0])
            else:
                kind = "chat"
                msgs = [{"role": m.role, "content": m.text()} for m in req.messages]
                if not any(m["content"].strip() for m in msgs):
                    raise bad_request("messages have no content", param="messages")
                ids = self.engine.encode_chat(msgs)
        except EngineInputError as exc:
            raise bad_request(str(exc)) from None
        ctx = self.engine.max_context
        if len(ids) + max_tokens > ctx:
            raise bad_request(
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds "
                f"the context length {ctx}",
                param="prompt",
                code="context_length_exceeded",
            )
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=float(req.temperature),
            top_p=float(req.top_p),
            seed=req.seed,
            stop=req.stop_list(),
        )
        prefix = "cmpl" if kind == "completion" else "chatcmpl"
        return Prepared(
            kind,
            ids,
            params,
            req.stream,
            req.include_usage(),
            f"{prefix}-{uuid.uuid4().hex}",
            int(time.time()),
        )

    # ---- models ---------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        """``GET /v1/models``."""
        card = ModelCard(
            id=self.engine.model_name, created=self.created, max_model_len=self.engine.max_context
        )
        return ModelList(data=[card]).model_dump()

    # ---- generation ---------------------------------------------------------------------
    def _check_accepting(self) -> None:
        if not self.lifecycle.accepting:
            state = self.lifecycle.state.value
            raise ServingError(
                503,
                f"worker is {state}, not accepting requests",
                "service_unavailable",
                code=f"worker_{state}",
                headers={"Retry-After": "1"},
            )

    def _admit(self, prep: Prepared) -> Job:
        self._check_accepting()
        job = Job(
            prep,
            asyncio.Queue(),
            time.perf_counter(),
            EngineRequest(prep.prompt_ids, prep.params, lambda *_: None),
        )
        job.request.emit = self.scheduler._emitter(job, asyncio.get_running_loop())
        self.scheduler.submit(job)
        self.lifecycle.begin()
        return job

    def _finish_metrics(self, job: Job, n: int) -> None:
        end = job.finished_at or time.perf_counter()
        self.metrics.e2e.observe(end - job.arrival)
        self.metrics.generation_tokens.inc(n)
        if job.first_token_at is not None:
            self.metrics.ttft.observe(job.first_token_at - job.arrival)
            if n > 1:
                self.metrics.tpot.observe((end - job.first_token_at) / (n - 1))

    async def _events(self, job: Job) -> AsyncIterator[Event]:
        deadline = job.arrival + self.cfg.request_timeout_s
        while True:
            remaining = deadline - time.perf_counter()
            try:
                if remaining <= 0:
                    raise TimeoutError
                item = await asyncio.wait_for(job.out.get(), timeout=remaining)
            except TimeoutError:
                job.request.cancelled.set()
                raise ServingError(
                    504,
                    f"request exceeded the {self.cfg.request_timeout_s:g} s timeout",
                    "timeout_error",
                    code="timeout",
                ) from None
            if isinstance(item, BaseException):
                raise ServingError(500, f"engine error: {item}", "server_error")
            yield item
            if item[2] is not None:
                self._finish_metrics(job, item[1])
                return

    def _cached(self, prep: Prepared) -> Result | None:
        key = prep.cache_key()
        if key is None or self.cache.size <= 0:
            return None
        hit = self.cache.get(key)
        (self.metrics.cache_hits if hit else self.metrics.cache_misses).inc()
        return hit

    def _remember(self, prep: Prepared, result: Result) -> None:
        key = prep.cache_key()
        if key is not None:
            self.cache.put(key, result)

    async def generate(self, prep: Prepared) -> dict[str, Any]:
        """A non-streaming request -> the response body."""
        self._check_accepting()  # a draining worker answers 503 even for cached results
        result = self._cached(prep)
        if result is None:
            job = self._admit(prep)
            try:
                parts: list[str] = []
                last: Event = ("", 0, None)
                async for last in self._events(job):
                    parts.append(last[0])
                finish = last[2] or "length"
                result = Result("".join(parts), last[1], finish)
                self._remember(prep, result)
            finally:
                job.request.cancelled.set()
                self.lifecycle.end()
        return self._body(prep, result)

    def _usage(self, prep: Prepared, n: int) -> Usage:
        p = len(prep.prompt_ids)
        return Usage(prompt_tokens=p, completion_tokens=n, total_tokens=p + n)

    def _body(self, prep: Prepared, r: Result) -> dict[str, Any]:
        head = {"id": prep.request_id, "created": prep.created, "model": self.engine.model_name}
        usage = self._usage(prep, r.completion_tokens).model_dump()
        if prep.kind == "completion":
            choice = {
                "index": 0,
                "text": r.text,
                "logprobs": None,
                "finish_reason": r.finish_reason,
            }
            return {**head, "object": "text_completion", "choices": [choice], "usage": usage}
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": r.text},
            "finish_reason": r.finish_reason,
        }
        return {**head, "object": "chat.completion", "choices": [choice], "usage": usage}

    def _chunk(
        self, prep: Prepared, delta: str | None, finish: FinishReason | None, first: bool = False
    ) -> str:
        head = {"id": prep.request_id, "created": prep.created, "model": self.engine.model_name}
        if prep.kind == "completion":
            body = {
                **head,
                "object": "text_completion",
                "choices": [
                    {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
                ],
            }
        else:
            d: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if delta:
                d["content"] = delta
            body = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
            }
        return f"data: {json.dumps(body)}\n\n"

    def _usage_chunk(self, prep: Prepared, n: int) -> str:
        obj = "text_completion" if prep.kind == "completion" else "chat.completion.chunk"
        body = {
            "id": prep.request_id,
            "object": obj,
            "created": prep.created,
            "model": self.engine.model_name,
            "choices": [],
            "usage": self._usage(prep, n).model_dump(),
        }
        return f"data: {json.dumps(body)}\n\n"

    async def stream(self, prep: Prepared) -> AsyncIterator[str]:
        """Admit a streaming request (errors raise here, before any byte is sent) and return
        its SSE lines."""
        self._check_accepting()
        cached = self._cached(prep)
        if cached is not None:
            return self._stream_cached(prep, cached)
        job = self._admit(prep)
        return self._stream_job(prep, job)

    async def _stream_cached(self, prep: Prepared, r: Result) -> AsyncIterator[str]:
        if prep.kind == "chat":
            yield self._chunk(prep, None, None, first=True)
        yield self._chunk(prep, r.text, r.finish_reason)
        if prep.include_usage:
            yield self._usage_chunk(prep, r.completion_tokens)
        yield "data: [DONE]\n\n"

    async def _stream_job(self, prep: Prepared, job: Job) -> AsyncIterator[str]:
        try:
            if prep.kind == "chat":
                yield self._chunk(prep, None, None, first=True)
            parts, n = [], 0
            try:
                async for delta, n, finish in self._events(job):
                    parts.append(delta)
                    if delta or finish:
                        yield self._chunk(prep, delta, finish)
                    if finish is not None:
                        self._remember(prep, Result("".join(parts), n, finish))
            except ServingError as exc:  # headers are sent: report in-band, like OpenAI
                yield f"data: {exc.body.model_dump_json()}\n\n"
            if prep.include_usage:
                yield self._usage_chunk(prep, n)
            yield "data: [DONE]\n\n"
        finally:
            job.request.cancelled.set()
            self.lifecycle.end()

    async def warmup(self) -> float:
        """One real generation through the scheduler before readiness; returns seconds."""
        t0 = time.perf_counter()
        ids = self.engine.encode_prompt("Hello, warm up")
        params = SamplingParams(max_tokens=self.cfg.warmup_tokens, temperature=0.0)
        prep = Prepared("completion", ids, params, False, False, "warmup", int(time.time()))
        job = Job(
            prep, asyncio.Queue(), time.perf_counter(), EngineRequest(ids, params, lambda *_: None)
        )
        job.request.emit = self.scheduler._emitter(job, asyncio.get_running_loop())
        self.scheduler.pending.append(job)
        self.scheduler._wake.set()
        async for _ in self._events(job):
            pass
        return time.perf_counter() - t0
