"""PrometheusSource against a real Prometheus: backfilled trace history, a live target."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prom_fixture import (
    SERVED_RPS,
    STEP_S,
    PromEnv,
    counting_proxy,
    find_binaries,
    serve_static,
)

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
    """A live prometheus_client exporter, scraped every second, read back with rate().

    Demand is what the fleet must serve: 2xx, 5xx, 429 (refused for want of capacity) and
    499 (the client left) count; the other client errors (400, 404) do not."""
    src = PrometheusSource(prom.url, queries=preset("surgecast", gpu="worker"), window="5s")
    prom.live.waiting.set(7)
    prom.server.wait_for("surgecast_worker_requests_total", timeout_s=20)
    # for ~4 s, in 0.1-s steps: 20 req/s of demand (10 of them 429s), 30 req/s of 4xx
    by = prom.live.by_status
    t_end = time.monotonic() + 4.0
    while time.monotonic() < t_end:
        prom.live.requests.inc(0.5)
        by.labels("429").inc(1.0)
        by.labels("499").inc(0.25)
        by.labels("503").inc(0.25)
        by.labels("400").inc(2.0)
        by.labels("404").inc(1.0)
        time.sleep(0.1)
    time.sleep(1.2)  # one more scrape
    now = time.time()
    sig = src.signals(now)
    assert sig.demand_rps is not None, sig.errors
    assert 12.0 < sig.demand_rps < 26.0, sig.demand_rps  # 50 with the 4xx, 10 without 429

    def rate(statuses: str) -> float:
        return src.query_at(
            f'sum(rate(surgecast_worker_requests_total{{status=~"{statuses}"}}[5s]))', now)[0]

    assert sig.demand_rps == pytest.approx(rate("200|429|499|503"))
    assert rate("429") > 0.3 * sig.demand_rps and rate("400|404") > sig.demand_rps
    assert sig.queue_depth == 7.0
    assert sig.observed_at_s is not None and sig.staleness_s() is not None
    assert sig.staleness_s() < 5.0  # type: ignore[operator]
    # metrics the live target does not export are missing, never zero
    assert sig.running is None and "running" in sig.errors
    assert sig.gpu_util_ratio is None and "no series" in sig.errors["gpu_util_ratio"]
    assert sig.tokens_per_s is None


def test_live_demand_adds_the_queue_growth_to_what_finished(prom: PromEnv) -> None:
    """A live exporter scraped every second: 10 req/s finish while the waiting queue gains
    4 a second, so 14 req/s arrive; the throughput stays what finished."""
    src = PrometheusSource(prom.url, queries=preset("surgecast", gpu=None), window="5s")
    prom.server.wait_for("surgecast_worker_num_requests_waiting", timeout_s=20)
    t0 = time.monotonic()
    queue = 7.0
    while (elapsed := time.monotonic() - t0) < 6.5:
        prom.live.requests.inc(1.0)
        queue = 7.0 + 4.0 * elapsed
        prom.live.waiting.set(queue)
        time.sleep(0.1)
    sig = src.signals(time.time())
    prom.live.waiting.set(7)  # as the other live tests expect it
    assert sig.demand_rps is not None and sig.throughput_rps is not None, sig.errors
    assert sig.throughput_rps == pytest.approx(10.0, rel=0.25)
    growth = sig.demand_rps - sig.throughput_rps
    assert growth == pytest.approx(4.0, rel=0.25), (sig.demand_rps, sig.throughput_rps)
    assert sig.queue_depth is not None and 20.0 < sig.queue_depth <= queue


def test_engine_presets_read_a_real_scrape(prom: PromEnv) -> None:
    """vLLM, TGI and DCGM names as exported by a live target, through the presets."""
    prom.server.wait_for("vllm:num_requests_waiting", timeout_s=20)
    now = time.time()
    vllm = PrometheusSource(prom.url, queries=preset("vllm", gpu="dcgm")).signals(now)
    assert vllm.queue_depth == 3.0
    assert vllm.gpu_util_ratio == pytest.approx(0.63)
    assert vllm.demand_rps is None and "missing data" in vllm.errors["demand_rps"]
    # no served-request series: no capacity refinement, the other signals still read
    assert vllm.throughput_rps is None and "missing data" in vllm.errors["throughput_rps"]
    tgi = PrometheusSource(prom.url, queries=preset("tgi", gpu=None)).signals(now)
    assert tgi.queue_depth == 2.0 and tgi.gpu_util_ratio is None
    assert tgi.throughput_rps is None and "tgi_request_success" in tgi.errors["throughput_rps"]
    narrow = PrometheusSource(prom.url, queries=preset("vllm", gpu="dcgm"),
                              gpu_selector='pod="other"').signals(now)
    assert narrow.gpu_util_ratio is None  # selector matches nothing: missing, not zero


@pytest.mark.parametrize("engine", sorted(SERVED_RPS))
def test_each_preset_reads_the_served_throughput(prom: PromEnv, engine: str) -> None:
    """``throughput_rps`` is the requests the pods served (the worker's 2xx, vLLM's
    ``request_success_total``, TGI's ``tgi_request_success``), backfilled at known rates
    and read in the tick's one combined query; one query per signal reads the same."""
    now = prom.served_at_s
    kw: dict[str, Any] = {"queries": preset(engine, gpu=None), "selector": 'fleet="backfill"'}
    src = PrometheusSource(prom.url, **kw)
    sig = src.signals(now)
    assert sig.throughput_rps == pytest.approx(SERVED_RPS[engine]), sig.errors
    assert "throughput_rps" not in sig.errors and src.queries_last_tick == 1
    each = PrometheusSource(prom.url, combine_queries=False, **kw).signals(now)
    assert each.throughput_rps == sig.throughput_rps
    # demand counts what the fleet had to serve: the worker's 429s and 5xx too (not its
    # 400s); vLLM has only completions; TGI counts every request
    want = {"surgecast": 2.0 + 1.0 + 4.0 + 0.5, "vllm": 2.5, "tgi": 2.5}[engine]
    assert sig.demand_rps == pytest.approx(want)


def test_a_user_query_overrides_the_throughput(prom: PromEnv) -> None:
    q = preset("surgecast", gpu=None, throughput_rps=(
        'sum(rate(surgecast_worker_requests_total{status="200",pod="w-0",$selector}'
        "[$window]))"))
    sig = PrometheusSource(prom.url, queries=q, selector='fleet="backfill"').signals(
        prom.served_at_s)
    assert sig.throughput_rps == pytest.approx(2.0)


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


@pytest.mark.parametrize("combine", [True, False])
def test_negative_values_are_missing_not_a_scale_down(prom: PromEnv, combine: bool) -> None:
    """A demand query answering -5 (e.g. a difference) once scaled 10 replicas to 1: no
    rate, count or ratio can be negative, so the value is missing (the policy holds), with
    the reason and the query in the errors; zero and positive values pass."""
    src = PrometheusSource(prom.url, combine_queries=combine, queries=QuerySet(
        demand_rps="vector(-5)", tokens_per_s=f"-1 * sum({GAUGE})", queue_depth="vector(0)",
        running=f"sum({GAUGE})", gpu_util_ratio="vector(-0.25)"))
    sig = src.signals(float(prom.trace_ts[10]))
    assert (sig.demand_rps, sig.tokens_per_s, sig.gpu_util_ratio) == (None, None, None)
    assert sig.errors["demand_rps"].startswith("value is -5, negative")
    assert sig.errors["demand_rps"].endswith(": missing: vector(-5)")
    assert "-1 * sum(" in sig.errors["tokens_per_s"]
    assert sig.queue_depth == 0.0 and sig.running == prom.trace_values[10]
    assert set(sig.errors) == {"demand_rps", "tokens_per_s", "gpu_util_ratio"}


def test_negative_history_is_refused(prom: PromEnv) -> None:
    """A Series cannot hold a negative demand: the history fetch fails (the runner keeps the
    model it has and says so) instead of fitting on it."""
    src = PrometheusSource(prom.url, queries=QuerySet(demand_rps=f"sum({GAUGE})",
                                                      history=f"-1 * sum({GAUGE})"))
    with pytest.raises(MetricsUnavailable, match="non-negative"):
        src.history(prom.trace_ts[0], prom.trace_ts[0] + 600.0, STEP_S)


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
                 throughput_rps="sum(surgecast_stale_probe) * 2",
                 freshness="max(timestamp(surgecast_stale_probe))")
    src = PrometheusSource(prom.url, queries=q, max_staleness_s=60)
    fresh = src.signals(prom.probe_end_s + 10.0)
    assert fresh.demand_rps == 1.0 and fresh.observed_at_s == prom.probe_end_s
    assert fresh.throughput_rps == 2.0
    stale = src.signals(prom.probe_end_s + 200.0)  # within the 5-min lookback: still answers
    assert stale.staleness_s() == pytest.approx(200.0)
    assert "200 s old" in stale.errors["staleness"]
    assert stale.demand_rps is None  # stale demand is not acted on
    assert stale.throughput_rps is None  # nor is a stale capacity measurement
    assert stale.errors["throughput_rps"].startswith("stale: ")
    kept = PrometheusSource(prom.url, queries=q, max_staleness_s=60, stale_as_missing=False)
    assert kept.signals(prom.probe_end_s + 200.0).demand_rps == 1.0
    gone = src.signals(prom.probe_end_s + 400.0)  # past the lookback: missing
    assert gone.demand_rps is None and gone.observed_at_s is None


