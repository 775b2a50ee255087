"""PrometheusSource against a real Prometheus: backfilled trace history, a live target."""

from __future__ import annotations

import time

import numpy as np
import pytest
from prom_fixture import STEP_S, PromEnv, serve_static

from autoscaler.adapters.prometheus import (
    MAX_POINTS,
    PRESETS,
    PrometheusSource,
    QuerySet,
    preset,
)
from autoscaler.errors import ConfigError, MetricsUnavailable
from autoscaler.ports import MetricsSource

GAUGE = 'surgecast_trace_requests_per_minute{trace="nasa_http_1995"}'


def test_is_a_metrics_source(prom: PromEnv) -> None:
    assert isinstance(PrometheusSource(prom.url), MetricsSource)


def test_history_of_backfilled_trace_equals_the_trace(prom: PromEnv) -> None:
    """8 days at 60 s = 11,520 points: more than one query may hold, so chunking is needed."""
    src = PrometheusSource(prom.url, queries=QuerySet(demand_rps=f"sum({GAUGE})"))
    n = len(prom.trace_ts)
    assert n > MAX_POINTS
    got = src.history(prom.trace_ts[0], prom.trace_ts[-1] + STEP_S, STEP_S)
    assert got.start_s == prom.trace_ts[0]
    assert len(got) == n
    np.testing.assert_array_equal(got.values, prom.trace_values)


def test_unchunked_query_is_refused_by_real_prometheus(prom: PromEnv) -> None:
    """The limit is real: the same range in one query is refused (so chunking matters)."""
    from prometheus_api_client import PrometheusApiClientException, PrometheusConnect

    client = PrometheusConnect(prom.url)
    from datetime import UTC, datetime

    with pytest.raises(PrometheusApiClientException, match=r"11,000|11000"):
        client.custom_query_range(
            f"sum({GAUGE})",
            start_time=datetime.fromtimestamp(prom.trace_ts[0], tz=UTC),
            end_time=datetime.fromtimestamp(prom.trace_ts[-1], tz=UTC),
            step="60",
        )


def test_small_chunks_give_the_same_series(prom: PromEnv) -> None:
    src = PrometheusSource(prom.url, queries=QuerySet(demand_rps=f"sum({GAUGE})"),
                           max_points=97)
    a, b = prom.trace_ts[100], prom.trace_ts[1100]
    got = src.history(a, b, STEP_S)
    np.testing.assert_array_equal(got.values, prom.trace_values[100:1100])


def test_backfilled_counter_reads_back_as_cumulative_trace(prom: PromEnv) -> None:
    """The OpenMetrics counter (``_total``) holds the running sum of the trace."""
    src = PrometheusSource(prom.url)
    q = 'surgecast_trace_requests_total{trace="nasa_http_1995"}'
    got = src.range_series(q, prom.trace_ts[0], prom.trace_ts[2000], STEP_S, kind="gauge")
    np.testing.assert_array_equal(np.diff(got.values), prom.trace_values[1:2000])


def test_history_outside_data_is_missing_not_zero(prom: PromEnv) -> None:
    src = PrometheusSource(prom.url, queries=QuerySet(demand_rps=f"sum({GAUGE})"))
    t0 = prom.trace_ts[0] - 3600.0
    got = src.history(t0, prom.trace_ts[0] + 600.0, STEP_S)
    assert np.isnan(got.values[:60]).all()  # before the first sample: missing, not 0
    np.testing.assert_array_equal(got.values[60:], prom.trace_values[:10])


def test_instant_query_at_now_s_reads_backfilled_value(prom: PromEnv) -> None:
    src = PrometheusSource(prom.url, queries=QuerySet(demand_rps=f"sum({GAUGE})"))
    i = 5000
    sig = src.signals(float(prom.trace_ts[i]))
    assert sig.demand_rps == prom.trace_values[i]
    assert sig.errors == {}


