"""ControllerServer over real HTTP (urllib against a loopback port)."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.controller.metrics import ControllerMetrics
from autoscaler.controller.server import ControllerServer
from autoscaler.errors import ConfigError


def fetch(port: int, path: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode(), dict(err.headers)


@pytest.fixture
def metrics() -> ControllerMetrics:
    m = ControllerMetrics()
    m.observe_tick("llm/worker", reason="ForecastLead", desired=4, active=3, warm=1, ready=4,
                   demand_rps=12.5, forecast_rps={0.5: 11.0, 0.9: 14.0}, duration_s=0.002,
                   fetch_s=0.001)
    m.set_leader(True)
    return m


@pytest.fixture
def serve(metrics: ControllerMetrics) -> Iterator[Callable[..., ControllerServer]]:
    started: list[ControllerServer] = []

    def make(**kw: object) -> ControllerServer:
        srv = ControllerServer(metrics, host="127.0.0.1", port=0, **kw)  # type: ignore[arg-type]
        srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def test_health_ready_and_metrics(serve: Callable[..., ControllerServer]) -> None:
    srv = serve()
    assert srv.port > 0
    assert fetch(srv.port, "/healthz")[:2] == (200, "ok\n")
    assert fetch(srv.port, "/readyz")[:2] == (200, "ok\n")
    code, body, headers = fetch(srv.port, "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=")
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for fam in text_string_to_metric_families(body) for s in fam.samples}
    assert values[("surgecast_controller_desired_replicas", (("target", "llm/worker"),))] == 4
    assert values[("surgecast_controller_leader", ())] == 1
    assert fetch(srv.port, "/metrics?debug=1")[0] == 200  # query strings are ignored


def test_failing_checks_answer_503_with_the_reason(
        serve: Callable[..., ControllerServer]) -> None:
    state = {"healthy": (False, "control loop stalled for 95 s"),
             "ready": (False, "not leader: lease held by surgecast-controller-0_ab12")}
    srv = serve(healthy=lambda: state["healthy"], ready=lambda: state["ready"])
    assert fetch(srv.port, "/healthz")[:2] == (503, "control loop stalled for 95 s\n")
    code, body, _ = fetch(srv.port, "/readyz")
    assert code == 503 and "lease held by surgecast-controller-0_ab12" in body
    state["healthy"] = (True, "ok")
    assert fetch(srv.port, "/healthz")[0] == 200
    assert fetch(srv.port, "/readyz")[0] == 503


def test_a_raising_check_is_503_and_the_server_survives(
        serve: Callable[..., ControllerServer]) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("scheduler is gone")

    srv = serve(healthy=broken, ready=broken)
    for path in ("/healthz", "/readyz", "/healthz"):
        code, body, _ = fetch(srv.port, path)
        assert code == 503 and "RuntimeError: scheduler is gone" in body
    assert fetch(srv.port, "/metrics")[0] == 200


def test_unknown_paths_and_methods(serve: Callable[..., ControllerServer]) -> None:
    srv = serve()
    assert fetch(srv.port, "/")[0] == 404
    assert fetch(srv.port, "/metricsz")[0] == 404
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        code, _, headers = fetch(srv.port, "/metrics", method)
        assert code == 405 and headers["Allow"] == "GET"
    assert fetch(srv.port, "/healthz", "HEAD")[0] == 405


def test_port_in_use_is_a_config_error(metrics: ControllerMetrics) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        srv = ControllerServer(metrics, host="127.0.0.1", port=port)
        with pytest.raises(ConfigError, match=f"port {port} .*already in use"):
            srv.start()
    with pytest.raises(ConfigError, match="port must be"):
        ControllerServer(metrics, port=70000)


def test_stop_closes_the_port(metrics: ControllerMetrics) -> None:
    srv = ControllerServer(metrics, host="127.0.0.1", port=0)
    srv.start()
    port = srv.port
    assert fetch(port, "/healthz")[0] == 200
    srv.stop()
    srv.stop()  # idempotent
    with pytest.raises(urllib.error.URLError):
        fetch(port, "/healthz")
    again = ControllerServer(metrics, host="127.0.0.1", port=port)  # the port is free again
    again.start()
    try:
        assert fetch(port, "/healthz")[0] == 200
    finally:
        again.stop()


def test_a_stuck_check_does_not_block_metrics(serve: Callable[..., ControllerServer]) -> None:
    entered, release = threading.Event(), threading.Event()

    def stuck() -> tuple[bool, str]:  # e.g. a check that waits on the control loop's lock
        entered.set()
        release.wait(10)
        return True, "ok"

    srv = serve(ready=stuck)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(fetch(srv.port, "/readyz")[0]))
    t.start()
    assert entered.wait(5)
    try:
        assert fetch(srv.port, "/metrics")[0] == 200
        assert fetch(srv.port, "/healthz")[0] == 200
    finally:
        release.set()
        t.join(10)
    assert result == [200]


def test_metrics_under_concurrent_scrapes_and_updates(
        serve: Callable[..., ControllerServer], metrics: ControllerMetrics) -> None:
    for i in range(50):
        metrics.observe_tick(f"ns/t{i}", reason="ForecastLead", desired=i, active=i, warm=0,
                             ready=i, demand_rps=float(i), forecast_rps={0.5: 1.0, 0.9: 2.0},
                             duration_s=0.001, fetch_s=0.001)
    srv = serve()
    done = threading.Event()

    def loop() -> None:  # the control loop keeps writing while scrapes run
        n = 0
        while not done.is_set():
            metrics.observe_tick(f"ns/t{n % 50}", reason="ReactiveFloor", desired=n % 7,
                                 active=1, warm=0, ready=1, demand_rps=None, forecast_rps={},
                                 duration_s=0.001, fetch_s=0.001)
            n += 1

    codes: list[int] = []
    bodies_ok: list[bool] = []

    def scrape() -> None:
        for _ in range(25):
            code, body, _ = fetch(srv.port, "/metrics")
            codes.append(code)
            bodies_ok.append("surgecast_controller_desired_replicas{" in body)

    writer = threading.Thread(target=loop)
    writer.start()
    scrapers = [threading.Thread(target=scrape) for _ in range(4)]
    for s in scrapers:
        s.start()
    for s in scrapers:
        s.join(60)
    done.set()
    writer.join(10)
    assert codes == [200] * 100 and all(bodies_ok)
