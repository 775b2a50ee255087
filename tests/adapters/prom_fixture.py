"""A real Prometheus server for adapter tests: backfilled history plus live scrape targets.

Debian's ``prometheus`` package (``make system-deps``) gives ``prometheus`` and ``promtool``.
:func:`backfill_openmetrics` writes OpenMetrics text and turns it into TSDB blocks with
``promtool tsdb create-blocks-from openmetrics`` *before* the server starts;
:class:`PrometheusServer` then starts ``prometheus`` on a free loopback port with a temporary
storage folder and a generated configuration (1-s scrape interval), waits for ``/-/ready``
and stops it on exit.

Backfilled samples are placed relative to *now* and the retention is 100 years, so nothing is
dropped as too old.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BACKFILL_DAYS",
    "SERVED_RPS",
    "SERVED_SERIES",
    "STEP_S",
    "BackfillSeries",
    "CountingProxy",
    "LiveExporter",
    "PromEnv",
    "PrometheusServer",
    "backfill_openmetrics",
    "counting_proxy",
    "find_binaries",
    "free_port",
    "running_prometheus",
    "serve_static",
    "served_backfill",
    "write_openmetrics",
]


def find_binaries() -> tuple[str, str] | None:
    """``(prometheus, promtool)`` paths from ``$PROMETHEUS_BIN``/``$PROMTOOL_BIN`` or PATH."""
    prom = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    tool = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool")
    if not prom or not tool:
        return None
    return prom, tool


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BackfillSeries:
    """One series to backfill.

    Args:
        name: metric family name; counters get ``_total`` appended to the sample name.
        kind: ``gauge`` or ``counter`` (a counter's values are cumulated by the writer
            from ``values``, which are per-step increments).
        timestamps_s: Unix seconds of each sample.
        values: gauge values or counter increments; ``NaN`` samples are skipped (a gap).
        labels: constant labels of the series.
    """

    name: str
    kind: str
    timestamps_s: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    labels: Mapping[str, str] = field(default_factory=dict)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + body + "}"


def write_openmetrics(series: Sequence[BackfillSeries], path: Path) -> int:
    """Write ``series`` as OpenMetrics text (``# TYPE``, ``_total``, seconds, ``# EOF``).

    Returns the number of samples written.
    """
    n = 0
    with path.open("w", encoding="utf-8") as f:
        by_family: dict[str, list[BackfillSeries]] = {}
        for s in series:
            by_family.setdefault(s.name, []).append(s)
        for family, members in by_family.items():
            kinds = {m.kind for m in members}
            if len(kinds) != 1 or next(iter(kinds)) not in ("gauge", "counter"):
                raise ValueError(f"family {family!r}: one kind, gauge or counter, got {kinds}")
            kind = members[0].kind
            f.write(f"# TYPE {family} {kind}\n")
            sample_name = f"{family}_total" if kind == "counter" else family
            for m in members:
                lab = _labels(m.labels)
                total = 0.0
                for t, v in zip(m.timestamps_s, m.values, strict=True):
                    if math.isnan(v):
                        continue
                    if kind == "counter":
                        total += float(v)
                        v = total
                    # OpenMetrics timestamps are seconds (Prometheus text format uses ms).
                    f.write(f"{sample_name}{lab} {float(v)!r} {float(t):.3f}\n")
                    n += 1
        f.write("# EOF\n")
    return n


def backfill_openmetrics(
    series: Sequence[BackfillSeries],
    storage_dir: Path,
    *,
    promtool: str,
    max_block_duration: str = "24h",
) -> int:
    """Turn ``series`` into TSDB blocks inside ``storage_dir`` (before the server starts).

    Returns the number of samples written. Raises ``RuntimeError`` with promtool's output
    when it refuses the input.
    """
    storage_dir.mkdir(parents=True, exist_ok=True)
    src = storage_dir.parent / f"{storage_dir.name}-backfill.om"
    n = write_openmetrics(series, src)
    proc = subprocess.run(
        [
            promtool, "tsdb", "create-blocks-from", "openmetrics",
            f"--max-block-duration={max_block_duration}", str(src), str(storage_dir),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"promtool backfill failed ({proc.returncode}): {proc.stderr[-2000:] or proc.stdout}"
        )
    return n


class PrometheusServer:
    """A ``prometheus`` process on a free loopback port; use as a context manager.

    Args:
        binary: path to ``prometheus``.
        storage_dir: TSDB folder (backfill into it before :meth:`start`).
        scrape_targets: ``host:port`` targets scraped every ``scrape_interval``.
        scrape_interval: e.g. ``"1s"``.
        extra_args: appended to the command line.
        config: a whole ``prometheus.yml`` to use instead of the generated one (scrape jobs
            with target labels, ``rule_files``); ``scrape_targets`` is then ignored.
    """

    def __init__(
        self,
        binary: str,
        storage_dir: Path,
        *,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        extra_args: Sequence[str] = (),
        config: str | None = None,
    ) -> None:
        self.binary = binary
        self.config = config
        self.storage_dir = storage_dir
        self.scrape_targets = list(scrape_targets)
        self.scrape_interval = scrape_interval
        self.extra_args = list(extra_args)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = storage_dir.parent / f"{storage_dir.name}-prometheus.log"

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        if self.config is not None:
            return self.config
        lines = [
            "global:",
            f"  scrape_interval: {self.scrape_interval}",
            f"  evaluation_interval: {self.scrape_interval}",
            "scrape_configs:",
        ]
        if self.scrape_targets:
            lines += [
                "  - job_name: live",
                f"    scrape_interval: {self.scrape_interval}",
                f"    scrape_timeout: {self.scrape_interval}",
                "    static_configs:",
                "      - targets: [" + ", ".join(f'"{t}"' for t in self.scrape_targets) + "]",
            ]
        else:
            lines[-1] = "scrape_configs: []"
        return "\n".join(lines) + "\n"

    def start(self, ready_timeout_s: float = 60.0) -> None:
        """Start the server and wait for ``/-/ready``; raises ``RuntimeError`` with its log."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.storage_dir.parent / f"{self.storage_dir.name}-prometheus.yml"
        cfg.write_text(self._config(), encoding="utf-8")
        self.port = free_port()
        cmd = [
            self.binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={self.storage_dir}",
            "--storage.tsdb.retention.time=100y",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
            *self.extra_args,
        ]
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.proc.returncode}): {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {ready_timeout_s} s: {self.log()}")

    def log(self) -> str:
        """The tail of the server's log."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, query: str, timeout_s: float = 20.0) -> None:
        """Poll an instant query until it returns at least one series."""
        import json
        import urllib.parse

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            q = urllib.parse.urlencode({"query": query})
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=2) as r,
            ):
                if json.load(r)["data"]["result"]:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{query!r} returned nothing within {timeout_s} s: {self.log()}")


@contextlib.contextmanager
def running_prometheus(
    storage_dir: Path,
    *,
    backfill: Sequence[BackfillSeries] = (),
    scrape_targets: Sequence[str] = (),
) -> Iterator[PrometheusServer]:
    """Backfill (if any), start, yield, stop. Raises ``FileNotFoundError`` without binaries."""
    bins = find_binaries()
    if bins is None:
        raise FileNotFoundError("prometheus/promtool not on PATH (run `make system-deps`)")
    prom, tool = bins
    if backfill:
        backfill_openmetrics(backfill, storage_dir, promtool=tool)
    server = PrometheusServer(prom, storage_dir, scrape_targets=scrape_targets)
    with server:
        yield server


#: Days of the NASA trace (1-min buckets) backfilled: 8 days = 11,520 points at 60 s, more
#: than Prometheus' 11,000-points limit, so one unchunked range query would be refused.
BACKFILL_DAYS = 8
STEP_S = 60.0


#: Served-request counters of each engine, backfilled every 15 s for 30 min under the
#: label ``fleet="backfill"``: name, kind, labels and req/s. The throughput each preset
#: must read is in :data:`SERVED_RPS`; the other statuses are demand, not throughput.
SERVED_SERIES: tuple[tuple[str, str, dict[str, str], float], ...] = (
    ("surgecast_worker_requests", "counter", {"status": "200", "pod": "w-0"}, 2.0),
    ("surgecast_worker_requests", "counter", {"status": "200", "pod": "w-1"}, 1.0),
    ("surgecast_worker_requests", "counter", {"status": "429", "pod": "w-0"}, 4.0),
    ("surgecast_worker_requests", "counter", {"status": "503", "pod": "w-1"}, 0.5),
    ("surgecast_worker_requests", "counter", {"status": "400", "pod": "w-1"}, 8.0),
    ("vllm:request_success", "counter", {"finished_reason": "stop"}, 2.0),
    ("vllm:request_success", "counter", {"finished_reason": "length"}, 0.5),
    # TGI's counters have no _total suffix: a cumulative series under the bare name
    ("tgi_request_success", "cumulative", {}, 1.5),
    ("tgi_request_count", "cumulative", {}, 2.5),
)
#: the throughput_rps each preset reads from :data:`SERVED_SERIES`
SERVED_RPS = {"surgecast": 3.0, "vllm": 2.5, "tgi": 1.5}


def served_backfill(end_s: float) -> list[BackfillSeries]:
    """:data:`SERVED_SERIES` as backfill whose newest sample is at ``end_s``."""
    ts = np.arange(end_s - 1800.0, end_s + 1.0, 15.0)
    out: list[BackfillSeries] = []
    for name, kind, labels, rps in SERVED_SERIES:
        inc = np.full_like(ts, rps * 15.0)
        if kind == "cumulative":  # written as is: a gauge-typed running total
            kind, inc = "gauge", np.cumsum(inc)
        out.append(BackfillSeries(name, kind, ts, inc, {**labels, "fleet": "backfill"}))
    return out


@dataclass
class LiveExporter:
    """A prometheus_client exporter on a loopback port, scraped by the fixture's Prometheus."""

    port: int
    requests: Any  # prometheus_client.Counter: the status="200" child
    waiting: Any  # prometheus_client.Gauge
    server: Any
    by_status: Any  # the labelled counter: by_status.labels("429").inc()


@dataclass
class PromEnv:
    """What the session's Prometheus holds."""

    server: PrometheusServer
    trace_ts: np.ndarray  # Unix seconds at which the trace's samples were placed
    trace_values: np.ndarray  # requests per minute (the NASA trace, unchanged)
    probe_end_s: float  # newest sample of ``surgecast_stale_probe``
    live: LiveExporter
    #: newest sample of the engines' served-request counters (``fleet="backfill"``)
    served_at_s: float = math.nan

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.contextmanager
def serve_static(
    body: bytes,
    content_type: str,
    *,
    on_get: Callable[[Any], None] | None = None,
    ssl_context: Any = None,
) -> Iterator[int]:
    """A loopback HTTP(S) server answering every GET with ``body``; yields its port.

    ``on_get(handler)`` sees each request first (e.g. to record its headers).
    """
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if on_get is not None:
                on_get(self)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    if ssl_context is not None:
        srv.socket = ssl_context.wrap_socket(srv.socket, server_side=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield int(srv.server_port)
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(timeout=5)


@dataclass
class CountingProxy:
    """What :func:`counting_proxy` saw: the PromQL of each ``/api/v1/query`` it got."""

    port: int
    queries: list[str] = field(default_factory=list)
    failing: tuple[int, int, str] = (0, 0, "")  # (requests left, status, query substring)
    delaying: tuple[int, float, str] = (0, 0.0, "")  # (requests left, seconds, substring)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, n: int, *, status: int, containing: str) -> None:
        """Answer the next ``n`` instant queries containing ``containing`` with ``status``
        and a Prometheus-style error body instead of forwarding them."""
        self.failing = (n, status, containing)

    def delay_next(self, n: int, *, seconds: float, containing: str) -> None:
        """Hold the next ``n`` instant queries containing ``containing`` for ``seconds``
        before forwarding them (a query Prometheus is slow to answer)."""
        self.delaying = (n, seconds, containing)


@contextlib.contextmanager
def counting_proxy(upstream: str) -> Iterator[CountingProxy]:
    """A loopback HTTP proxy in front of ``upstream`` (a real Prometheus) that records the
    ``query`` parameter of every instant query and passes requests and answers through,
    error statuses included (unless told to fail some: :meth:`CountingProxy.fail_next`)."""
    import http.server
    import json
    import threading
    import urllib.parse

    seen = CountingProxy(0)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            left, fail_status, containing = seen.failing
            if url.path == "/api/v1/query":
                query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
                seen.queries.append(query)
                slow, secs, slow_text = seen.delaying
                if slow > 0 and slow_text in query:
                    seen.delaying = (slow - 1, secs, slow_text)
                    time.sleep(secs)
                if left > 0 and containing in query:
                    seen.failing = (left - 1, fail_status, containing)
                    self._answer(fail_status, "application/json", json.dumps({
                        "status": "error",  # Prometheus' errorType for the status
                        "errorType": {400: "bad_data", 422: "execution",
                                      503: "timeout"}.get(fail_status, "internal"),
                        "error": f"injected by counting_proxy ({fail_status})",
                    }).encode())
                    return
            try:
                with urllib.request.urlopen(upstream + self.path, timeout=30) as r:
                    status, ctype, body = r.status, r.headers.get("Content-Type"), r.read()
            except urllib.error.HTTPError as e:
                with e:
                    status, ctype, body = e.code, e.headers.get("Content-Type"), e.read()
            self._answer(status, ctype or "application/json", body)

        def _answer(self, status: int, ctype: str, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a delayed answer after its timeout)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    seen.port = int(srv.server_port)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield seen
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(timeout=5)
