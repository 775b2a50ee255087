"""The warm-standby offload cycle, checked the same way in process (``test_runtime``) and
with ``--engine-process`` (``test_engine_process``): only the restore's gate differs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx


def wait_for(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``check()`` until true (real server, real threads: no fake clock to advance)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def gauge(url: str, name: str) -> float:
    """The value of the first sample of ``name`` (one series) on ``url``'s ``/metrics``."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def check_offload_cycle(url: str, admin_token: str, open_gate: Callable[[], None]) -> None:
    """A worker started warm with ``offload_when_warm`` whose restore waits for
    ``open_gate()``: its weights leave the device once idle (still ready), promotion starts
    the restore and a request arriving meanwhile queues (not refused) until the gate opens,
    then the weights are back; demoted, they leave again, and a stray request to the warm
    pod restores them on demand. ``/status`` weights, the offload gauge and the restore
    histogram say so at every step."""
    admin = {"Authorization": f"Bearer {admin_token}"}

    def status() -> dict[str, Any]:
        return dict(httpx.get(url + "/status").json())

    wait_for(lambda: status()["weights"] == "host")
    assert gauge(url, "surgecast_worker_weights_offloaded") == 1.0
    assert httpx.get(url + "/readyz").status_code == 200

    assert httpx.post(url + "/admin/promote", headers=admin).json()["state"] == "active"
    wait_for(lambda: status()["weights"] == "restoring")
    answers: list[httpx.Response] = []
    body = {"model": "tiny", "prompt": "wake up", "max_tokens": 3}
    t = threading.Thread(
        target=lambda: answers.append(httpx.post(url + "/v1/completions", json=body, timeout=30))
    )
    t.start()
    wait_for(lambda: status()["waiting"] == 1)
    assert not answers and status()["weights"] == "restoring"
    open_gate()
    t.join(timeout=30)
    assert answers and answers[0].status_code == 200, answers
    wait_for(lambda: status()["weights"] == "device")
    assert gauge(url, "surgecast_worker_weights_offloaded") == 0.0
    assert gauge(url, "surgecast_worker_weight_restore_seconds_count") == 1.0

    httpx.post(url + "/admin/demote", headers=admin).raise_for_status()
    wait_for(lambda: status()["weights"] == "host")
    assert httpx.post(url + "/v1/completions", json=body, timeout=30).status_code == 200
    assert gauge(url, "surgecast_worker_weight_restore_seconds_count") == 2.0
    wait_for(lambda: status()["weights"] == "host")
