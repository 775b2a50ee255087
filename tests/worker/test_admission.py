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


def burst(url: str, n: int, body: dict[str, Any]) -> list[int]:
    codes: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: codes.append(
                httpx.post(url + "/v1/completions", json=body, timeout=60).status_code
            )
        )
        for _ in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def test_a_burst_on_an_idle_worker_fills_the_batch_before_429(make_server: Any) -> None:
    # the scheduler waits 1 s to fill the batch: the whole burst is queued at once
    srv = make_server(max_queue=1, max_batch=4, batch_wait_ms=1000)
    codes = burst(srv.url, 7, {"model": "tiny", "prompt": "fox", "max_tokens": 4})
    # 4 free slots + 1 waiting beyond them are accepted; the rest is over max_queue
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