@pytest.mark.parametrize("combine", [True, False])
def test_prometheus_down_is_unavailable(dead_url: str, combine: bool) -> None:
    src = PrometheusSource(dead_url, timeout_s=1.0, retries=0, combine_queries=combine)
    assert src.combined_active is combine
    with pytest.raises(MetricsUnavailable, match="unreachable") as ei:
        src.signals(time.time())
    assert dead_url in str(ei.value)
    # the first query's failure ends the tick; a failed combined query is followed by
    # one single query, to tell a query too heavy for Prometheus from Prometheus down
    assert src.queries_last_tick == 1 + combine
    assert src.combined_active is combine  # down: not a reason to stop combining
    with pytest.raises(MetricsUnavailable, match="unreachable"):
        src.history(0, 3600, 60)


@pytest.mark.parametrize(("body", "content_type", "message"), [
    # JSON without "data" (a proxy, Grafana's API) used to escape as a KeyError
    (b'{"status": "success"}', "application/json", "answered without a Prometheus query"),
    (b'{"foo": 1}', "application/json", "answered without a Prometheus query"),
    (b'[1, 2]', "application/json", "answered without a Prometheus query"),
    (b"<html>Grafana</html>", "text/html", "JSONDecodeError"),
])
def test_an_answer_that_is_not_prometheus_is_unavailable(
        body: bytes, content_type: str, message: str) -> None:
    with serve_static(body, content_type) as port:
        url = f"http://127.0.0.1:{port}"
        src = PrometheusSource(url, timeout_s=2.0, retries=0, combine_queries=False)
        with pytest.raises(MetricsUnavailable, match=message):
            src.signals(time.time())
        with pytest.raises(MetricsUnavailable, match=message):
            src.history(0, 3600, 60)


