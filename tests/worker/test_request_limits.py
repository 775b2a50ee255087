"""Requests that must not hurt the worker: oversized bodies, prompts that cannot fit the
context, tokenization that must not stall the event loop, malformed inputs that used to be
plain-text 500s. Real HTTP server, real tiny model."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_worker.engine import TransformersEngine


def _engine_as(cls: type[TransformersEngine]) -> Any:
    """An engine factory: the real engine, loaded as usual, with ``cls``'s overrides."""

    def factory(cfg: Any) -> TransformersEngine:
        e = TransformersEngine.load(cfg.model_path, cfg.served_name)
        e.__class__ = cls
        return e

    return factory


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, worker_starter: Any) -> Any:
    srv = worker_starter(tiny_model_dir, max_tokens_cap=64, max_body_bytes=256 * 1024)
    yield srv
    srv.stop()


def post(url: str, body: Any, path: str = "/v1/completions", **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    return httpx.post(url + path, content=content, headers=headers, timeout=30, **kw)


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["message"] and err["type"]
    if code is not None:
        assert err["code"] == code, err
    return err


def test_a_body_over_the_limit_is_413(server: Any) -> None:
    big = {"model": "tiny", "prompt": "x" * (300 * 1024)}
    assert_openai_error(post(server.url, big), 413, "request_too_large")

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(40):
            yield b"y" * 8192
        yield b'"}'

    r = httpx.post(server.url + "/v1/completions", content=chunks(), timeout=30)
    assert_openai_error(r, 413, "request_too_large")
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing(make_server: Any) -> None:
    seen: list[int] = []

    class Recording(TransformersEngine):
        def encode_prompt(self, text: str) -> list[int]:
            seen.append(len(text))
            return super().encode_prompt(text)

        def encode_chat(self, messages: Any) -> list[int]:
            seen.append(sum(len(m["content"]) for m in messages))
            return super().encode_chat(messages)

    srv = make_server(engine_factory=_engine_as(Recording))
    seen.clear()  # the warmup's prompt
    # 200 kB: under the body limit, far beyond 256 tokens x 64 characters per token
    r = post(srv.url, {"model": "tiny", "prompt": "fox " * 50_000})
    assert_openai_error(r, 400, "context_length_exceeded")
    msgs = [{"role": "user", "content": "fox " * 50_000}]
    r = post(srv.url, {"model": "tiny", "messages": msgs}, "/v1/chat/completions")
    assert_openai_error(r, 400, "context_length_exceeded")
    assert seen == []  # never tokenized
    # within the bound: tokenized, then refused on the token count
    r = post(srv.url, {"model": "tiny", "prompt": "fox " * 400})
    assert_openai_error(r, 400, "context_length_exceeded")
    assert seen == [1600]


def test_tokenization_runs_off_the_event_loop(make_server: Any) -> None:
    entered, release = threading.Event(), threading.Event()

    class GatedTokenizer(TransformersEngine):
        def encode_prompt(self, text: str) -> list[int]:
            if text == "hold me":
                entered.set()
                release.wait(20)
            return super().encode_prompt(text)

    srv = make_server(engine_factory=_engine_as(GatedTokenizer))
    got: list[int] = []
    t = threading.Thread(
        target=lambda: got.append(
            post(srv.url, {"model": "tiny", "prompt": "hold me", "max_tokens": 2}).status_code
        )
    )
    t.start()
    try:
        assert entered.wait(20)
        # the tokenizer is busy with the first request: the loop still answers
        assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
        assert httpx.get(srv.url + "/readyz", timeout=5).status_code == 200
    finally:
        release.set()
        t.join(30)
    assert got == [200]


def test_a_tiny_temperature_is_greedy(server: Any) -> None:
    body = {"model": "tiny", "prompt": "The quick", "max_tokens": 8}
    greedy = post(server.url, {**body, "temperature": 0})
    tiny = post(server.url, {**body, "temperature": 1e-40})
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


MALFORMED = [
    (
        "deep nesting",
        b'{"model": "tiny", "prompt": "hi", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ),
    ("huge integer", b'{"model": "tiny", "prompt": "hi", "max_tokens": ' + b"9" * 5000 + b"}"),
    ("lone surrogate prompt", b'{"model": "tiny", "prompt": "hi \\ud800 there"}'),
]


@pytest.mark.parametrize(("case", "raw"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_400_not_500(server: Any, case: str, raw: bytes) -> None:
    assert_openai_error(post(server.url, raw), 400)


def test_lone_surrogate_in_chat_content_is_400(server: Any) -> None:
    raw = b'{"model": "tiny", "messages": [{"role": "user", "content": "\\udfff"}]}'
    assert_openai_error(post(server.url, raw, "/v1/chat/completions"), 400)
    # a valid escaped surrogate pair (an emoji, as Python's json.dumps writes it) is fine
    ok = post(server.url, {"model": "tiny", "prompt": "fox \U0001f98a", "max_tokens": 2})
    assert ok.status_code == 200, ok.text


def test_unknown_route_and_wrong_method_get_openai_error_bodies(server: Any) -> None:
    assert_openai_error(httpx.get(server.url + "/v1/nope"), 404, "not_found")
    assert_openai_error(httpx.get(server.url + "/v1/completions"), 405, "method_not_allowed")


def test_an_unexpected_error_is_a_500_with_an_openai_body(make_server: Any) -> None:
    class Broken(TransformersEngine):
        def encode_prompt(self, text: str) -> list[int]:
            if text == "boom":
                raise KeyError("a bug")
            return super().encode_prompt(text)

    srv = make_server(engine_factory=_engine_as(Broken))
    err = assert_openai_error(post(srv.url, {"model": "tiny", "prompt": "boom"}), 500)
    assert err["type"] == "server_error"
    assert post(srv.url, {"model": "tiny", "prompt": "fine", "max_tokens": 2}).status_code == 200


def test_null_optional_fields_mean_the_default(server: Any) -> None:
    nulls = dict.fromkeys(
        (
            "max_tokens",
            "temperature",
            "top_p",
            "n",
            "stream",
            "stop",
            "seed",
            "stream_options",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "user",
        ),
    )
    r = post(server.url, {"model": "tiny", "prompt": "Hello", **nulls})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 16  # default_max_tokens
    r = post(
        server.url,
        {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], **nulls},
        "/v1/chat/completions",
    )
    assert r.status_code == 200, r.text
    assert_openai_error(post(server.url, {"model": "tiny", "prompt": None}), 400)


def test_max_completion_tokens_is_honoured_with_the_openai_client(server: Any) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    msgs: Any = [{"role": "user", "content": "The quick brown fox"}]
    r = client.chat.completions.create(
        model="tiny", messages=msgs, max_completion_tokens=40, temperature=0
    )
    assert r.usage is not None and r.usage.completion_tokens > 16  # not the default
    assert r.usage.completion_tokens <= 40
    body = {"model": "tiny", "messages": msgs, "temperature": 0}
    same = post(server.url, {**body, "max_tokens": 40, "max_completion_tokens": 40}, CHAT)
    assert same.json()["usage"]["completion_tokens"] == r.usage.completion_tokens
    err = assert_openai_error(
        post(server.url, {**body, "max_tokens": 5, "max_completion_tokens": 40}, CHAT), 400
    )
    assert err["param"] == "max_completion_tokens"
    over = post(server.url, {**body, "max_completion_tokens": 65}, CHAT)  # cap 64
    assert_openai_error(over, 400)


CHAT = "/v1/chat/completions"


UNSUPPORTED = [
    ("echo", True),
    ("logprobs", 2),
    ("logprobs", True),
    ("top_logprobs", 3),
    ("best_of", 2),
    ("suffix", " end"),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "required"),
    ("response_format", {"type": "json_object"}),
    ("presence_penalty", 0.5),
    ("frequency_penalty", -1),
    ("logit_bias", {"50": 100}),
]
NEUTRAL = {
    "echo": False,
    "logprobs": None,
    "top_logprobs": 0,
    "best_of": 1,
    "suffix": "",
    "tools": [],
    "tool_choice": "none",
    "response_format": {"type": "text"},
    "presence_penalty": 0,
    "frequency_penalty": 0.0,
    "logit_bias": {},
}


@pytest.mark.parametrize(("field", "value"), UNSUPPORTED, ids=[f"{f}={v}" for f, v in UNSUPPORTED])
def test_unsupported_parameters_are_400_not_ignored(server: Any, field: str, value: Any) -> None:
    r = post(server.url, {"model": "tiny", "prompt": "Hello", "max_tokens": 2, field: value})
    err = assert_openai_error(r, 400)
    assert err["param"] == field and "not supported by this worker" in err["message"]


def test_neutral_values_of_unsupported_parameters_are_accepted(server: Any) -> None:
    r = post(server.url, {"model": "tiny", "prompt": "Hello", "max_tokens": 2, **NEUTRAL})
    assert r.status_code == 200, r.text
    msgs = [{"role": "user", "content": "Hi"}]
    r = post(server.url, {"model": "tiny", "messages": msgs, "max_tokens": 2, **NEUTRAL}, CHAT)
    assert r.status_code == 200, r.text
