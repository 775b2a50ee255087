"""The worker over real HTTP: the official openai client, error cases with httpx, metrics,
lifecycle. One server per test module where possible (the tiny model loads in ~0.2 s)."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from model_worker.config import ConfigError, WorkerConfig, load_config
from model_worker.engine import TransformersEngine
from model_worker.metrics import EQUIVALENTS

API_KEY = "sk-test"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, worker_starter: Any) -> Any:
    srv = worker_starter(tiny_model_dir, api_key=API_KEY, max_tokens_cap=64, admin_token="adm")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample in /metrics (0 when absent)."""
    text = httpx.get(url + "/metrics").text
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_completion_with_openai_client(client: openai.OpenAI) -> None:
    r = client.completions.create(model="tiny", prompt="Hello world", max_tokens=5, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens > 0
    assert 1 <= r.usage.completion_tokens <= 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_with_openai_client_uses_the_chat_template(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=4, seed=7
    )
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    # the template wraps the turn in markers: far more prompt tokens than the bare word
    assert r.usage is not None and r.usage.prompt_tokens > 5


def test_streaming_chat_matches_non_streaming(client: openai.OpenAI) -> None:
    kw: dict[str, Any] = dict(
        model="tiny", messages=[{"role": "user", "content": "fox"}], max_tokens=8, temperature=0
    )
    full = client.chat.completions.create(**kw)
    chunks = list(
        client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]


def test_streaming_completion_yields_several_chunks(client: openai.OpenAI, server: Any) -> None:
    before = metric(server.url, "surgecast_worker_cache_misses_total")
    chunks = list(
        client.completions.create(
            model="tiny", prompt="The quick", max_tokens=10, stream=True, seed=123, temperature=1.0
        )
    )
    assert len(chunks) >= 2
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert metric(server.url, "surgecast_worker_cache_misses_total") == before + 1


def test_same_seed_same_text_and_cache_hit(client: openai.OpenAI, server: Any) -> None:
    kw: dict[str, Any] = dict(
        model="tiny", prompt="Warm pods are", max_tokens=6, seed=42, temperature=0.9
    )
    hits = metric(server.url, "surgecast_worker_cache_hits_total")
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text
    assert a.id != b.id
    assert metric(server.url, "surgecast_worker_cache_hits_total") == hits + 1
    # an unseeded sampled request is never cached
    misses = metric(server.url, "surgecast_worker_cache_misses_total")
    client.completions.create(model="tiny", prompt="Warm pods are", max_tokens=2)
    assert metric(server.url, "surgecast_worker_cache_misses_total") == misses


def test_stop_string_cuts_the_text(client: openai.OpenAI) -> None:
    base = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0)
    text = base.choices[0].text
    if len(text) < 3:
        pytest.skip("the random model stopped too early to test stop strings")
    stop = text[1:3]
    r = client.completions.create(
        model="tiny", prompt="Hello", max_tokens=12, temperature=0, stop=[stop]
    )
    assert r.choices[0].text == text[: text.find(stop)]
    assert r.choices[0].finish_reason == "stop"


BAD = [
    ("malformed json", b"{not json", "invalid_json"),
    ("not an object", b"[1, 2]", "invalid_json"),
    ("unknown model", {"model": "gpt-9", "prompt": "hi"}, "model_not_found"),
    ("empty prompt", {"model": "tiny", "prompt": "   "}, None),
    ("over-long prompt", {"model": "tiny", "prompt": "fox " * 400}, "context_length_exceeded"),
    ("absurd max_tokens", {"model": "tiny", "prompt": "hi", "max_tokens": 10**9}, None),
    ("zero max_tokens", {"model": "tiny", "prompt": "hi", "max_tokens": 0}, None),
    ("wrong type", {"model": "tiny", "prompt": "hi", "max_tokens": "ten"}, None),
    ("prompt not text", {"model": "tiny", "prompt": 12}, None),
    ("missing prompt", {"model": "tiny"}, None),
    ("temperature", {"model": "tiny", "prompt": "hi", "temperature": 5}, None),
    ("top_p", {"model": "tiny", "prompt": "hi", "top_p": 0}, None),
    ("n > 1", {"model": "tiny", "prompt": "hi", "n": 2}, None),
    ("two prompts", {"model": "tiny", "prompt": ["a", "b"]}, None),
]