def test_live_target_rate(prom: PromEnv) -> None:
    """A live prometheus_client exporter, scraped every second, read back with rate()."""
    src = PrometheusSource(prom.url, queries=preset("surgecast", gpu="worker"), window="5s")
    prom.live.waiting.set(7)
    prom.server.wait_for("surgecast_worker_requests_total", timeout_s=20)
    # 20 req/s for ~4 s, in 0.1-s steps
    t_end = time.monotonic() + 4.0
    while time.monotonic() < t_end:
        prom.live.requests.inc(2)
        time.sleep(0.1)
    time.sleep(1.2)  # one more scrape
    sig = src.signals(time.time())
    assert sig.demand_rps is not None, sig.errors
    assert 12.0 < sig.demand_rps < 26.0, sig.demand_rps
    assert sig.queue_depth == 7.0
    assert sig.observed_at_s is not None and sig.staleness_s() is not None
    assert sig.staleness_s() < 5.0  # type: ignore[operator]
    # metrics the live target does not export are missing, never zero
    assert sig.running is None and "running" in sig.errors
    assert sig.gpu_util_ratio is None and "no series" in sig.errors["gpu_util_ratio"]
    assert sig.tokens_per_s is None


def test_engine_presets_read_a_real_scrape(prom: PromEnv) -> None:
    """vLLM, TGI and DCGM names as exported by a live target, through the presets."""
    prom.server.wait_for("vllm:num_requests_waiting", timeout_s=20)
    now = time.time()
    vllm = PrometheusSource(prom.url, queries=preset("vllm", gpu="dcgm")).signals(now)
    assert vllm.queue_depth == 3.0
    assert vllm.gpu_util_ratio == pytest.approx(0.63)
    assert vllm.demand_rps is None and "missing data" in vllm.errors["demand_rps"]
    tgi = PrometheusSource(prom.url, queries=preset("tgi", gpu=None)).signals(now)
    assert tgi.queue_depth == 2.0 and tgi.gpu_util_ratio is None
    narrow = PrometheusSource(prom.url, queries=preset("vllm", gpu="dcgm"),
                              gpu_selector='pod="other"').signals(now)
    assert narrow.gpu_util_ratio is None  # selector matches nothing: missing, not zero


def test_empty_query_is_missing_not_zero(prom: PromEnv) -> None:
    src = PrometheusSource(
        prom.url,
        queries=QuerySet(demand_rps='sum(rate(no_such_metric_total{job="x"}[1m]))',
                         queue_depth=f"sum({GAUGE})"),
    )
    sig = src.signals(float(prom.trace_ts[10]))
    assert sig.demand_rps is None
    assert "missing data, not zero" in sig.errors["demand_rps"]
    assert "no_such_metric_total" in sig.errors["demand_rps"]
    assert sig.queue_depth == prom.trace_values[10]


def test_bad_promql_is_a_per_signal_error(prom: PromEnv) -> None:
    src = PrometheusSource(
        prom.url, queries=QuerySet(demand_rps="sum(rate(", queue_depth=f"sum({GAUGE})")
    )
    sig = src.signals(float(prom.trace_ts[10]))
    assert sig.demand_rps is None and "400" in sig.errors["demand_rps"]
    assert sig.queue_depth is not None


def test_every_query_failing_is_unavailable(prom: PromEnv) -> None:
    src = PrometheusSource(prom.url, queries=QuerySet(demand_rps="sum(rate(", running=")"))
    with pytest.raises(MetricsUnavailable, match="every query"):
        src.signals(time.time())