def test_timeout_is_unavailable() -> None:
    """A server that accepts but never answers: the timeout fires (combined query too)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        src = PrometheusSource(url, timeout_s=0.5, retries=0)
        assert src.combined_active
        t = time.monotonic()
        with pytest.raises(MetricsUnavailable, match=r"did not answer within 0\.5 s"):
            src.signals(time.time())
        assert time.monotonic() - t < 5
        assert src.combined_active


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
    with pytest.raises(ConfigError, match="combine_retry_s"):
        PrometheusSource("http://x:9090", combine_retry_s=float("nan"))


_REQUESTS = "surgecast_worker_requests_total"


@pytest.mark.parametrize(("selector", "want_rps"), [("", 3.5), ('namespace="llm"', 2.0)])
def test_surgecast_demand_counts_what_the_fleet_must_serve(
    tmp_path: Path, selector: str, want_rps: float
) -> None:
    """The preset's demand query, rendered with and without matchers, evaluated by
    Prometheus' own engine (``promtool test rules``) on counters of every kind of status:
    2xx, 5xx, 429 (refused for want of capacity: unmet demand) and 499 (the client left)
    count; 400, 401, 404 and 413 (the client's mistake) do not."""
    bins = find_binaries()
    if bins is None:
        pytest.skip("prometheus/promtool not found on PATH: run `make system-deps` (Debian)")
    per_min = {"200": 60, "201": 6, "500": 6, "503": 6, "429": 30, "499": 12,
               "400": 600, "401": 60, "404": 60, "413": 60}
    series = [{"series": f'{_REQUESTS}{{namespace="llm",endpoint="/v1/completions",'
                         f'status="{code}"}}', "values": f"0+{n}x20"}
              for code, n in per_min.items()]
    series.append({"series": f'{_REQUESTS}{{namespace="other",status="200"}}',
                   "values": "0+90x20"})
    expr = preset("surgecast").render(selector=selector, gpu_selector="",
                                      window="5m")["demand_rps"]
    tests = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        # rounded: the sum's order of addition varies (3.5000000000000004 once)
        "promql_expr_test": [{"expr": f"round({expr}, 0.001)", "eval_time": "10m",
                              "exp_samples": [{"labels": "{}", "value": want_rps}]}]}]}
    path = tmp_path / "demand_test.yml"
    path.write_text(json.dumps(tests))  # JSON is YAML
    out = subprocess.run([bins[1], "test", "rules", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, expr + "\n" + out.stdout + out.stderr


#: per engine: its requests counter (one series) and its waiting-queue gauge; TGI counts
#: requests as they arrive (``tgi_request_count`` at the top of its handlers), so its
#: demand adds no queue growth
_FINISHED = {
    "surgecast": (f'{_REQUESTS}{{status="200"}}', "surgecast_worker_num_requests_waiting"),
    "vllm": ("vllm:request_success_total", "vllm:num_requests_waiting"),
    "tgi": ("tgi_request_count", "tgi_queue_size"),
}
_ADDS_GROWTH = {"surgecast": True, "vllm": True, "tgi": False}


@pytest.mark.parametrize("engine", sorted(_FINISHED))
@pytest.mark.parametrize(
    ("queue", "want_rps"),
    [("0+30x20", 1.5), ("5x20", 1.0), (None, 1.0), ("2400-120x20", 0.0)],
    ids=["growing", "flat", "not-exported", "draining-fast"],
)
def test_demand_is_what_finished_plus_what_the_queue_gained(
    tmp_path: Path, engine: str, queue: str | None, want_rps: float
) -> None:
    """Our worker and vLLM count a request when it finishes: 1 req/s finishing while the
    queue gains 30 a minute means 1.5 req/s arrived. A flat or unexported queue adds
    nothing; a fitted slope steeper than the finished rate (the queue draining by more
    than finished) is clamped at 0, not a negative demand (which would read as missing).
    TGI's counter already counts arrivals: 1 req/s whatever its queue does."""
    bins = find_binaries()
    if bins is None:
        pytest.skip("prometheus/promtool not found on PATH: run `make system-deps` (Debian)")
    counter, gauge = _FINISHED[engine]
    if not _ADDS_GROWTH[engine]:
        want_rps = 1.0
    series = [{"series": counter, "values": "0+60x20"}]
    if queue is not None:
        series.append({"series": gauge, "values": queue})
    expr = preset(engine).render(selector="", gpu_selector="", window="5m")["demand_rps"]
    tests = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{"expr": f"round({expr}, 0.001)", "eval_time": "10m",
                              "exp_samples": [{"labels": "{}", "value": want_rps}]}]}]}
    path = tmp_path / "growth_test.yml"
    path.write_text(json.dumps(tests))
    out = subprocess.run([bins[1], "test", "rules", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, expr + "\n" + out.stdout + out.stderr


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


# ------------------------------------------------------------------ one combined query
_TOTAL = 'surgecast_trace_requests_total{trace="nasa_http_1995"}'
_TRACE_MIX = QuerySet(
    demand_rps=f"sum({GAUGE})",
    tokens_per_s='sum(rate(no_such_metric_total{job="x"}[1m]))',  # matches nothing
    queue_depth=GAUGE,  # raw series: labels {__name__, trace} ...
    running=_TOTAL,  # ... the same but __name__, which plain `or` would treat as one
    gpu_util_ratio="vector(0) / 0",  # NaN
    freshness=f"max(timestamp({GAUGE}))  # a comment: ends at the wrapper's newline",
)
_TWO_SERIES = QuerySet(
    demand_rps='{__name__=~"surgecast_trace_requests_per_minute|surgecast_trace_requests_total"}',
    queue_depth=f"sum({GAUGE})",
    running=f"sum by (trace) ({GAUGE}) * 2",
)
_STALE = QuerySet(demand_rps="sum(surgecast_stale_probe)",
                  freshness="max(timestamp(surgecast_stale_probe))")


def _trace_now(prom: PromEnv) -> float:
    return float(prom.trace_ts[5000])


def _live_now(prom: PromEnv) -> float:
    """A moment every live sample of which has been ingested (1-s scrapes)."""
    prom.server.wait_for("vllm:num_requests_waiting", timeout_s=20)
    prom.server.wait_for("surgecast_worker_requests_total", timeout_s=20)
    return time.time() - 5.0


@pytest.mark.parametrize(("queries", "kw", "when"), [
    pytest.param(preset("surgecast", gpu="worker"), {"window": "5s"}, _live_now,
                 id="surgecast-live"),
    pytest.param(preset("vllm", gpu="dcgm"), {}, _live_now, id="vllm-dcgm"),
    pytest.param(preset("vllm", gpu="dcgm"), {"gpu_selector": 'pod="other"'}, _live_now,
                 id="vllm-narrow-gpu"),
    pytest.param(preset("tgi", gpu=None), {}, _live_now, id="tgi"),
    pytest.param(_TRACE_MIX, {}, _trace_now, id="missing-nan-raw-comment"),
    pytest.param(_TWO_SERIES, {}, _trace_now, id="two-series"),
    pytest.param(_STALE, {}, lambda p: p.probe_end_s + 200.0, id="stale"),
])
def test_combined_query_gives_the_same_signals_as_one_per_signal(
    prom: PromEnv, queries: QuerySet, kw: dict[str, str], when: Callable[[PromEnv], float]
) -> None:
    now = when(prom)
    combined = PrometheusSource(prom.url, queries=queries, **kw)
    each = PrometheusSource(prom.url, queries=queries, combine_queries=False, **kw)
    assert combined.combined_active and not each.combined_active
    got, want = combined.signals(now), each.signals(now)
    assert got == want  # values, observed_at_s and errors (their texts) alike
    assert combined.queries_last_tick == 1 and combined.combined_active
    assert each.queries_last_tick == len(set(each.rendered) - {"history"}) > 1


def test_combined_query_keeps_every_signal_apart(prom: PromEnv) -> None:
    """What the equality above compares is what per-signal queries give (not all missing)."""
    i = 5000
    sig = PrometheusSource(prom.url, queries=_TRACE_MIX).signals(_trace_now(prom))
    assert sig.demand_rps == sig.queue_depth == prom.trace_values[i]
    assert sig.running == prom.trace_values[: i + 1].sum()  # not dropped by `or`
    assert sig.observed_at_s == prom.trace_ts[i]
    assert sig.tokens_per_s is None and "missing data, not zero" in sig.errors["tokens_per_s"]
    assert sig.gpu_util_ratio is None and sig.errors["gpu_util_ratio"].startswith(
        "value is nan (e.g. 0/0): missing: vector(0) / 0")
    assert set(sig.errors) == {"tokens_per_s", "gpu_util_ratio"}
    two = PrometheusSource(prom.url, queries=_TWO_SERIES).signals(_trace_now(prom))
    assert two.demand_rps is None
    assert two.errors["demand_rps"].startswith(
        "returned 2 series (e.g. {'__name__': 'surgecast_trace_requests_per_minute', "
        "'trace': 'nasa_http_1995'}); aggregate it in PromQL (sum/avg): {__name__=~")
    assert two.running == 2 * prom.trace_values[i]


def test_one_http_query_per_tick(prom: PromEnv) -> None:
    """Counted on the wire by a proxy in front of the real Prometheus."""
    with counting_proxy(prom.url) as proxy:
        src = PrometheusSource(proxy.url, queries=preset("surgecast", gpu="dcgm"))
        for k in range(3):
            src.signals(_trace_now(prom) + 60.0 * k)
            assert src.queries_last_tick == 1
        assert len(proxy.queries) == 3
        assert all(q.count("surgecast_signal") == 7 for q in proxy.queries)
        proxy.queries.clear()
        PrometheusSource(proxy.url, queries=preset("surgecast", gpu="dcgm"),
                         combine_queries=False).signals(_trace_now(prom))
        assert len(proxy.queries) == 7 and not any("surgecast_signal" in q
                                                   for q in proxy.queries)


@pytest.mark.parametrize(("bad", "blame"), [
    ("sum(rate(x))", "demand_rps (refused)"),  # bad PromQL (brackets close)
    (f"scalar(sum({GAUGE}))", "demand_rps (not an instant vector)"),  # fine alone
])
def test_refused_combined_query_falls_back_then_retries(
    prom: PromEnv, caplog: pytest.LogCaptureFixture, bad: str, blame: str
) -> None:
    """Per signal until ``combine_retry_s`` has passed (on ``now_s``); the retry is refused
    again, so that tick falls back at once (1 + N queries) and the wait starts again."""
    q = QuerySet(demand_rps=bad, queue_depth=f"sum({GAUGE})", running=f"sum({_TOTAL})")
    now = _trace_now(prom)
    each = PrometheusSource(prom.url, queries=q, combine_queries=False)
    want = each.signals(now)
    with counting_proxy(prom.url) as proxy, caplog.at_level(logging.DEBUG):
        src = PrometheusSource(proxy.url, queries=q, combine_retry_s=300.0)
        got = src.signals(now)
        assert got == want  # the same per-signal errors; the others still come through
        assert got.queue_depth == prom.trace_values[5000] and got.running is not None
        assert len(proxy.queries) == 1 + 3 and "surgecast_signal" in proxy.queries[0]
        assert src.queries_last_tick == 4 and not src.combined_active
        assert src.combine_retry_at_s == now + 300.0
        warned = [r for r in caplog.records if "separately" in r.getMessage()]
        assert [r.levelno for r in warned] == [logging.WARNING], warned
        assert blame in warned[0].getMessage() and "300 s" in warned[0].getMessage()
        for dt in (0.0, 60.0, 299.9):  # before combine_retry_s: N per-signal queries
            proxy.queries.clear()
            assert src.signals(now + dt) == each.signals(now + dt)
            assert len(proxy.queries) == 3 and src.queries_last_tick == 3
            assert not any("surgecast_signal" in q for q in proxy.queries)
        proxy.queries.clear()
        caplog.clear()
        assert src.signals(now + 300.0) == each.signals(now + 300.0)  # the retry, refused
        assert len(proxy.queries) == 1 + 3 and "surgecast_signal" in proxy.queries[0]
        assert src.queries_last_tick == 4 and not src.combined_active
        assert src.combine_retry_at_s == now + 600.0  # the wait starts again
        again = [r for r in caplog.records if "separately" in r.getMessage()]
        assert [r.levelno for r in again] == [logging.DEBUG], again
        assert blame in again[0].getMessage()
        proxy.queries.clear()
        src.signals(now + 599.0)
        assert len(proxy.queries) == 3
    if bad.startswith("sum(rate"):
        assert got.demand_rps is None and "400" in got.errors["demand_rps"]
        assert got.errors["demand_rps"].endswith(f": {bad}")
    else:
        assert got.demand_rps == prom.trace_values[5000] and "demand_rps" not in got.errors


def test_combined_query_comes_back_after_a_passing_error(
    prom: PromEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """Prometheus answers the combined query with HTTP 500 once (as during a rollout): per
    signal until the retry, which succeeds, then one query per tick with the same Signals.

    500 because prometheus-api-client raises ``PrometheusApiClientException`` for it, which
    is a refusal; 502/503/504 are retried by our urllib3 ``Retry`` and, if that fails too,
    end as ``MetricsUnavailable`` (see the next test).
    """
    now = _trace_now(prom)
    each = PrometheusSource(prom.url, queries=_TRACE_MIX, combine_queries=False)
    n = len(each.rendered)
    with counting_proxy(prom.url) as proxy, caplog.at_level(logging.INFO):
        src = PrometheusSource(proxy.url, queries=_TRACE_MIX, combine_retry_s=120.0)
        proxy.fail_next(1, status=500, containing="surgecast_signal")
        got = src.signals(now)
        assert got == each.signals(now) and got.demand_rps == prom.trace_values[5000]
        assert len(proxy.queries) == 1 + n and not src.combined_active
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and "HTTP Status Code 500" in warned[0], warned
        assert "no signal's own query is at fault" in warned[0]
        proxy.queries.clear()
        assert src.signals(now + 60.0) == each.signals(now + 60.0)
        assert len(proxy.queries) == n
        for dt in (120.0, 180.0, 240.0):  # the retry succeeds; combined from then on
            proxy.queries.clear()
            assert src.signals(now + dt) == each.signals(now + dt)
            assert len(proxy.queries) == 1 and "surgecast_signal" in proxy.queries[0]
            assert src.queries_last_tick == 1 and src.combined_active
            assert src.combine_retry_at_s is None
        assert sum("again" in r.getMessage() and r.levelno == logging.INFO
                   for r in caplog.records) == 1
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_503_on_the_combined_query_is_retried_by_urllib3_then_falls_back(
    prom: PromEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """502/503/504 (Prometheus' 503: a query timed out) go through urllib3's ``Retry``; when
    every try of the combined query gets one but single queries answer, the tick reads
    them and the source falls back as for a refusal (retry after ``combine_retry_s``)."""
    now = _trace_now(prom)
    each = PrometheusSource(prom.url, queries=_TRACE_MIX, combine_queries=False)
    want, n = each.signals(now), len(each.rendered)
    with counting_proxy(prom.url) as proxy, caplog.at_level(logging.WARNING):
        src = PrometheusSource(proxy.url, queries=_TRACE_MIX, combine_retry_s=120.0)
        proxy.fail_next(1, status=503, containing="surgecast_signal")
        assert src.signals(now) == want  # the second try went through
        assert len(proxy.queries) == 2 and src.queries_last_tick == 1 and src.combined_active
        proxy.queries.clear()
        proxy.fail_next(2, status=503, containing="surgecast_signal")
        assert src.signals(now) == want
        assert len(proxy.queries) == 2 + n and not src.combined_active
        assert src.combine_retry_at_s == now + 120.0
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and "RetryError" in warned[0] and "single ones" in warned[0]
        proxy.queries.clear()
        assert src.signals(now + 120.0) == each.signals(now + 120.0)  # combined again
        assert len(proxy.queries) == 1


def test_combined_query_too_slow_falls_back(
    prom: PromEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """The combined query takes longer than the client's timeout while single queries are
    quick (a loaded Prometheus): the tick still reads every signal, one query each, and the
    next ticks do so until the retry; Prometheus hung for every query is unavailable and
    leaves the state alone."""
    now = _trace_now(prom)
    each = PrometheusSource(prom.url, queries=_TRACE_MIX, combine_queries=False)
    n = len(each.rendered)
    with counting_proxy(prom.url) as proxy, caplog.at_level(logging.WARNING):
        src = PrometheusSource(
            proxy.url, queries=_TRACE_MIX, timeout_s=0.5, retries=0, combine_retry_s=300.0
        )
        proxy.delay_next(1, seconds=1.5, containing="surgecast_signal")
        assert src.signals(now) == each.signals(now)
        assert len(proxy.queries) == 1 + n and not src.combined_active
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and "did not answer within 0.5 s" in warned[0], warned
        proxy.queries.clear()
        assert src.signals(now + 60.0) == each.signals(now + 60.0)
        assert len(proxy.queries) == n
        # hung for everything at the retry: unavailable, and the wait is not restarted
        proxy.queries.clear()
        proxy.delay_next(2, seconds=1.5, containing="")
        with pytest.raises(MetricsUnavailable, match=r"did not answer within 0\.5 s"):
            src.signals(now + 300.0)
        assert len(proxy.queries) == 2 and src.combine_retry_at_s == now + 300.0
        proxy.queries.clear()
        assert src.signals(now + 315.0) == each.signals(now + 315.0)
        assert len(proxy.queries) == 1 and src.combined_active


@pytest.mark.parametrize("recovers_with", ["combined", "single"])
def test_hung_prometheus_costs_one_timeout_per_tick(prom: PromEnv, recovers_with: str) -> None:
    """Hung for every query: the first tick spends two timeouts (combined, then one single
    query, to tell a heavy query from a dead server); later ticks one each, combined and
    single in turn. The first query that answers ends the outage."""
    now = _trace_now(prom)
    each = PrometheusSource(prom.url, queries=_TRACE_MIX, combine_queries=False)
    n = len(each.rendered)
    with counting_proxy(prom.url) as proxy:
        src = PrometheusSource(proxy.url, queries=_TRACE_MIX, timeout_s=0.5, retries=0)
        proxy.delay_next(10_000, seconds=1.0, containing="")
        sent = []
        for k in range(4):
            proxy.queries.clear()
            t0 = time.monotonic()
            with pytest.raises(MetricsUnavailable, match=r"did not answer within 0\.5 s"):
                src.signals(now + 15.0 * k)
            took = time.monotonic() - t0
            sent.append(["combined" if "surgecast_signal" in q else "single"
                         for q in proxy.queries])
            assert took < 0.5 * len(proxy.queries) + 0.4  # one timeout per query sent
        assert sent == [["combined", "single"], ["combined"], ["single"], ["combined"]]
        assert src.combined_active  # down is no reason to stop combining
        # it comes back; the 5th tick probes with a single query, the 6th would combine
        if recovers_with == "single":
            proxy.delay_next(0, seconds=0.0, containing="")
            proxy.queries.clear()
            assert src.signals(now + 60.0) == each.signals(now + 60.0)
            assert len(proxy.queries) == n
            proxy.queries.clear()
            assert src.signals(now + 75.0) == each.signals(now + 75.0)
            assert len(proxy.queries) == 1 and src.combined_active
        else:  # hung once more for the single probe, then answering everything
            proxy.delay_next(1, seconds=1.0, containing="")
            with pytest.raises(MetricsUnavailable):
                src.signals(now + 60.0)
            proxy.queries.clear()
            assert src.signals(now + 75.0) == each.signals(now + 75.0)
            assert len(proxy.queries) == 1 and src.combined_active
        # up again: the next outage starts with two timeouts again
        proxy.delay_next(10_000, seconds=1.0, containing="")
        proxy.queries.clear()
        with pytest.raises(MetricsUnavailable):
            src.signals(now + 90.0)
        assert len(proxy.queries) == 2
        proxy.delay_next(0, seconds=0.0, containing="")


@pytest.mark.parametrize("kind", ["retry-off", "unclosed", "one-signal", "not-combined"])
def test_never_combined_is_never_retried(prom: PromEnv, kind: str) -> None:
    """``combine_retry_s <= 0`` after a refusal, and templates that are never combined:
    one query per signal however much later the tick."""
    good = f"sum({GAUGE})"
    q, kw = {
        "retry-off": (QuerySet(demand_rps="sum(rate(x))", queue_depth=good),
                      {"combine_retry_s": 0.0}),
        "unclosed": (QuerySet(demand_rps=f"{good}) or (vector(1)", queue_depth=good), {}),
        "one-signal": (QuerySet(demand_rps=good), {}),
        "not-combined": (QuerySet(demand_rps=good, queue_depth=good),
                         {"combine_queries": False}),
    }[kind]
    now = _trace_now(prom)
    n = len(q.render(selector="", gpu_selector="", window="1m"))
    with counting_proxy(prom.url) as proxy:
        src = PrometheusSource(proxy.url, queries=q, **kw)  # type: ignore[arg-type]
        first = 1 if src.combined_active else 0
        src.signals(now)
        assert len(proxy.queries) == first + n
        for dt in (600.0, 1e6):
            proxy.queries.clear()
            src.signals(now + dt)
            assert len(proxy.queries) == n and src.queries_last_tick == n
            assert not src.combined_active and src.combine_retry_at_s is None
        assert not any("surgecast_signal" in sent for sent in proxy.queries)


def test_every_query_refused_after_fallback_is_unavailable(prom: PromEnv) -> None:
    src = PrometheusSource(prom.url, queries=QuerySet(demand_rps="sum(rate(x))",
                                                      running="no_such_function(x)"))
    assert src.combined_active
    with pytest.raises(MetricsUnavailable, match="every query"):
        src.signals(time.time())
    assert src.queries_last_tick == 3 and not src.combined_active


def test_unclosed_template_is_never_combined(prom: PromEnv) -> None:
    """Alone it is bad PromQL; wrapped it would borrow a parenthesis and parse."""
    q = QuerySet(demand_rps=f"sum({GAUGE})) or (vector(1)", queue_depth=f"sum({GAUGE})")
    src = PrometheusSource(prom.url, queries=q)
    assert not src.combined_active
    sig = src.signals(_trace_now(prom))
    assert sig.demand_rps is None and "400" in sig.errors["demand_rps"]
    assert sig.queue_depth == prom.trace_values[5000] and src.queries_last_tick == 2


def test_answer_without_the_signal_label_falls_back() -> None:
    """A server that is not Prometheus (it ignores the query): per signal from then on."""
    import json

    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, "3"]}]}}).encode()
    with serve_static(body, "application/json") as port:
        src = PrometheusSource(f"http://127.0.0.1:{port}",
                               queries=QuerySet(demand_rps="up", queue_depth="up"))
        sig = src.signals(1.0)
        assert sig.demand_rps == sig.queue_depth == 3.0 and not src.combined_active
        assert src.queries_last_tick == 3
