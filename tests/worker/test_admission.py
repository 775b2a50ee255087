"""Admission and client departures over real HTTP on the tiny model: the queue bound counts
only requests that wait beyond the free batch slots, a non-streaming request whose client
left frees its row, role-file polling leaves admin promotions alone, and requests are
counted by their final outcome."""

from __future__ import annotations

import threading
from typing import Any

import httpx


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
