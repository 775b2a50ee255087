"""``surgecast history`` against a real Prometheus (8 days of the NASA trace backfilled)
and the fake API server, then ``surgecast backtest --config`` on what it wrote: the path
from a fleet's own Prometheus history to a backtest of its own PredictiveAutoscaler."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fake_kube import FakeKube
from kubernetes import client as k8s
from prom_fixture import PromEnv

from autoscaler.cli import main
from autoscaler.config import crd
from autoscaler.controller.status import GROUP, PLURAL, VERSION
from forecasting.series import Series

NS = "llm"
#: the backfilled gauge holds requests per minute; the override makes it req/s
SPEC: dict[str, Any] = {
    "scaleTargetRef": {"name": "worker"},
    "minReplicas": 1, "maxReplicas": 30,
    "signals": {"selector": 'trace="nasa_http_1995"', "gpu": "none",
                "queries": {"demandRps": "sum(surgecast_trace_requests_per_minute{$selector})"
                                         " / 60"}},
    "capacity": {"requestsPerSecondPerReplica": 0.1},
    "leadTime": {"coldStart": "90s"},
    "forecast": {"model": "seasonal_naive", "quantile": 0.95, "step": "1m"},
}


def spec_file(tmp_path: Path, **over: Any) -> Path:
    p = tmp_path / "pa.yaml"
    p.write_text(yaml.safe_dump({**SPEC, **over}))
    return p


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_history(prom: PromEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                days: str, end: float) -> tuple[Path, Any]:
    """``surgecast history`` with the test spec up to ``end``; asserts exit 0, returns the
    CSV's path and the captured output."""
    out = tmp_path / "demand.csv"
    rc = main(["history", "--prometheus", prom.url, "--config", str(spec_file(tmp_path)),
               "--days", days, "--end", iso(end), "--out", str(out)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    return out, text


def test_history_writes_the_demand_as_a_trace_that_reads_back_exactly(
        prom: PromEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the range [end - 2 days, end): its last bucket's row holds the query at `end`, so the
    # last trace sample must be there
    end = float(prom.trace_ts[-1])
    out, text = run_history(prom, tmp_path, capsys, "2", end)
    assert f"wrote {out}: 2880 buckets of 60 s" in text.out and "0 missing" in text.out
    assert "surgecast backtest --trace" in text.out
    got = Series.from_csv(out)
    assert got.start_s == end - 2 * 86400 and got.step_s == 60 and len(got) == 2880
    # the row of bucket [t - 60, t) holds the query at t (for a rate(), the window ending
    # there): the gauge's samples, one bucket earlier, nothing lost on the way
    np.testing.assert_allclose(got.values, prom.trace_values[-2880:], rtol=1e-9)
    assert got.start_s == prom.trace_ts[-2880] - 60
    assert Series.from_csv(out, column="rate_rps").values[0] == pytest.approx(
        prom.trace_values[-2880] / 60, rel=1e-9)


def test_history_then_backtest_with_the_same_config(
        prom: PromEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    end = float(prom.trace_ts[-1])
    csv, cfg = tmp_path / "demand.csv", spec_file(tmp_path)
    assert main(["history", "--prometheus", prom.url, "--config", str(cfg), "--days", "3",
                 "--end", iso(end), "--out", str(csv)]) == 0
    capsys.readouterr()
    out = tmp_path / "bt"
    rc = main(["backtest", "--trace", str(csv), "--config", str(cfg), "--history-days", "2",
               "--policies", "surgecast,hpa_rps,oracle", "--out", str(out)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    summary = json.loads((out / "summary.json").read_text())
    sc = summary["scenario"]
    # the fleet of the spec: its capacity, its cold start, its forecaster
    assert sc["capacity_rps_per_replica"] == 0.1 and sc["cold_start_s"] == 90
    assert sc["rate_window_s"] == 60 and summary["model"] == "seasonal_naive"
    assert summary["config"] == str(cfg)
    peak = float(np.max(prom.trace_values[-1440:])) / 60
    assert sc["peak_replicas"] >= int(peak / 0.07)  # sized by the demand, not set to 40
    rows = {p["policy"]: p for p in summary["policies"]}
    assert set(rows) == {"surgecast", "hpa(req/s)", "oracle (replay)"}
    assert 0 < rows["surgecast"]["slo_pct"] <= 100 and rows["surgecast"]["x_oracle"] > 1


def test_history_reads_the_resource_from_the_cluster(
        prom: PromEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    end = float(prom.trace_ts[-1])
    with FakeKube() as kube:
        api = kube.api_client()
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(crd())
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL,
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PredictiveAutoscaler",
             "metadata": {"name": "pa", "namespace": NS}, "spec": SPEC})
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
               "clusters": [{"name": "fake", "cluster": {"server": kube.host}}],
               "users": [{"name": "u", "user": {"token": "t"}}],
               "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}]}
        kc = tmp_path / "kubeconfig"
        kc.write_text(yaml.safe_dump(cfg))
        out = tmp_path / "d.csv"
        writes = len(kube.writes())
        rc = main(["history", "--prometheus", prom.url, "--target", f"{NS}/pa",
                   "--kubeconfig", str(kc), "--days", "0.5", "--end", iso(end),
                   "--out", str(out)])
        text = capsys.readouterr()
        assert rc == 0, text.err
        assert len(kube.writes()) == writes  # read-only
        assert any(r[0] == "get" and r[1] == PLURAL for r in kube.requests)  # the spec
    assert len(Series.from_csv(out)) == 720


def test_history_outside_retention_is_missing_and_says_so(
        prom: PromEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 20 days back: only the last 8 have data; the rest is missing, never zero
    out, text = run_history(prom, tmp_path, capsys, "20", float(prom.trace_ts[-1]))
    assert "have no value" in text.err
    got = Series.from_csv(out)
    assert got.start_s == prom.trace_ts[0] - 60  # rows start where the data does
    assert len(got) == len(prom.trace_values)


@pytest.mark.parametrize(("argv", "message"), [
    (["--days", "0"], "--days must be > 0"),
    (["--end", "yesterday"], "--end: not 'now'"),
    (["--step", "1.5s"], "whole number of seconds"),
    (["--no-config"], "give --target NS/NAME"),
    (["--target", "nope"], "NAMESPACE/NAME"),
    # these used to end in ValueError/OverflowError tracebacks
    (["--days", "1e6"], "--days 1e+06 before --end now starts before 1970"),
    (["--days", "1e300"], "starts before 1970"),
    (["--end", "0001-01-01T00:00:00Z"], "starts before 1970"),
    (["--days", "3650", "--step", "1s"], "3.15e+08 buckets, more than 10,000,000"),
    (["--prometheus-ca-file", "/nonexistent/ca.pem"],
     "--prometheus-ca-file /nonexistent/ca.pem: not found"),
    (["--prometheus-timeout", "nan"], "--prometheus-timeout must be a finite number"),
    (["--prometheus-timeout", "inf"], "--prometheus-timeout must be a finite number"),
])
def test_history_bad_input_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        message: str) -> None:
    cfg = [] if "--no-config" in argv else ["--config", str(spec_file(tmp_path))]
    argv = [a for a in argv if a != "--no-config"]
    assert main(["history", "--prometheus", "http://127.0.0.1:9", *cfg, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_history_with_prometheus_down_or_no_data_exits_2(
        prom: PromEnv, dead_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d.csv"
    assert main(["history", "--prometheus", dead_url, "--config", str(spec_file(tmp_path)),
                 "--days", "1", "--out", str(out), "--prometheus-timeout", "0.5"]) == 2
    assert "unreachable" in capsys.readouterr().err
    nothing = spec_file(tmp_path, signals={**SPEC["signals"], "selector": 'trace="none"'})
    assert main(["history", "--prometheus", prom.url, "--config", str(nothing),
                 "--days", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no value of the demand query" in err and 'trace="none"' in err
    assert not out.exists()  # nothing half-written