def test_stale_data_is_detected(prom: PromEnv) -> None:
    q = QuerySet(demand_rps="sum(surgecast_stale_probe)",
                 freshness="max(timestamp(surgecast_stale_probe))")
    src = PrometheusSource(prom.url, queries=q, max_staleness_s=60)
    fresh = src.signals(prom.probe_end_s + 10.0)
    assert fresh.demand_rps == 1.0 and fresh.observed_at_s == prom.probe_end_s
    stale = src.signals(prom.probe_end_s + 200.0)  # within the 5-min lookback: still answers
    assert stale.staleness_s() == pytest.approx(200.0)
    assert "200 s old" in stale.errors["staleness"]
    assert stale.demand_rps is None  # stale demand is not acted on
    kept = PrometheusSource(prom.url, queries=q, max_staleness_s=60, stale_as_missing=False)
    assert kept.signals(prom.probe_end_s + 200.0).demand_rps == 1.0
    gone = src.signals(prom.probe_end_s + 400.0)  # past the lookback: missing
    assert gone.demand_rps is None and gone.observed_at_s is None


def test_prometheus_down_is_unavailable(dead_url: str) -> None:
    src = PrometheusSource(dead_url, timeout_s=1.0, retries=0)
    with pytest.raises(MetricsUnavailable, match="unreachable") as ei:
        src.signals(time.time())
    assert dead_url in str(ei.value)
    with pytest.raises(MetricsUnavailable, match="unreachable"):
        src.history(0, 3600, 60)


def test_timeout_is_unavailable() -> None:
    """A server that accepts but never answers: the timeout fires."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        src = PrometheusSource(url, timeout_s=0.5, retries=0)
        t = time.monotonic()
        with pytest.raises(MetricsUnavailable, match=r"did not answer within 0\.5 s"):
            src.signals(time.time())
        assert time.monotonic() - t < 5


def test_bearer_token_file_and_basic_auth_are_sent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Auth headers reach the server (a local HTTP server records them)."""
    import json

    seen: list[str | None] = []
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, "3"]}]}}).encode()
    with serve_static(body, "application/json",
                      on_get=lambda h: seen.append(h.headers.get("Authorization"))) as port:
        url = f"http://127.0.0.1:{port}"
        tok = tmp_path / "token"
        tok.write_text("abc\n")
        q = QuerySet(demand_rps="up")
        PrometheusSource(url, queries=q, bearer_token_file=tok).signals(1.0)
        tok.write_text("rotated")
        PrometheusSource(url, queries=q, bearer_token_file=tok).signals(1.0)
        PrometheusSource(url, queries=q, basic_auth=("u", "p")).signals(1.0)
        assert seen == ["Bearer abc", "Bearer rotated", "Basic dTpw"]


def test_presets_render_and_validate() -> None:
    for name in PRESETS:
        q = preset(name, gpu="dcgm").render(selector='namespace="llm"', gpu_selector="",
                                            window="2m")
        assert all("$" not in v for v in q.values())
        assert "DCGM_FI_DEV_GPU_UTIL" in q["gpu_util_ratio"]
    assert "vllm:num_requests_waiting" in preset("vllm").render(
        selector="", gpu_selector="", window="1m")["queue_depth"]
    with pytest.raises(ConfigError, match="unknown engine"):
        preset("triton")
    with pytest.raises(ConfigError, match="placeholder"):
        PrometheusSource("http://x:9090", queries=QuerySet(demand_rps="rate(x[$win])"))
    with pytest.raises(ConfigError, match="http"):
        PrometheusSource("prometheus:9090")
    with pytest.raises(ConfigError, match="max_points"):
        PrometheusSource("http://x:9090", max_points=20_000)


def test_custom_ca_and_insecure_tls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """HTTPS with a self-signed certificate: trusted via ca_file, refused without it."""
    import json
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )

    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, "4"]}]}}).encode()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    with serve_static(body, "application/json", ssl_context=ctx) as port:
        url = f"https://127.0.0.1:{port}"
        q = QuerySet(demand_rps="up")
        assert PrometheusSource(url, queries=q, ca_file=cert).signals(1.0).demand_rps == 4.0
        with pytest.raises(MetricsUnavailable, match=r"SSL|certificate"):
            PrometheusSource(url, queries=q, retries=0).signals(1.0)
        insecure = PrometheusSource(url, queries=q, insecure_skip_verify=True)
        assert insecure.signals(1.0).demand_rps == 4.0
