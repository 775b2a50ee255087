"""OpenAI serving logic: validation, admission (drain, the scheduler's bounded queue), the
deterministic-result cache, and response building. No web framework here: functions return
plain dicts / async iterators of SSE lines, or raise :class:`ServingError`. The batch
scheduler lives in :mod:`model_worker.scheduler`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from model_worker.config import WorkerConfig
from model_worker.engine import Engine, EngineInputError, FinishReason, SamplingParams
from model_worker.errors import CLIENT_CLOSED, ServingError, bad_request
from model_worker.lifecycle import Lifecycle
from model_worker.metrics import WorkerMetrics
from model_worker.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
    Usage,
)
from model_worker.scheduler import Event, Job, JobScheduler, Prepared, Scheduler

__all__ = [
    "OpenAIServing",
    "Prepared",
    "Result",
    "ResultCache",
    "ServingError",
    "bad_request",
    "bearer_matches",
]

log = logging.getLogger("model_worker")
R = TypeVar("R", bound=BaseModel)
MAX_SEED = 2**63 - 1
#: a prompt longer than ``max_context * MAX_CHARS_PER_TOKEN`` characters cannot fit the
#: context (no tokenizer's tokens average this many characters): refused before tokenizing
MAX_CHARS_PER_TOKEN = 64
#: temperatures below this are greedy: softmax(logits / T) overflows to NaN for tiny T
GREEDY_BELOW = 1e-5
WARMUP_TIMEOUT_S = 600.0


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether the ``Authorization`` header is ``Bearer <token>``, compared in constant time
    (:func:`hmac.compare_digest` on UTF-8 bytes: a header with non-ASCII characters is a
    mismatch, not an error)."""
    if authorization is None:
        return False
    return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


def _zero(v: Any) -> bool:
    return type(v) in (int, float) and v == 0


#: request fields this worker does not implement -> whether a value is the default / neutral
#: one (accepted); any other value is a 400 rather than silently changing the semantics
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "echo": lambda v: v is None or v is False,
    "logprobs": lambda v: v is None or v is False,
    "top_logprobs": lambda v: v is None or _zero(v),
    "best_of": lambda v: v is None or (type(v) is int and v == 1),
    "suffix": lambda v: v is None or v == "",
    "tools": lambda v: v is None or v == [],
    "tool_choice": lambda v: v is None or v in ("none", "auto"),
    "response_format": lambda v: v is None or v == {"type": "text"},
    "presence_penalty": lambda v: v is None or _zero(v),
    "frequency_penalty": lambda v: v is None or _zero(v),
    "logit_bias": lambda v: v is None or v == {},
}


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