@pytest.mark.parametrize(("case", "body", "code"), BAD, ids=[b[0] for b in BAD])
def test_client_mistakes_are_400_with_openai_error_body(
    server: Any, case: str, body: Any, code: str | None
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(
        server.url + "/v1/completions",
        content=content,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400, (case, r.text)
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    if code:
        assert err["code"] == code


def test_chat_errors(server: Any) -> None:
    h = {"Authorization": f"Bearer {API_KEY}"}
    for body in (
        {"model": "tiny", "messages": []},
        {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "tiny", "messages": [{"role": "user", "content": ""}]},
    ):
        r = httpx.post(server.url + "/v1/chat/completions", json=body, headers=h)
        assert r.status_code == 400, r.text


def test_api_key_is_required_when_set(server: Any) -> None:
    body = {"model": "tiny", "prompt": "hi"}
    assert httpx.post(server.url + "/v1/completions", json=body).status_code == 401
    r = httpx.post(
        server.url + "/v1/completions", json=body, headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/v1/models").status_code == 401
    # a non-ASCII header (latin-1 on the wire) is a mismatch, not a 500
    weird = {"Authorization": b"Bearer sk-t\xe9st"}
    assert httpx.get(server.url + "/v1/models", headers=weird).status_code == 401
    assert httpx.post(server.url + "/admin/demote", headers=weird).status_code == 401
    ok = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(server.url + "/v1/models", headers=ok).status_code == 200


def test_bearer_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from model_worker import serving

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(serving.hmac, "compare_digest", spy)
    assert serving.bearer_matches("Bearer k", "k") and not serving.bearer_matches("Bearer x", "k")
    assert not serving.bearer_matches(None, "k") and not serving.bearer_matches("k", "k")
    assert calls[0] == (b"Bearer k", b"Bearer k") and len(calls) == 3


def test_metrics_expose_documented_names(server: Any, client: openai.OpenAI) -> None:
    client.completions.create(model="tiny", prompt="metrics", max_tokens=3)
    text = httpx.get(server.url + "/metrics").text
    typed = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    for name in EQUIVALENTS:
        if "gpu" in name:
            continue
        # counters may be typed with or without the _total suffix (client version)
        assert name in typed or name.removesuffix("_total") in typed, name
        assert re.search(rf"^{name}(_bucket|_count|_sum)?[{{ ]", text, flags=re.M), name
    assert "gpu" not in text  # absent, not zero, without a GPU
    assert metric(server.url, "surgecast_worker_state", state="active") == 1.0
    assert metric(server.url, "surgecast_worker_model_load_seconds") > 0
    assert (
        metric(
            server.url, "surgecast_worker_requests_total", endpoint="/v1/completions", status="200"
        )
        >= 1
    )
    assert metric(server.url, "surgecast_worker_time_to_first_token_seconds_count") >= 1
    assert metric(server.url, "surgecast_worker_generation_tokens_total") >= 1


def test_time_per_output_token_is_one_observation_per_request(
    server: Any, client: openai.OpenAI
) -> None:
    name = "surgecast_worker_time_per_output_token_seconds"
    count, total = metric(server.url, name + "_count"), metric(server.url, name + "_sum")
    r = client.completions.create(model="tiny", prompt="tpot per request", max_tokens=6, seed=11)
    n = r.usage.completion_tokens if r.usage else 0
    assert n >= 2
    # one sample for the whole request (vLLM's request_time_per_output_token_seconds), not
    # one per token (inter_token_latency_seconds would have n - 1)
    assert metric(server.url, name + "_count") == count + 1
    mean = metric(server.url, name + "_sum") - total
    assert 0 < mean < 60


def test_admin_promote_demote_requires_token(server: Any) -> None:
    url = server.url
    assert httpx.post(url + "/admin/demote").status_code == 401
    r = httpx.post(url + "/admin/demote", headers={"Authorization": "Bearer adm"})
    assert r.status_code == 200 and r.json()["state"] == "warm"
    assert httpx.get(url + "/status").json()["role"] == "warm"
    assert httpx.get(url + "/readyz").status_code == 200  # warm pods are ready too
    assert metric(url, "surgecast_worker_state", state="warm") == 1.0
    r = httpx.post(url + "/admin/promote", headers={"Authorization": "Bearer adm"})
    assert r.json() == {"role": "active", "changed": True, "state": "active"}


def test_config_from_env_and_flags(tmp_path: Path) -> None:
    env = {"SURGECAST_WORKER_MODEL_PATH": str(tmp_path), "SURGECAST_WORKER_MAX_BATCH": "4"}
    cfg = load_config(["--max-batch", "8", "--dtype", "bf16"], env)
    assert cfg.max_batch == 8 and cfg.dtype == "bf16" and cfg.model_path == str(tmp_path)
    with pytest.raises(ConfigError, match="dtype"):
        load_config(["--dtype", "fp8"], env)
    with pytest.raises(ConfigError, match="model_path"):
        load_config([], {})


def test_engine_batch_equals_sequential_greedy(tiny_model_dir: Path) -> None:
    from model_worker.engine import EngineRequest, SamplingParams

    eng = TransformersEngine.load(tiny_model_dir, "tiny", dtype="fp32", device="auto")
    assert eng.device == "cpu"
    prompts = ["Hello", "The quick brown fox jumps", "GPU"]
    got: dict[int, list[str]] = {i: [] for i in range(3)}

    def req(i: int) -> EngineRequest:
        return EngineRequest(
            eng.encode_prompt(prompts[i]),
            SamplingParams(6, 0.0),
            lambda d, n, f, i=i: got[i].append(d),
        )

    eng.generate([req(0), req(1), req(2)])
    batched = {i: "".join(v) for i, v in got.items()}
    for i in range(3):
        got[i].clear()
        eng.generate([req(i)])
        assert "".join(got[i]) == batched[i]


def test_queue_full_is_429_with_retry_after(make_server: Any) -> None:
    srv = make_server(max_queue=1, max_batch=1, max_tokens_cap=200)
    body = {"model": "tiny", "prompt": "fox", "max_tokens": 200, "temperature": 1.0}
    codes: list[int] = []
    retry: list[str | None] = []

    def fire() -> None:
        r = httpx.post(srv.url + "/v1/completions", json=body, timeout=60)
        codes.append(r.status_code)
        retry.append(r.headers.get("retry-after"))

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 429 in codes and 200 in codes, codes
    assert all(r is not None and int(r) >= 1 for c, r in zip(codes, retry, strict=True) if c == 429)
    assert metric(srv.url, "surgecast_worker_requests_total", status="429") == codes.count(429)


def test_request_timeout_is_504(make_server: Any) -> None:
    srv = make_server(request_timeout_s=0.05, max_tokens_cap=250)
    r = httpx.post(
        srv.url + "/v1/completions",
        timeout=30,
        # greedy: the tiny model's 250 tokens have no eos (sampled, an early eos could finish
        # inside the 50 ms, and did once the worker got faster)
        json={"model": "tiny", "prompt": "fox", "max_tokens": 250, "temperature": 0},
    )
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    # the worker is still healthy and serves the next request
    srv2_ok = httpx.get(srv.url + "/readyz").status_code
    assert srv2_ok == 200


def test_readyz_waits_for_warmup_and_role_file_promotes(
    make_server: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    gate = threading.Event()

    def slow_factory(cfg: WorkerConfig) -> TransformersEngine:
        gate.wait(20)
        return TransformersEngine.load(cfg.model_path, cfg.served_name)

    labels = tmp_path / "labels"
    labels.write_text('app="worker"\nsurgecast.io/role="warm"\n')
    srv = make_server(
        wait_ready=False, engine_factory=slow_factory, role_file=labels, start_role="warm"
    )
    assert httpx.get(srv.url + "/healthz").status_code == 200
    r = httpx.get(srv.url + "/readyz")
    assert r.status_code == 503 and r.json()["state"] == "loading"
    assert metric(srv.url, "surgecast_worker_state", state="loading") == 1.0
    body = {"model": "tiny", "prompt": "hi", "max_tokens": 2}
    assert httpx.post(srv.url + "/v1/completions", json=body).status_code == 503
    gate.set()
    deadline = time.monotonic() + 30
    while httpx.get(srv.url + "/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert httpx.get(srv.url + "/status").json()["state"] == "warm"
    # warmup ran a real generation through the scheduler
    assert metric(srv.url, "surgecast_worker_batch_size_count") >= 1
    t0 = time.monotonic()
    labels.write_text('app="worker"\nsurgecast.io/role="active"\n')
    while httpx.get(srv.url + "/status").json()["state"] != "active":
        assert time.monotonic() - t0 < 5
        time.sleep(0.05)
    assert httpx.post(srv.url + "/v1/completions", json=body).status_code == 200


def test_result_cache_is_a_bounded_lru() -> None:
    from model_worker.serving import Result, ResultCache

    def res(text: str) -> Result:
        return Result(text, 1, "length")

    cache = ResultCache(2)
    cache.put(("a",), res("A"))
    cache.put(("b",), res("B"))
    assert cache.get(("a",)) == res("A")  # a is now the most recently used
    cache.put(("c",), res("C"))  # evicts b, the least recently used, not a (the oldest)
    assert len(cache) == 2 and cache.get(("b",)) is None
    assert cache.get(("a",)) == res("A") and cache.get(("c",)) == res("C")
    cache.put(("a",), res("A2"))  # a refresh replaces, never grows
    assert len(cache) == 2 and cache.get(("a",)) == res("A2")
    off = ResultCache(0)
    off.put(("a",), res("A"))
    assert len(off) == 0 and off.get(("a",)) is None


def test_served_cache_keeps_cache_size_entries_and_evicts_lru(make_server: Any) -> None:
    srv = make_server(cache_size=2)
    outcomes: list[str] = []
    for prompt in ("fox A", "fox B", "fox A", "fox C", "fox B", "fox C"):
        hits = metric(srv.url, "surgecast_worker_cache_hits_total")
        body = {"model": "tiny", "prompt": prompt, "max_tokens": 2, "temperature": 0}
        assert httpx.post(srv.url + "/v1/completions", json=body).status_code == 200
        hit = metric(srv.url, "surgecast_worker_cache_hits_total") > hits
        outcomes.append("hit" if hit else "miss")
        assert httpx.get(srv.url + "/status").json()["cache_entries"] <= 2
    # C evicted B (A had just been used); a FIFO cache would have evicted A and hit B
    assert outcomes == ["miss", "miss", "hit", "miss", "miss", "hit"]
    assert httpx.get(srv.url + "/status").json()["cache_entries"] == 2
