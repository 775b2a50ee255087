"""Admission and client departures over real HTTP on the tiny model: the queue bound counts
only requests that wait beyond the free batch slots, a non-streaming request whose client
left frees its row, role-file polling leaves admin promotions alone, and requests are
counted by their final outcome."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_worker.engine import TransformersEngine


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample in /metrics (0 when absent)."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class GatedEngine(TransformersEngine):
    """The real engine whose forwards wait for :attr:`gate` (set = open)."""

    gate = threading.Event()
    held = threading.Event()  # a forward is waiting at the closed gate

    def forward(self, *args: Any) -> Any:
        if not GatedEngine.gate.is_set():
            GatedEngine.held.set()
        assert GatedEngine.gate.wait(60), "the test never opened the gate"
        return super().forward(*args)


def gated_factory(cfg: Any) -> TransformersEngine:
    engine = TransformersEngine.load(cfg.model_path, cfg.served_name)
    engine.__class__ = GatedEngine
    return engine


def test_a_burst_on_an_idle_worker_fills_the_batch_before_429(make_server: Any) -> None:
    """7 requests at once on an idle worker with 4 batch slots and room for 1 more: 5 are
    accepted and 2 refused. The engine is held until the refusals are in, so nothing the
    accepted ones do (finishing early on a fast machine, arriving spread out on a loaded
    one) can change the count."""
    GatedEngine.gate.set()  # the warmup generation runs through
    srv = make_server(engine_factory=gated_factory, max_queue=1, max_batch=4,
                      batch_wait_ms=1000)
    GatedEngine.gate.clear()
    codes: list[int] = []
    body = {"model": "tiny", "prompt": "fox", "max_tokens": 4}
    threads = [
        threading.Thread(
            target=lambda: codes.append(
                httpx.post(srv.url + "/v1/completions", json=body, timeout=60).status_code
            )
        )
        for _ in range(7)
    ]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(codes) >= 2, 30)
        refused = list(codes)  # only refusals can answer while the engine is held
    finally:
        GatedEngine.gate.set()
        for t in threads:
            t.join()
    assert refused == [429, 429], refused
    assert sorted(codes) == [200] * 5 + [429] * 2, codes


def test_a_request_in_its_prefill_holds_its_batch_slot(make_server: Any) -> None:
    """A request taken off the queue is counted as running from then on, not only once its
    prefill is done: while a long prefill runs, 3 slots and 1 queue place are left, so of 6
    more requests 4 are accepted. Before, the request in its prefill counted nowhere and 5
    were accepted (one more than the bound)."""
    GatedEngine.gate.set()
    srv = make_server(engine_factory=gated_factory, max_queue=1, max_batch=4, batch_wait_ms=0)
    GatedEngine.gate.clear()
    GatedEngine.held.clear()
    codes: list[int] = []
    body = {"model": "tiny", "prompt": "fox", "max_tokens": 2}

    def post() -> None:
        codes.append(httpx.post(srv.url + "/v1/completions", json=body, timeout=60).status_code)

    first = threading.Thread(target=post)
    more = [threading.Thread(target=post) for _ in range(6)]
    try:
        first.start()
        assert GatedEngine.held.wait(30), "the first request never reached the engine"
        for t in more:
            t.start()
        wait_for(lambda: len(codes) >= 2, 30)
        refused = list(codes)
    finally:
        GatedEngine.gate.set()
        for t in [first, *more]:
            t.join()
    assert refused == [429, 429], refused
    assert sorted(codes) == [200] * 5 + [429] * 2, codes


class SlowEngine(TransformersEngine):
    """The real engine, 50 ms per forward: a 200-token request takes about 10 s."""

    def forward(self, *args: Any) -> Any:
        time.sleep(0.05)
        return super().forward(*args)


def slow_factory(cfg: Any) -> TransformersEngine:
    engine = TransformersEngine.load(cfg.model_path, cfg.served_name)
    engine.__class__ = SlowEngine
    return engine


def wait_for(check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_non_streaming_request_whose_client_left_is_cancelled(make_server: Any) -> None:
    srv = make_server(engine_factory=slow_factory, max_tokens_cap=200)
    body = {"model": "tiny", "prompt": "fox", "max_tokens": 200, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.url + "/v1/completions", json=body, timeout=1.0)
    # its row left the batch at once, long before its 200 tokens (~10 s) were decoded
    wait_for(lambda: httpx.get(srv.url + "/status").json()["in_flight"] == 0, 3.0)
    wait_for(lambda: httpx.get(srv.url + "/status").json()["running"] == 0, 2.0)
    assert metric(srv.url, "surgecast_worker_requests_total", status="499") == 1


def test_an_admin_promotion_is_not_reverted_by_the_role_file(
    make_server: Any, tmp_path: Path
) -> None:
    labels = tmp_path / "labels"
    labels.write_text('app="worker"\nsurgecast.io/role="warm"\n')
    srv = make_server(role_file=labels, start_role="warm", admin_token="adm")

    def state() -> str:
        return str(httpx.get(srv.url + "/status").json()["state"])

    assert state() == "warm"
    r = httpx.post(srv.url + "/admin/promote", headers={"Authorization": "Bearer adm"})
    assert r.status_code == 200 and state() == "active"
    time.sleep(1.5)  # three polls of the unchanged file
    assert state() == "active"
    # a change of the label itself still applies
    labels.write_text('app="worker"\nsurgecast.io/role="active"\n')
    time.sleep(1.0)
    assert state() == "active"
    labels.write_text('app="worker"\nsurgecast.io/role="warm"\n')
    wait_for(lambda: state() == "warm", 5.0)


def test_requests_are_counted_by_their_final_outcome(make_server: Any) -> None:
    srv = make_server(engine_factory=slow_factory, max_tokens_cap=200, request_timeout_s=1.0)
    url = srv.url
    body = {"model": "tiny", "prompt": "fox", "max_tokens": 200, "temperature": 0}
    tokens = metric(url, "surgecast_worker_generation_tokens_total")  # the warmup's
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200  # headers went out before the timeout
        text = r.read().decode()
    assert '"code":"timeout"' in text and text.endswith("data: [DONE]\n\n")
    # the stream failed in-band: a 504, not the 200 its headers said
    assert metric(url, "surgecast_worker_requests_total", status="504") == 1
    assert metric(url, "surgecast_worker_requests_total", status="200") == 0
    streamed = metric(url, "surgecast_worker_generation_tokens_total") - tokens
    assert streamed >= 1  # decoded before the timeout: generated, though never finished
    r = httpx.post(url + "/v1/completions", json={**body, "seed": 1}, timeout=30)
    assert r.status_code == 504
    assert metric(url, "surgecast_worker_requests_total", status="504") == 2
    assert metric(url, "surgecast_worker_generation_tokens_total") - tokens > streamed
    ok = httpx.post(url + "/v1/completions", json={**body, "max_tokens": 2}, timeout=30)
    assert ok.status_code == 200
    wait_for(lambda: metric(url, "surgecast_worker_requests_total", status="200") == 1, 2.0)
