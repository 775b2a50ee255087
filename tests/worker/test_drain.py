"""SIGTERM on a real worker process: readiness false at once, new requests 503, accepted
requests (running and queued) all finish, then the process exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_drains_accepted_requests(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "worker.log").open("w")
    env = {**os.environ, "SURGECAST_WORKER_GRACE_PERIOD_S": "60"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "model_worker",
            "--model-path",
            str(tiny_model_dir),
            "--model-name",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-batch",
            "1",
            "--max-tokens-cap",
            "200",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.1)

        results: list[int] = []
        body = {"model": "tiny", "prompt": "drain me", "max_tokens": 100, "temperature": 0}

        def fire() -> None:
            results.append(httpx.post(url + "/v1/completions", json=body, timeout=120).status_code)

        threads = [threading.Thread(target=fire) for _ in range(3)]
        for t in threads:
            t.start()
        while httpx.get(url + "/status").json()["in_flight"] < 3:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        r = httpx.get(url + "/readyz")
        assert r.status_code == 503 and r.json()["state"] == "draining"
        r = httpx.post(url + "/v1/completions", json=body)  # same body: not even from cache
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_draining"
        for t in threads:
            t.join()
        assert results == [200, 200, 200], (tmp_path / "worker.log").read_text()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
