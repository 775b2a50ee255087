"""``surgecast backtest`` and ``surgecast dry-run`` in-process on real trace slices."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.cli import main
from autoscaler.core.baselines import REGISTRY
from autoscaler.core.settings import PolicySettings
from autoscaler.core.simulator import SimConfig, demand_rates, simulate
from forecasting.series import Series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_backtest_table_png_json(
    conv_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = main(["backtest", "--trace", str(conv_slice), "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    labels = ["surgecast", "hpa(gpu 70%)", "hpa(req/s)", "keda", "kpa", "static peak",
              "oracle (replay)"]
    for header in ("% within SLO", "p99 latency s", "GPU-hours", "x oracle", "actions",
                   "min under-provisioned"):
        assert header in text
    data = json.loads((out / "summary.json").read_text())
    rows = {r["policy"]: r for r in data["policies"]}
    assert list(rows) == labels
    # each table row carries the JSON's numbers
    for label, r in rows.items():
        line = next(ln for ln in text.splitlines() if f" {label} " in ln)
        assert f"{r['slo_pct']:.2f}" in line and f"{r['gpu_hours']:.2f}" in line
        assert f"{r['x_oracle']:.3f}" in line and 0 <= r["slo_pct"] <= 100
        assert r["x_oracle"] == pytest.approx(r["gpu_hours"] / data["scenario"]["oracle_gpu_hours"])
    # the oracle bound holds and the replayed oracle is close to it
    assert all(r["x_oracle"] >= 0.99 for r in rows.values())
    assert rows["oracle (replay)"]["x_oracle"] < 1.2

    # the JSON agrees with a direct simulate() of two baselines in the same scenario
    sc = data["scenario"]
    assert sc["peak_replicas"] == 40 and sc["cold_start_s"] == 120 and sc["slo_s"] == 0.5
    series = Series.from_csv(conv_slice)
    series = series.slice(0, round(data["duration_s"] / series.step_s))
    cap = sc["capacity_rps_per_replica"]
    cfg = SimConfig(capacity_rps_per_replica=cap, step_s=15.0)
    peak = float(demand_rates(series, 15.0).values.max())
    direct = {
        "hpa(req/s)": REGISTRY["hpa_rps"](cap, max_replicas=400),
        "static peak": REGISTRY["static"](math.ceil(peak / cap)),
    }
    for label, pol in direct.items():
        res = simulate(series, pol, cfg, name=label)
        assert rows[label]["slo_pct"] == pytest.approx(100 * res.slo_share)
        assert rows[label]["gpu_hours"] == pytest.approx(res.gpu_hours)
        assert rows[label]["actions"] == res.actions
        assert rows[label]["p99_s"] == pytest.approx(res.p99_latency_s)
    png = out / "capacity.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    fan = out / "forecast_fan.png"
    assert fan.read_bytes()[:8] == PNG_MAGIC and fan.stat().st_size > 10_000
    assert "forecast_fan.png" in text


def test_fan_recorder_keeps_the_forecast_at_the_lead_and_decides_alike(conv_slice: Path) -> None:
    import argparse

    from autoscaler.commands.backtest import FanRecorder, prepare
    from autoscaler.core.scenario import make_surgecast

    args = argparse.Namespace(
        step="15s", cold_start="120s", warm_promotion="5s", slo="500ms", peak_replicas=40,
        model="seasonal_naive", days=None,
    )
    series, scenario = prepare(Series.from_csv(conv_slice), args)
    plain = simulate(series, make_surgecast(scenario, series.step_s), scenario.config)
    fan = FanRecorder(make_surgecast(scenario, series.step_s))
    wrapped = simulate(series, fan, scenario.config)
    assert np.array_equal(plain.desired, wrapped.desired)  # recording changes nothing
    settings = PolicySettings(1.0)  # the policy quantile and the warm-pool quantile
    assert fan.quantiles == tuple(sorted({0.5, settings.quantile, settings.warm_quantile}))
    assert len(fan.points) > 100
    for at, vals in fan.points:
        assert list(vals) == sorted(vals)  # monotone quantiles
        assert at >= series.start_s + 120  # a forecast for one lead ahead of its tick


def test_dry_run_scales_up_before_the_peak(
    wiki_slice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["dry-run", "--trace", str(wiki_slice)])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["time", "(UTC)", "demand", "p50"]
    pat = re.compile(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+"
        r"(\w+)\s+(\d+)->(\d+) replicas"
    )
    ticks = []
    for ln in lines[2:-1]:
        m = pat.match(ln)
        assert m, ln
        t = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        active, warm, total = int(m[5]), int(m[6]), int(m[7])
        assert active + warm == total and int(m[10]) == total
        ticks.append((t, m[8], int(m[9]), total, m[3]))
    assert len(ticks) == 48 * 240  # every 15 s tick over two days
    assert lines[-1].startswith("summary: ")
    # the peak hour of day 2 (day 1 is the forecaster's history)
    series = Series.from_csv(wiki_slice)
    day2 = series.values[24:48]
    peak_t = series.start_s + (24 + int(day2.argmax())) * 3600
    cap = float(series.values.max()) / 3600 / 40 / 0.7  # the scenario's req/s per replica
    need = math.ceil(float(day2.max()) / 3600 / cap)  # replicas that serve the peak hour
    before = [k for k in ticks if peak_t - 600 <= k[0] < peak_t]
    # enough replicas asked before the demand arrives (on this smooth trace the HPA floor
    # at 70 % usually already covers the next hour's forecast at 85 %: docs/autoscaling.md)
    assert before[-1][3] >= need
    assert all(k[4] != "-" for k in ticks if k[0] >= series.start_s + 86400 + 3600)


def test_dry_run_every_limit_and_embedded(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["dry-run", "--days", "0.25", "--every", "40", "--limit", "5"])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert "embedded trace wikipedia_en_2016_01.csv" in out[0]
    assert len(out) == 3 + 5 + 1  # banner, scenario, header, 5 ticks, summary
    assert out[3].startswith("2016-01-01 00:00:00")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backtest", "--trace", "/nonexistent/x.csv"], "trace file not found"),
        (["backtest", "--cold-start", "2x"], "--cold-start: bad duration"),
        (["backtest", "--slo", "0s"], "--slo: duration must be positive"),
        (["backtest", "--slo", "100ms"], "--slo"),
        (["backtest", "--policies", "surgecast,nope"], "unknown policy 'nope'"),
        (["backtest", "--model", "nope"], "unknown model 'nope'"),
        (["backtest", "--days", "0.001"], "trace too short"),
        (["backtest", "--step", "7m"], "whole multiple"),
        (["backtest", "--column", "nope"], "no 'nope' column"),
        (["backtest", "--peak-replicas", "0"], "--peak-replicas must be >= 1"),
        (["backtest", "--history-days", "2"],
         "--history-days 2: 2 days of history leave too little to replay"),
        (["backtest", "--history-days", "-1"], "--history-days -1: history must be >= 0 days"),
        (["dry-run", "--days", "0.001"], "trace too short"),
        (["dry-run", "--warm-promotion", "soon"], "--warm-promotion: bad duration"),
        (["dry-run", "--every", "0"], "--every must be >= 1"),
        (["dry-run", "--prometheus", "http://x:9090", "--target", "ns/w"],
         "--trace and --prometheus/--target exclude each other"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    wiki_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    argv: list[str], message: str,
) -> None:
    cmd, rest = argv[0], argv[1:]
    base = ["--trace", str(wiki_slice)] if "--trace" not in rest else []
    if cmd == "backtest":
        base += ["--out", str(tmp_path / "o")]
    rc = main([cmd, *base, *rest])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_backtest_exact_forecast_yardstick(
    conv_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--policies surgecast,exact``: the same policy fed the true demand serves at least
    as many requests as surgecast with its real forecaster, and at least what the oracle's
    lower bound costs."""
    out = tmp_path / "exact"
    rc = main(["backtest", "--trace", str(conv_slice), "--out", str(out),
               "--policies", "surgecast,exact"])
    assert rc == 0
    assert "exact forecast" in capsys.readouterr().out
    rows = {r["policy"]: r for r in json.loads((out / "summary.json").read_text())["policies"]}
    assert list(rows) == ["surgecast", "exact forecast"]
    assert rows["exact forecast"]["slo_pct"] >= rows["surgecast"]["slo_pct"]
    assert rows["exact forecast"]["x_oracle"] >= 0.99
    assert rows["exact forecast"]["reasons"]["ForecastLead"] > 0


