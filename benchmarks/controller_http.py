"""Latency of the controller's /metrics and /healthz while 4 clients hammer them.

Starts a real :class:`ControllerServer` on loopback with N targets' worth of series, runs a
writer that updates one target per tick at 500 targets / 15 s (about 33 ticks/s, like a
busy controller) and 4 client threads on keep-alive connections. Prints a markdown table of
the latency per request (p50, p95, p99, max) and the exposition size.

Run: ``.venv/bin/python benchmarks/controller_http.py`` (about 20 s; ``--seconds`` per case).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time

from autoscaler.controller.metrics import ControllerMetrics
from autoscaler.controller.server import ControllerServer

CLIENTS = 4


def fill(metrics: ControllerMetrics, targets: int) -> None:
    for i in range(targets):
        t = f"ns{i % 10}/worker-{i}"
        metrics.observe_tick(t, reason="ForecastLead", desired=5, active=4, warm=1, ready=5,
                             demand_rps=12.0, forecast_rps={0.5: 11.0, 0.9: 14.0},
                             duration_s=0.002, fetch_s=0.01)
        metrics.observe_forecast_quality(t, mae=1.0, reactive_mae=2.0, coverage=0.9,
                                         prediction_enabled=True)
        metrics.set_fallback(t, False)
        metrics.count_error(t, "MetricsUnavailable")


def run_case(path: str, targets: int, seconds: float) -> tuple[list[float], int]:
    metrics = ControllerMetrics()
    fill(metrics, targets)
    server = ControllerServer(metrics, host="127.0.0.1", port=0)
    server.start()
    stop = threading.Event()
    lat: list[float] = []
    size = [0]

    def writer() -> None:
        n = 0
        while not stop.wait(15.0 / 500):
            i = n % targets
            metrics.observe_tick(f"ns{i % 10}/worker-{i}", reason="ReactiveFloor", desired=n % 9,
                                 active=3, warm=1, ready=4, demand_rps=float(n % 50),
                                 forecast_rps={0.5: 10.0, 0.9: 13.0}, duration_s=0.001,
                                 fetch_s=0.01)
            n += 1

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        mine = []
        while not stop.is_set():
            t0 = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            mine.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status}")
            size[0] = len(body)
        conn.close()
        lat.extend(mine)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=client)
                                                   for _ in range(CLIENTS)]
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join(15)
    server.stop()
    return lat, size[0]


def render_ms(targets: int) -> float:
    """Median time of one fresh rendering (after a write) on this thread."""
    metrics = ControllerMetrics()
    fill(metrics, targets)
    times = []
    for i in range(7):
        metrics.set_targets(i)  # a write: the next render cannot use the cached body
        t0 = time.perf_counter()
        metrics.render()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="duration of each case")
    args = ap.parse_args()
    print(f"| path | targets | body (KiB) | fresh render (ms) | requests/s | p50 (ms) "
          f"| p95 (ms) | p99 (ms) | max (ms) |   ({CLIENTS} clients, keep-alive)")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path, targets in (("/healthz", 10), ("/metrics", 1), ("/metrics", 10),
                          ("/metrics", 100), ("/metrics", 500)):
        fresh = f"{render_ms(targets):.1f}" if path == "/metrics" else "-"
        lat, size = run_case(path, targets, args.seconds)
        q = statistics.quantiles(lat, n=100)
        print(f"| {path} | {targets} | {size / 1024:.1f} | {fresh} | {len(lat) / args.seconds:.0f} "
              f"| {q[49] * 1e3:.2f} | {q[94] * 1e3:.2f} | {q[98] * 1e3:.2f} "
              f"| {max(lat) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
