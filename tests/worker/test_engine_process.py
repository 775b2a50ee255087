"""``--engine-process``: the engine and its decode loop in a child process. Real HTTP server,
real tiny model, a real spawned engine process; every behaviour checked here is one the
in-process scheduler already has (or the child's life cycle)."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from offload_cycle import check_offload_cycle

from model_worker.config import ConfigError, WorkerConfig, load_config
from model_worker.engine import TransformersEngine

PROMPTS = ["Hello world", "the quick brown fox", "tiny language model", "tests are", "a b c"]


class FailsOnLongPrompts(TransformersEngine):
    """The real engine, except that a prefill wider than 40 tokens raises (a lost device)."""

    def forward(self, ids: Any, mask: Any, pos: Any, cache: Any) -> Any:
        if ids.shape[1] > 40:
            raise RuntimeError("device lost")
        return super().forward(ids, mask, pos, cache)


def fails_on_long_prompts(cfg: WorkerConfig) -> TransformersEngine:
    """A module-level engine factory (the engine process unpickles it by name)."""
    e = TransformersEngine.load(cfg.model_path, cfg.served_name)
    e.__class__ = FailsOnLongPrompts
    return e


def refuses_its_config(cfg: WorkerConfig) -> TransformersEngine:
    """An engine factory whose load fails on the operator's configuration (the tokenizer
    the parent loads meanwhile is fine)."""
    raise ConfigError("model config names an attention kernel this build lacks")


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def complete(url: str, prompt: str, stream: bool, max_tokens: int = 24) -> tuple[str, int]:
    body = {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    if not stream:
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"], r.status_code
    parts = []
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                parts.append(chunk["choices"][0]["text"])
    return "".join(parts), r.status_code


@pytest.fixture(scope="module")
def servers(tiny_model_dir: Path, worker_starter: Any) -> Any:
    """The same worker in-process and with ``--engine-process`` (no result cache, so every
    request decodes)."""
    inproc = worker_starter(tiny_model_dir, cache_size=0, max_tokens_cap=250)
    proc = worker_starter(tiny_model_dir, cache_size=0, max_tokens_cap=250, engine_process=True)
    yield inproc, proc
    inproc.stop()
    proc.stop()


def test_greedy_outputs_equal_in_process_ones(servers: Any) -> None:
    inproc, proc = servers
    status = httpx.get(proc.url + "/status").json()
    assert status["engine_pid"] not in (None, os.getpid())
    assert httpx.get(inproc.url + "/status").json()["engine_pid"] is None
    cases = [(p, s) for p in PROMPTS for s in (False, True)]
    with ThreadPoolExecutor(len(cases)) as pool:  # concurrent: they share decode steps
        want = list(pool.map(lambda c: complete(inproc.url, *c), cases))
        got = list(pool.map(lambda c: complete(proc.url, *c), cases))
    assert got == want
    assert all(text for text, _ in got)


def test_metrics_count_tokens_requests_ttft_and_running(servers: Any) -> None:
    _, proc = servers
    url = proc.url
    before = {
        "tokens": metric(url, "surgecast_worker_generation_tokens_total"),
        "ok": metric(url, "surgecast_worker_requests_total", status="200"),
        "ttft": metric(url, "surgecast_worker_time_to_first_token_seconds_count"),
        "queue": metric(url, "surgecast_worker_request_queue_time_seconds_count"),
    }
    body = {"model": "tiny", "prompt": "fox", "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        running = metric(url, "surgecast_worker_num_requests_running")  # mid-stream
        for _ in lines:
            pass
    short = [complete(url, p, False, max_tokens=5) for p in PROMPTS[:3]]
    assert running == 1.0
    assert metric(url, "surgecast_worker_num_requests_running") == 0.0
    gen = metric(url, "surgecast_worker_generation_tokens_total") - before["tokens"]
    assert gen == 200 + 3 * 5  # greedy on the tiny model: no eos before max_tokens
    assert len(short) == 3
    assert metric(url, "surgecast_worker_requests_total", status="200") - before["ok"] == 4
    assert metric(url, "surgecast_worker_time_to_first_token_seconds_count") - before["ttft"] == 4
    assert metric(url, "surgecast_worker_request_queue_time_seconds_count") - before["queue"] == 4


def test_a_disconnected_stream_frees_its_row(servers: Any) -> None:
    _, proc = servers
    url = proc.url
    steps = metric(url, "surgecast_worker_batch_size_count")
    body = {"model": "tiny", "prompt": "fox", "max_tokens": 240, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
    # the client left after its first token; others are served
    assert complete(url, "Hello world", False, max_tokens=4)[1] == 200
    deadline = time.monotonic() + 30
    while metric(url, "surgecast_worker_num_requests_running") != 0.0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the engine process stopped decoding the row: far fewer steps than its 240 tokens
    assert metric(url, "surgecast_worker_batch_size_count") - steps < 120
    assert metric(url, "surgecast_worker_requests_total", status="499") >= 1


def test_request_timeout_is_504_and_frees_its_row(make_server: Any) -> None:
    srv = make_server(request_timeout_s=0.05, max_tokens_cap=250, engine_process=True)
    steps = metric(srv.url, "surgecast_worker_batch_size_count")
    r = httpx.post(
        srv.url + "/v1/completions",
        timeout=30,
        json={"model": "tiny", "prompt": "fox", "max_tokens": 250, "temperature": 0},
    )
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert httpx.get(srv.url + "/readyz").status_code == 200
    deadline = time.monotonic() + 30
    while metric(srv.url, "surgecast_worker_num_requests_running") != 0.0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the engine process dropped the row instead of decoding its 250 tokens
    assert metric(srv.url, "surgecast_worker_batch_size_count") - steps < 200


def test_an_engine_error_in_the_child_fails_its_rows_only(make_server: Any) -> None:
    srv = make_server(engine_process=True, engine_factory=fails_on_long_prompts)
    long = {"model": "tiny", "prompt": "word " * 60, "max_tokens": 4, "temperature": 0}
    r = httpx.post(srv.url + "/v1/completions", json=long, timeout=30)
    assert r.status_code == 500, r.text
    assert "device lost" in r.json()["error"]["message"]
    assert complete(srv.url, "Hello world", False, max_tokens=4)[1] == 200
    assert complete(srv.url, "Hello world", True, max_tokens=4)[1] == 200
    assert httpx.get(srv.url + "/readyz").status_code == 200


def _gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_the_engine_process_exits_with_the_server(make_server: Any) -> None:
    srv = make_server(engine_process=True)
    pid = httpx.get(srv.url + "/status").json()["engine_pid"]
    assert isinstance(pid, int) and pid != os.getpid()
    os.kill(pid, 0)  # alive
    srv.stop()
    assert _gone(pid)


def test_a_dead_engine_process_fails_requests_and_readiness(make_server: Any) -> None:
    srv = make_server(engine_process=True, max_tokens_cap=250)
    pid = httpx.get(srv.url + "/status").json()["engine_pid"]
    body = {"model": "tiny", "prompt": "fox", "max_tokens": 250, "temperature": 0, "stream": True}
    errors = []
    with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        os.kill(pid, signal.SIGKILL)
        for line in lines:
            if line.startswith("data: {") and '"error"' in line:
                errors.append(json.loads(line[6:])["error"])
    # the stream either finished its 250 tokens before the kill landed, or got a 503
    assert all(e["code"] == "engine_unavailable" for e in errors)
    assert _gone(pid)
    deadline = time.monotonic() + 15
    while httpx.get(srv.url + "/readyz").status_code != 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert httpx.get(srv.url + "/healthz").status_code == 503
    r = httpx.post(srv.url + "/v1/completions", json={**body, "stream": False}, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"


def test_a_config_error_in_the_child_is_the_load_error_without_a_traceback(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # it was wrapped in a RuntimeError and logged with a traceback, unlike the same error
    # in process (or from the parent's own tokenizer load)
    srv = make_server(engine_process=True, engine_factory=refuses_its_config, wait_ready=False)
    deadline = time.monotonic() + 60
    while not (r := httpx.get(srv.url + "/readyz")).json().get("error"):
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert r.status_code == 503
    assert r.json()["error"] == (
        "ConfigError: model config names an attention kernel this build lacks"
    )
    failed = [rec for rec in caplog.records if rec.getMessage().startswith("model load failed")]
    assert failed and all(rec.exc_info is None for rec in failed)


def test_engine_process_takes_admission_and_offload(tiny_model_dir: Path) -> None:
    argv = ["--model-path", str(tiny_model_dir), "--engine-process", "true"]
    batch = load_config([*argv, "--admission", "batch"])
    assert batch.engine_process and batch.admission == "batch"
    offload = load_config([*argv, "--offload-when-warm", "true"])
    assert offload.engine_process and offload.offload_when_warm


class SlowSteps(TransformersEngine):
    """The real engine, 20 ms slower per forward: a 100-token request decodes for 2 s."""

    def forward(self, ids: Any, mask: Any, pos: Any, cache: Any) -> Any:
        time.sleep(0.02)
        return super().forward(ids, mask, pos, cache)


def slow_steps(cfg: WorkerConfig) -> TransformersEngine:
    """A module-level engine factory for :class:`SlowSteps`."""
    e = TransformersEngine.load(cfg.model_path, cfg.served_name)
    e.__class__ = SlowSteps
    return e


@pytest.mark.parametrize("admission", ["token", "batch"])
def test_a_request_arriving_mid_decode_joins_only_with_token_admission(
    make_server: Any, admission: str
) -> None:
    """In the engine process as in process: with token-level admission a short request sent
    while a long one decodes joins its batch and finishes first; with batch-level admission
    it waits for the running batch to finish."""
    import threading

    srv = make_server(engine_process=True, engine_factory=slow_steps, admission=admission,
                      batch_wait_ms=0, max_tokens_cap=250)
    body = {"model": "tiny", "prompt": "a long one", "max_tokens": 100, "temperature": 0,
            "stream": True}
    short_done: list[float] = []

    def short() -> None:
        r = httpx.post(srv.url + "/v1/completions", timeout=60, json={
            "model": "tiny", "prompt": "short", "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200, r.text
        short_done.append(time.monotonic())

    t = threading.Thread(target=short)
    with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        t.start()  # the long request decodes
        for _ in lines:
            pass
        long_done = time.monotonic()
    t.join(60)
    assert short_done
    if admission == "token":
        assert short_done[0] < long_done - 0.5  # joined at once: about 2 s of decoding left
    else:  # after the long batch (a margin for the client reading the long stream's end)
        assert short_done[0] > long_done - 0.1


#: the file whose existence lets :class:`GatedRestore` restore (the engine process inherits
#: the environment at spawn, so the test and the child agree on it)
GATE_ENV = "SURGECAST_TEST_RESTORE_GATE"


class GatedRestore(TransformersEngine):
    """The real engine; a restore from host memory waits until the gate file exists, so
    the waking window is visible from the parent."""

    def restore(self) -> float:
        gate = os.environ.get(GATE_ENV)
        deadline = time.monotonic() + 20
        while self.offloaded and gate and not os.path.exists(gate):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return super().restore()


def gated_restore(cfg: WorkerConfig) -> TransformersEngine:
    """A module-level engine factory for :class:`GatedRestore`."""
    e = TransformersEngine.load(cfg.model_path, cfg.served_name)
    e.__class__ = GatedRestore
    return e


def test_offload_when_warm_moves_the_weights_in_the_engine_process(
    make_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in process (``test_runtime``): a warm worker's weights leave the device once idle,
    promotion restores them while requests queue, demotion offloads them again and a stray
    request to the warm pod restores on demand; the child moves them, the parent reports
    them (``/status`` weights, the gauge, the restore histogram)."""
    gate = tmp_path / "restore-gate"
    monkeypatch.setenv(GATE_ENV, str(gate))
    srv = make_server(engine_process=True, engine_factory=gated_restore,
                      offload_when_warm=True, start_role="warm", admin_token="adm")
    assert httpx.get(srv.url + "/status").json()["engine_pid"] != os.getpid()
    check_offload_cycle(srv.url, "adm", gate.touch)