def test_backfill_cut_between_simulation_buckets(
    conv_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1 s trace cut 864 s in, off the 15 s grid: the history ends with the replay's
    first simulation bucket (its partly covered last bucket is dropped) and runs."""
    out = tmp_path / "cut"
    rc = main(["backtest", "--trace", str(conv_slice), "--out", str(out),
               "--policies", "surgecast", "--history-days", "0.01"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "summary.json").read_text())
    assert data["history_days"] == 0.01 and data["duration_s"] == 3000 - 864
    capsys.readouterr()


def test_backtest_with_backfilled_history(
    wiki_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--history-days 1`` on two days of Wikipedia replays day 2 with surgecast's
    forecaster started on day 1 (as the controller backfills it): the same replay as a
    file of day 2 alone, but the forecast is used from the first hour instead of after the
    model's minimum history (12 hourly buckets for nowcast), and costs less for it."""
    day2 = tmp_path / "day2.csv"
    lines = wiki_slice.read_text().splitlines()
    day2.write_text("\n".join([lines[0], *lines[1 + 24 :]]) + "\n")
    runs = {}
    for label, trace, days in (("backfilled", wiki_slice, "1"), ("fresh", day2, "0")):
        out = tmp_path / label
        rc = main(["backtest", "--trace", str(trace), "--out", str(out),
                   "--policies", "surgecast,oracle", "--history-days", days])
        assert rc == 0
        data = json.loads((out / "summary.json").read_text())
        assert data["history_days"] == float(days)
        runs[label] = data
    assert runs["backfilled"]["start_s"] == runs["fresh"]["start_s"]
    assert runs["backfilled"]["duration_s"] == runs["fresh"]["duration_s"] == 86400
    sc = {k: next(r for r in d["policies"] if r["policy"] == "surgecast") for k, d in runs.items()}
    # day 2 costs 1.29x the oracle fresh, 1.18x backfilled, both 100 % within the SLO
    assert sc["backfilled"]["x_oracle"] < sc["fresh"]["x_oracle"] - 0.05
    assert sc["backfilled"]["slo_pct"] >= sc["fresh"]["slo_pct"] - 1e-9
    capsys.readouterr()


def _pa(tmp_path: Path, **spec: object) -> Path:
    """A PredictiveAutoscaler YAML: a 0.5 req/s worker with a warm pool of 2."""
    import yaml

    base: dict[str, object] = {
        "scaleTargetRef": {"name": "w"}, "minReplicas": 1, "maxReplicas": 80,
        "warmPool": {"minReplicas": 2, "maxReplicas": 2},
        "capacity": {"requestsPerSecondPerReplica": 0.5},
        "leadTime": {"coldStart": "90s", "warmPromotion": "10s"},
        "forecast": {"model": "seasonal_naive", "quantile": 0.95},
        "signals": {"window": "2m"},
    }
    doc = {"apiVersion": "surgecast.io/v1alpha1", "kind": "PredictiveAutoscaler",
           "metadata": {"name": "w", "namespace": "llm"}, "spec": {**base, **spec}}
    p = tmp_path / "pa.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_backtest_with_a_config_simulates_that_fleet(
    conv_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    cfg = _pa(tmp_path)
    rc = main(["backtest", "--trace", str(conv_slice), "--config", str(cfg), "--policies",
               "surgecast,hpa_rps,oracle", "--out", str(out)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    data = json.loads((out / "summary.json").read_text())
    sc = data["scenario"]
    assert sc["capacity_rps_per_replica"] == 0.5  # the spec's, not sized for 40 at the peak
    assert sc["cold_start_s"] == 90 and sc["warm_promotion_s"] == 10
    assert sc["rate_window_s"] == 120 and data["model"] == "seasonal_naive"
    rates = demand_rates(Series.from_csv(conv_slice), 15.0).values
    assert sc["peak_replicas"] == math.ceil(float(np.max(rates)) / (0.5 * 0.7))
    assert "0.5 req/s per replica, cold start 90 s, warm promotion 10 s" in text.out
    # --cold-start sets the simulated pods' start-up; the spec stays the policy's prior
    rc = main(["backtest", "--trace", str(conv_slice), "--config", str(cfg), "--policies",
               "surgecast", "--cold-start", "150s", "--out", str(out)])
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["scenario"]["cold_start_s"] == 150
    assert "warning" not in capsys.readouterr().err
    # a spec whose maxReplicas cannot hold the trace's peak says so
    small = _pa(tmp_path, maxReplicas=5)
    assert main(["backtest", "--trace", str(conv_slice), "--config", str(small),
                 "--policies", "surgecast", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"needs {sc['peak_replicas']} replicas" in err and "maxReplicas 5" in err
    # ... and the spec's bounds hold for the baselines and the start too: the static fleet
    # runs its 5 pods from the first step (not the 10 the first minute's demand needs)
    assert main(["backtest", "--trace", str(conv_slice), "--config", str(small),
                 "--policies", "static", "--out", str(out)]) == 0
    capsys.readouterr()
    data = json.loads((out / "summary.json").read_text())
    assert data["scenario"]["initial_replicas"] == 5
    static = data["policies"][0]
    # (the simulation grid covers a partial 15-s bucket at each end: within 1 %)
    assert static["gpu_hours"] == pytest.approx(5 * data["duration_s"] / 3600, rel=0.01)


def test_dry_run_with_a_config_runs_its_settings(
    conv_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["dry-run", "--trace", str(conv_slice), "--config", str(_pa(tmp_path)),
               "--days", "0.03"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    lines = text.out.splitlines()
    assert "0.5 req/s per replica" in lines[0] and "model seasonal_naive" in lines[0]
    assert "p95" in lines[1]  # the spec's quantile
    # the spec's warm pool on every tick that decides (a hold on missing demand, the first
    # two ticks here, keeps what runs)
    rows = [ln.split() for ln in lines[2:-1] if "StaleMetricsHold" not in ln]
    assert len(rows) > 100 and all(int(r[6]) == 2 for r in rows)
    # the same trace without it: the benchmark's surgecast keeps no warm pool
    assert main(["dry-run", "--trace", str(conv_slice), "--days", "0.03"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()[2:-1]]
    assert len(rows) > 100 and all(int(r[6]) == 0 for r in rows)


@pytest.mark.parametrize(("extra", "message"), [
    (["--peak-replicas", "10"], "--peak-replicas and --config exclude each other"),
    (["--model", "ets"], "--model and --config exclude each other"),
    (["--step", "2m"], "surgecast forecasts in buckets of 60 s (the spec's forecast.step)"),
])
def test_config_conflicts_and_bad_configs_exit_2(
    conv_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    extra: list[str], message: str,
) -> None:
    assert main(["backtest", "--trace", str(conv_slice), "--config", str(_pa(tmp_path)),
                 *extra, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    bad = _pa(tmp_path, capacity={"requestsPerSecondPerReplica": 0})
    assert main(["backtest", "--trace", str(conv_slice), "--config", str(bad)]) == 2
    assert "requestsPerSecondPerReplica" in capsys.readouterr().err
    assert main(["dry-run", "--trace", str(conv_slice), "--config", "nope.yaml"]) == 2
    assert "cannot read config file nope.yaml" in capsys.readouterr().err


def test_a_step_that_does_not_divide_the_forecast_step_is_a_usage_error(
    conv_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it used to end in a traceback from inside the simulation
    assert main(["backtest", "--trace", str(conv_slice), "--step", "2m",
                 "--out", str(tmp_path / "o")]) == 2
    assert "surgecast forecasts in buckets of 60 s (its forecast step)" in (
        capsys.readouterr().err)
    # the baselines alone do not forecast: any step works
    assert main(["backtest", "--trace", str(conv_slice), "--step", "2m",
                 "--policies", "hpa,oracle", "--out", str(tmp_path / "o")]) == 0


def test_compare_reports_progress_within_each_simulation(wiki_slice: Path) -> None:
    import argparse

    from autoscaler.commands.backtest import prepare
    from autoscaler.core.scenario import compare

    args = argparse.Namespace(
        step="15s", cold_start="120s", warm_promotion="5s", slo="500ms", peak_replicas=40,
        model="seasonal_naive", days=None,
    )
    series, scenario = prepare(Series.from_csv(wiki_slice), args, None)
    cap = scenario.capacity

    def policies() -> dict[str, Any]:  # fresh ones each run: an autoscaler keeps state
        return {"static": REGISTRY["static"](40), "hpa": REGISTRY["hpa_rps"](cap)}

    seen: list[tuple[str, int, int]] = []
    results = compare(series, scenario, policies(), on_progress=lambda *a: seen.append(a))
    n = len(results[0][1].demand_rps)
    for name in ("static", "hpa"):
        mine = [(k, m) for p, k, m in seen if p == name]
        steps = [k for k, _ in mine]
        assert {m for _, m in mine} == {n} and steps == sorted(steps)
        assert steps[-1] == n and len(steps) >= 50  # about every 1 % of 2 days of 15 s steps
    # the callback changes nothing simulated
    plain = compare(series, scenario, policies())
    for (row, _), (row2, _) in zip(results, plain, strict=True):
        assert {k: v for k, v in row.items() if k != "sim_s"} == {
            k: v for k, v in row2.items() if k != "sim_s"
        }


def test_backtest_demand_counted_as_requests_finish(
    conv_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--demand-signal completions``: the HPA on req/s reads what the pods served, as a
    direct simulate() with that config gives; the KPA, reading arrivals at its
    queue-proxies, is unchanged; the JSON records the setting."""
    rows = {}
    for signal in ("arrivals", "completions"):
        out = tmp_path / signal
        rc = main(["backtest", "--trace", str(conv_slice), "--out", str(out),
                   "--policies", "hpa_rps,kpa", "--demand-signal", signal])
        assert rc == 0, capsys.readouterr().err
        data = json.loads((out / "summary.json").read_text())
        assert data["scenario"]["demand_signal"] == signal
        rows[signal] = {r["policy"]: r for r in data["policies"]}
    def same(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k != "sim_s"}  # sim_s: its wall time

    assert same(rows["completions"]["kpa"]) == same(rows["arrivals"]["kpa"])
    sc = data["scenario"]
    series = Series.from_csv(conv_slice)
    series = series.slice(0, round(data["duration_s"] / series.step_s))
    cfg = SimConfig(capacity_rps_per_replica=sc["capacity_rps_per_replica"], step_s=15.0,
                    demand_signal="completions")
    res = simulate(series, REGISTRY["hpa_rps"](sc["capacity_rps_per_replica"],
                                               max_replicas=400), cfg)
    assert rows["completions"]["hpa(req/s)"]["gpu_hours"] == pytest.approx(res.gpu_hours)
    assert rows["completions"]["hpa(req/s)"]["slo_pct"] == pytest.approx(100 * res.slo_share)
    assert same(rows["completions"]["hpa(req/s)"]) != same(rows["arrivals"]["hpa(req/s)"])