class OpenAIServing:
    """Everything behind the routes."""

    def __init__(
        self,
        cfg: WorkerConfig,
        engine: Engine,
        metrics: WorkerMetrics,
        lifecycle: Lifecycle,
        scheduler: JobScheduler | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.scheduler: JobScheduler = scheduler or Scheduler(engine, metrics, cfg)
        self.cache = ResultCache(cfg.cache_size)
        self.created = int(time.time())
        # one thread: fast tokenizers are not safe to call concurrently from several threads
        self._tokenize = ThreadPoolExecutor(1, "tokenize")
        self._jobs: dict[int, Job] = {}  # id -> admitted and not yet answered

    # ---- auth ---------------------------------------------------------------------------
    def check_api_key(self, authorization: str | None) -> None:
        """401 unless the bearer token matches ``api_key`` (when one is set)."""
        if self.cfg.api_key is None:
            return
        if not bearer_matches(authorization, self.cfg.api_key):
            raise ServingError(
                401, "invalid or missing API key", "authentication_error", code="invalid_api_key"
            )

    def check_admin(self, authorization: str | None) -> None:
        """403 when the admin API is off, 401 on a wrong token."""
        if self.cfg.admin_token is None:
            raise ServingError(403, "admin API disabled: set admin_token", "permission_error")
        if not bearer_matches(authorization, self.cfg.admin_token):
            raise ServingError(401, "invalid admin token", "authentication_error")

    # ---- parsing and validation -----------------------------------------------------------
    @staticmethod
    def parse(model: type[R], raw: bytes) -> R:
        """Body bytes -> schema; malformed JSON or wrong types are a 400 naming the field."""
        try:
            data = json.loads(raw)
        except RecursionError:
            raise bad_request("JSON body nested too deeply", code="invalid_json") from None
        except ValueError as exc:  # malformed, bad UTF-8, integers over the digit limit
            raise bad_request(f"malformed JSON body: {exc}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise bad_request("the request body must be a JSON object", code="invalid_json")
        try:
            return model.model_validate(data)
        except RecursionError:
            raise bad_request("JSON body nested too deeply", code="invalid_json") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise bad_request(f"{loc}: {err['msg']}", param=loc or None) from None

    def _max_tokens(self, req: CompletionRequest | ChatCompletionRequest) -> int:
        """Validate the model and sampling fields; returns ``max_tokens``."""
        if req.model != self.engine.model_name:
            raise bad_request(
                f"model {req.model!r} does not exist; this worker serves "
                f"{self.engine.model_name!r}",
                param="model",
                code="model_not_found",
            )
        if req.n != 1:
            raise bad_request("only n=1 is supported", param="n")
        for name, neutral in UNSUPPORTED.items():
            value = getattr(req, name)
            if not neutral(value):
                raise bad_request(
                    f"{name}={json.dumps(value)[:80]} is not supported by this worker",
                    param=name,
                )
        asked = req.max_tokens
        if req.max_completion_tokens is not None:
            if asked is not None and asked != req.max_completion_tokens:
                raise bad_request(
                    "max_tokens and max_completion_tokens differ; send one of them",
                    param="max_completion_tokens",
                )
            asked = req.max_completion_tokens
        max_tokens = self.cfg.default_max_tokens if asked is None else asked
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
        return max_tokens

    @staticmethod
    def _check_text(text: str, param: str) -> None:
        """400 for text that is not valid Unicode (lone surrogates such as ``"\\ud800"``,
        which JSON allows but no tokenizer can encode)."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise bad_request(
                f"{param} is not valid Unicode: {exc.reason} at {exc.start}", param=param
            ) from None

    def _check_length(self, chars: int, param: str) -> None:
        """400 ``context_length_exceeded`` before tokenizing when ``chars`` characters cannot
        fit the context even at :data:`MAX_CHARS_PER_TOKEN` characters per token."""
        ctx = self.engine.max_context
        if chars > ctx * MAX_CHARS_PER_TOKEN:
            raise bad_request(
                f"{param} has {chars} characters: more than the context length {ctx} can "
                f"hold at {MAX_CHARS_PER_TOKEN} characters per token",
                param=param,
                code="context_length_exceeded",
            )

    async def _encode(self, fn: Callable[[Any], list[int]], arg: Any) -> list[int]:
        """Tokenize on the tokenizer thread, so a long prompt never stalls the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenize, fn, arg)

    async def prepare(self, req: CompletionRequest | ChatCompletionRequest) -> Prepared:
        """Validate sampling fields and tokenize (off the event loop); raises 400s."""
        max_tokens = self._max_tokens(req)
        try:
            if isinstance(req, CompletionRequest):
                kind = "completion"
                prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
                if len(prompts) != 1:
                    raise bad_request("exactly one prompt per request is supported", "prompt")
                if not prompts[0].strip():
                    raise bad_request("prompt is empty", param="prompt")
                self._check_length(len(prompts[0]), "prompt")
                self._check_text(prompts[0], "prompt")
                ids = await self._encode(self.engine.encode_prompt, prompts[0])
            else:
                kind = "chat"
                msgs = [{"role": m.role, "content": m.text()} for m in req.messages]
                if not any(m["content"].strip() for m in msgs):
                    raise bad_request("messages have no content", param="messages")
                self._check_length(sum(len(m["content"]) for m in msgs), "messages")
                for m in msgs:
                    self._check_text(m["content"], "messages")
                ids = await self._encode(self.engine.encode_chat, msgs)
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
            temperature=0.0 if req.temperature < GREEDY_BELOW else float(req.temperature),
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
        failure = self.scheduler.failure
        if failure is not None:
            raise ServingError(503, failure, "service_unavailable", code="engine_unavailable")
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
        job = self.scheduler.new_job(prep)
        self.scheduler.submit(job)
        self.lifecycle.begin()
        self._jobs[id(job)] = job
        return job

    def _release(self, job: Job) -> None:
        """The request is answered (or its client left): free its row, end it."""
        self.scheduler.cancel(job)
        self._jobs.pop(id(job), None)
        self.lifecycle.end()

    def abort_all(self) -> int:
        """End of a drain: every unanswered request gets a 503 ``worker_draining`` (in-band
        for streams) and its row is cancelled; returns how many."""
        jobs = list(self._jobs.values())
        for job in jobs:
            self.scheduler.cancel(job)
            job.out.put_nowait(
                ServingError(
                    503,
                    "worker shut down before the request finished; retry",
                    "service_unavailable",
                    code="worker_draining",
                    headers={"Retry-After": "1"},
                )
            )
        return len(jobs)

    def _finish_metrics(self, job: Job, n: int) -> None:
        end = job.finished_at or time.perf_counter()
        self.metrics.e2e.observe(end - job.arrival)
        if job.first_token_at is not None:
            self.metrics.ttft.observe(job.first_token_at - job.arrival)
            if n > 1:  # the request's mean, once per request (vLLM's request TPOT, not ITL)
                self.metrics.tpot.observe((end - job.first_token_at) / (n - 1))

    async def _events(self, job: Job, timeout_s: float | None = None) -> AsyncIterator[Event]:
        timeout = self.cfg.request_timeout_s if timeout_s is None else timeout_s
        deadline = job.arrival + timeout
        while True:
            remaining = deadline - time.perf_counter()
            try:
                if remaining <= 0:
                    raise TimeoutError
                item = await asyncio.wait_for(job.out.get(), timeout=remaining)
            except TimeoutError:
                self.scheduler.cancel(job)
                raise ServingError(
                    504,
                    f"request exceeded the {timeout:g} s timeout",
                    "timeout_error",
                    code="timeout",
                ) from None
            if isinstance(item, ServingError):
                raise item
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
                self._release(job)
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

    async def stream(
        self, prep: Prepared, on_done: Callable[[int], None] = lambda status: None
    ) -> AsyncIterator[str]:
        """Admit a streaming request (errors raise here, before any byte is sent) and return
        its SSE lines; ``on_done(status)`` gets the stream's final outcome when it ends: 200,
        the status of an in-band error, or 499 when the client left first."""
        self._check_accepting()
        cached = self._cached(prep)
        if cached is not None:
            return self._stream_cached(prep, cached, on_done)
        job = self._admit(prep)
        return self._stream_job(prep, job, on_done)

    async def _stream_cached(
        self, prep: Prepared, r: Result, on_done: Callable[[int], None]
    ) -> AsyncIterator[str]:
        status = CLIENT_CLOSED
        try:
            if prep.kind == "chat":
                yield self._chunk(prep, None, None, first=True)
            yield self._chunk(prep, r.text, r.finish_reason)
            status = 200
            if prep.include_usage:
                yield self._usage_chunk(prep, r.completion_tokens)
            yield "data: [DONE]\n\n"
        finally:
            on_done(status)

    async def _stream_job(
        self, prep: Prepared, job: Job, on_done: Callable[[int], None]
    ) -> AsyncIterator[str]:
        status = CLIENT_CLOSED
        try:
            if prep.kind == "chat":
                yield self._chunk(prep, None, None, first=True)
            parts, n = [], 0
            try:
                async for delta, n, finish in self._events(job):
                    parts.append(delta)
                    if finish is not None:
                        status = 200
                        self._remember(prep, Result("".join(parts), n, finish))
                    if delta or finish:
                        yield self._chunk(prep, delta, finish)
            except ServingError as exc:  # headers are sent: report in-band, like OpenAI
                status = exc.status
                yield f"data: {exc.body.model_dump_json()}\n\n"
            if prep.include_usage:
                yield self._usage_chunk(prep, n)
            yield "data: [DONE]\n\n"
        finally:
            self._release(job)
            on_done(status)

    async def warmup(self) -> float:
        """One real generation through the scheduler before readiness; returns seconds."""
        t0 = time.perf_counter()
        ids = self.engine.encode_prompt("Hello, warm up")
        params = SamplingParams(max_tokens=self.cfg.warmup_tokens, temperature=0.0)
        prep = Prepared("completion", ids, params, False, False, "warmup", int(time.time()))
        job = self.scheduler.new_job(prep)
        self.scheduler.submit(job, bounded=False)
        # not bound by the per-request timeout: the first generation also pays one-off costs
        # (thread pools, kernels) and a slow warmup must delay readiness, not fail the load
        async for _ in self._events(
            job, timeout_s=max(self.cfg.request_timeout_s, WARMUP_TIMEOUT_S)
        ):
            pass
        return time.perf_counter() - t0
