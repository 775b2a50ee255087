"""Fixtures for adapter tests: a real Prometheus (backfilled + live target), a fake API server."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from prom_fixture import (
    BACKFILL_DAYS,
    STEP_S,
    BackfillSeries,
    LiveExporter,
    PromEnv,
    find_binaries,
    running_prometheus,
    serve_static,
    served_backfill,
)

#: the statuses the live exporter's request counter has series for
LIVE_STATUSES = ("200", "400", "404", "429", "499", "503")


@pytest.fixture(scope="session")
def live_exporter() -> Iterator[LiveExporter]:
    """A tiny exporter (own registry) on a free loopback port."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

    reg = CollectorRegistry()
    # labelled as the worker labels it: the surgecast preset counts some statuses only
    by_status = Counter("surgecast_worker_requests", "requests", ["status"], registry=reg)
    for status in LIVE_STATUSES:  # every series exists from the first scrape on
        by_status.labels(status)
    waiting = Gauge("surgecast_worker_num_requests_waiting", "waiting", registry=reg)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    yield LiveExporter(server.server_port, by_status.labels("200"), waiting, server, by_status)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


#: Other engines' metrics in the classic text format, as vLLM/TGI/DCGM expose them. (Served
#: as static text: prometheus_client 0.26 rewrites ':' to '_' when Prometheus 2.42 scrapes
#: it with OpenMetrics, so it cannot stand in for vLLM's colon names.)
ENGINE_EXPOSITION = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m",engine="0"} 3
# TYPE tgi_queue_size gauge
tgi_queue_size 2
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",pod="w-1"} 63
"""


@pytest.fixture(scope="session")
def engine_exporter() -> Iterator[int]:
    """A static text-format exporter on a loopback port; yields the port."""
    with serve_static(ENGINE_EXPOSITION.encode(), "text/plain; version=0.0.4") as port:
        yield port


@pytest.fixture(scope="session")
def prom(
    tmp_path_factory: pytest.TempPathFactory,
    load_trace: Callable[[str], Any],
    live_exporter: LiveExporter,
    engine_exporter: int,
) -> Iterator[PromEnv]:
    """Real Prometheus: 8 days of the NASA trace backfilled, plus a live 1-s scrape target.

    Skips (visibly) only when the binaries are not installed; CI runs ``make system-deps``.
    """
    if find_binaries() is None:
        pytest.skip("prometheus/promtool not found on PATH: run `make system-deps` (Debian)")
    trace = load_trace("nasa_http_1995")
    n = int(BACKFILL_DAYS * 86400 / STEP_S)
    values = np.asarray(trace.values[:n], dtype=np.float64)
    # place the trace so that it ends two hours ago, on the minute grid
    end = math.floor(time.time() / STEP_S) * STEP_S - 7200.0
    ts = end - STEP_S * np.arange(n - 1, -1, -1, dtype=np.float64)
    probe_end = end + 1800.0
    probe_ts = np.arange(probe_end - 1800.0, probe_end + 1.0, 15.0)
    backfill = [
        BackfillSeries("surgecast_trace_requests_per_minute", "gauge", ts, values,
                       {"trace": "nasa_http_1995"}),
        BackfillSeries("surgecast_trace_requests", "counter", ts, values,
                       {"trace": "nasa_http_1995"}),
        BackfillSeries("surgecast_stale_probe", "gauge", probe_ts,
                       np.ones_like(probe_ts), {}),
        *served_backfill(end - 86400.0),
    ]
    storage = tmp_path_factory.mktemp("prom") / "data"
    targets = [f"127.0.0.1:{live_exporter.port}", f"127.0.0.1:{engine_exporter}"]
    with running_prometheus(storage, backfill=backfill, scrape_targets=targets) as server:
        yield PromEnv(server, ts, values, probe_end, live_exporter, end - 86400.0)


@pytest.fixture
def dead_url() -> str:
    """A loopback URL on which nothing listens."""
    from prom_fixture import free_port

    return f"http://127.0.0.1:{free_port()}"
