"""TargetRunner: the controller's tick and refit against the fake API server (real HTTP,
official client) and a replayed trace standing in for Prometheus."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fake_kube import FakeKube
from replay_source import ReplaySource

from autoscaler.adapters.kubernetes import KubernetesActuator
from autoscaler.config import validate_spec
from autoscaler.controller.metrics import ControllerMetrics
from autoscaler.controller.target import TargetRunner
from autoscaler.core.prediction_guard import GuardSettings
from forecasting.series import Series

NS, DEP = "llm", "worker"
STEP = 60.0


def spec(**over: Any) -> Any:
    base: dict[str, Any] = {
        "scaleTargetRef": {"name": DEP},
        "minReplicas": 1, "maxReplicas": 60,
        "warmPool": {"minReplicas": 0, "maxReplicas": 4},
        "forecast": {"model": "seasonal_naive", "history": "3d", "step": "1m",
                     "refitEvery": "1h"},
        "capacity": {"requestsPerSecondPerReplica": 0.05},
        "leadTime": {"mode": "Fixed", "coldStart": "120s"},
        "interval": "15s",
    }
    base.update(over)
    return validate_spec(base)


@pytest.fixture(scope="module")
def nasa(load_trace: Callable[[str], Series]) -> Series:
    """Four days of NASA req/s on a grid ending at a round epoch."""
    s = load_trace("nasa_http_1995").slice(0, 4 * 1440).as_rate()
    end = 1_800_000_000.0 - (1_800_000_000.0 % STEP)
    return s.replace(start_s=end - len(s) * STEP)


def runner_for(kube: FakeKube, source: ReplaySource, sp: Any, **kw: Any) -> TargetRunner:
    act = KubernetesActuator(kube.api_client(), NS, DEP, sleep=lambda s: None)
    return TargetRunner(f"{NS}/pa", sp, source, act, **kw)


def replicas(kube: FakeKube) -> int:
    return int(kube.objects[("deployments", NS, DEP)]["spec"]["replicas"])


def test_refit_then_tick_scales_the_deployment(kube: FakeKube, nasa: Series) -> None:
    kube.add_deployment(NS, DEP, replicas=1)
    src = ReplaySource(nasa)
    r = runner_for(kube, src, spec())
    now = nasa.start_s + 3 * 86400 + 12 * 3600 + 5  # midday of day 4, history before it
    assert r.refit(now)
    assert r.live.history is not None and r.live.history.end_s == math.floor(now / 60) * 60
    out = r.tick(now)
    assert out.decision is not None and out.prediction_used and out.applied
    assert replicas(kube) == out.decision.total > 1
    st = r.status()
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["PredictionReady"]["status"] == "True"
    assert conds["FallbackActive"]["status"] == "False"
    assert st["desiredReplicas"] == out.decision.total
    assert st["lastDecision"]["forecastRps"]["p50"] > 0
    assert any(e["reason"] == "SuccessfulRescale" for e in kube.events(NS))
    # ticks fetch only the new buckets: one small range query per completed minute
    before = src.range_queries
    for k in range(1, 9):
        r.tick(now + 15 * k)
    assert src.range_queries - before == 2
    assert r.live.history.end_s == math.floor((now + 120) / 60) * 60


def test_tick_before_any_fit_is_reactive_and_says_why(kube: FakeKube, nasa: Series) -> None:
    kube.add_deployment(NS, DEP, replicas=3)
    r = runner_for(kube, ReplaySource(nasa), spec())
    out = r.tick(nasa.start_s + 86400)
    assert out.decision is not None and not out.prediction_used
    conds = {c["type"]: c for c in r.status()["conditions"]}
    assert conds["PredictionReady"]["status"] == "False"
    assert conds["PredictionReady"]["reason"] == "Waiting"


def test_not_enough_history_is_a_condition(kube: FakeKube, nasa: Series) -> None:
    kube.add_deployment(NS, DEP, replicas=1)
    short = nasa.slice(0, 12)  # gbm needs 24 buckets
    r = runner_for(kube, ReplaySource(short), spec(forecast={"model": "gbm",
                                                             "history": "1d", "step": "1m"}))
    now = short.end_s + 1
    assert not r.refit(now)
    r.tick(now)
    conds = {c["type"]: c for c in r.status()["conditions"]}
    assert conds["PredictionReady"]["reason"] == "NotEnoughHistory"


@pytest.mark.parametrize("mode_or_writer", ["observe", "not-leader"])
def test_observe_mode_and_standby_never_write(kube: FakeKube, nasa: Series,
                                              mode_or_writer: str) -> None:
    kube.add_deployment(NS, DEP, replicas=1)
    writes_before = len(kube.writes())
    statuses: list[dict[str, Any]] = []
    if mode_or_writer == "observe":
        r = runner_for(kube, ReplaySource(nasa), spec(mode="Observe"),
                       write_status=lambda s: statuses.append(s) or None)
    else:
        r = runner_for(kube, ReplaySource(nasa), spec(), can_write=lambda: False,
                       write_status=lambda s: statuses.append(s) or None)
    now = nasa.start_s + 3 * 86400 + 12 * 3600
    r.refit(now)
    out = r.tick(now)
    assert out.decision is not None and out.decision.total > 1 and not out.applied
    assert replicas(kube) == 1
    assert len(kube.writes()) == writes_before
    # Observe still reports its decision; a standby reports nothing (only the leader writes)
    assert len(statuses) == (1 if mode_or_writer == "observe" else 0)


@pytest.mark.parametrize(("mode", "leader", "applying"),
                         [("Auto", True, 1.0), ("Observe", True, 0.0), ("Auto", False, 0.0)])
def test_applying_gauge_says_whether_this_replica_writes(
        kube: FakeKube, nasa: Series, mode: str, leader: bool, applying: float) -> None:
    kube.add_deployment(NS, DEP, replicas=1)
    m = ControllerMetrics()
    r = runner_for(kube, ReplaySource(nasa), spec(mode=mode), can_write=lambda: leader,
                   metrics=m)
    now = nasa.start_s + 3 * 86400 + 12 * 3600
    r.refit(now)
    out = r.tick(now)
    assert out.applied is (applying == 1.0)
    got = m.registry.get_sample_value("surgecast_controller_applying", {"target": f"{NS}/pa"})
    assert got == applying


def test_prometheus_outage_holds_and_never_scales_down(kube: FakeKube, nasa: Series) -> None:
    kube.add_deployment(NS, DEP, replicas=1)
    src = ReplaySource(nasa)
    r = runner_for(kube, src, spec())
    now = nasa.start_s + 3 * 86400 + 12 * 3600
    r.refit(now)
    r.tick(now)
    up = replicas(kube)
    assert up > 1
    src.down = True
    # night falls during the outage: demand would say scale down, but nothing is seen
    for k in range(1, 40):
        out = r.tick(now + 15 * k)
        assert out.decision is not None and out.decision.total >= up
        assert replicas(kube) >= up
    conds = {c["type"]: c for c in r.status()["conditions"]}
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["reason"] == "MetricsUnavailable"
    assert conds["FallbackActive"]["status"] == "True"
    assert any(e["reason"] == "MetricsFallback" for e in kube.events(NS))


def test_target_gone_forbidden_and_conflicts_are_conditions(kube: FakeKube,
                                                            nasa: Series) -> None:
    kube.add_deployment(NS, DEP, replicas=1)
    r = runner_for(kube, ReplaySource(nasa), spec())
    now = nasa.start_s + 3 * 86400
    kube.inject(403, verb="list", resource="pods")
    out = r.tick(now)
    assert out.decision is None and "Forbidden" in out.errors[0]
    conds = {c["type"]: c for c in r.status()["conditions"]}
    assert conds["Ready"]["reason"] == "Forbidden"
    assert "list" in conds["Ready"]["message"] and "pods" in conds["Ready"]["message"]
    kube.inject(500, verb="get", resource="deployments", times=4)  # all retries
    out = r.tick(now + 15)
    assert out.decision is None and "ApiConflict" in out.errors[0]
    kube.inject(404, verb="get", resource="deployments")
    out = r.tick(now + 30)
    assert out.decision is None
    conds = {c["type"]: c for c in r.status()["conditions"]}
    assert conds["Ready"]["reason"] == "TargetNotFound"
    out = r.tick(now + 45)  # faults gone: back to normal, no crash on the way
    assert out.decision is not None
    assert {c["type"]: c for c in r.status()["conditions"]}["Ready"]["status"] == "True"


def test_guard_switches_a_wrong_forecast_off_visibly(kube: FakeKube, nasa: Series) -> None:
    """History shifted by half a day: seasonal naive forecasts night at noon. Persistence
    beats it, so the guard turns prediction off and the runner says so in an Event.

    The adaptive quantile is off here: over these 15 minutes it lowers the level this
    forecast (always above demand) is read at to its floor, and that plan then scores just
    under the reactive one's (0.117 against 0.119), so the guard rightly keeps it."""
    kube.add_deployment(NS, DEP, replicas=1)
    shifted = nasa.replace(start_s=nasa.start_s + 12 * 3600)
    src = ReplaySource(shifted, live=nasa)
    sp = spec(forecast={"model": "seasonal_naive", "history": "3d", "step": "1m",
                        "refitEvery": "1h", "adaptiveQuantile": {"step": 0}})
    r = runner_for(kube, src, sp, guard=GuardSettings(window=20, min_samples=8))
    now = nasa.start_s + 3 * 86400 + 9 * 3600
    r.refit(now)
    used = []
    for k in range(60):
        out = r.tick(now + 15 * k)
        used.append(out.prediction_used)
    assert used[0] and not used[-1]
    assert not r.guard.enabled
    assert r.guard.mae is not None and r.guard.reactive_mae is not None
    assert r.guard.mae > r.guard.reactive_mae
    # the switch is judged on the plans (the policy's utilisations are passed)
    assert r.guard.plan_loss is not None and r.guard.reactive_plan_loss is not None
    assert r.guard.plan_loss > r.guard.reactive_plan_loss and "plan loss" in r.guard.reason
    quality = r.status()["forecastQuality"]
    assert quality["planLoss"] == pytest.approx(r.guard.plan_loss, rel=1e-3)
    conds = {c["type"]: c for c in r.status()["conditions"]}
    assert conds["PredictionReady"]["reason"] == "WorseThanReactive"
    ev = [e for e in kube.events(NS) if e["reason"] == "PredictionFallback"]
    assert ev and ev[0]["type"] == "Warning"


def test_demand_view_matches_the_trace(nasa: Series) -> None:
    src = ReplaySource(nasa)
    h = src.history(nasa.start_s, nasa.start_s + 600, 60.0)
    np.testing.assert_allclose(h.values, nasa.values[:10])


def test_status_is_written_on_change_and_as_a_heartbeat(kube: FakeKube, nasa: Series) -> None:
    """Like the HPA: no API write per tick when nothing significant changed."""
    kube.add_deployment(NS, DEP, replicas=1)
    statuses: list[dict[str, Any]] = []
    r = runner_for(kube, ReplaySource(nasa), spec(mode="Observe"),
                   write_status=lambda s: statuses.append(s) or None)
    now = nasa.start_s + 3 * 86400 + 3 * 3600  # night: flat, stable decisions
    r.refit(now)
    for k in range(4):  # 45 s of identical decisions
        r.tick(now + 15 * k)
    assert len(statuses) == 1
    r.tick(now + 75)  # past the 60-s heartbeat
    assert len(statuses) == 2
    assert statuses[-1]["lastDecision"]["time"] != statuses[0]["lastDecision"]["time"]


@pytest.mark.parametrize("partial", [True, False])
def test_ticks_condition_the_bucket_in_progress_on_their_readings(partial: bool) -> None:
    """A 10-minute forecast step over levels that jump between buckets: after a few hours of
    ticks (each keeps its demand reading), the forecast of the bucket in progress is the
    level read in it; with ``partialBucket: false`` it stays the model's wide interval."""
    step = 600.0
    levels = np.random.default_rng(5).uniform(100.0, 300.0, 2 * 144 + 40)
    t0 = 1_800_000_000.0 - (1_800_000_000.0 % step) - len(levels) * step
    series = Series(start_s=t0, step_s=step, values=levels, kind="rate")
    sp = spec(forecast={"model": "nowcast", "history": "2d", "step": "10m",
                        "refitEvery": "6h", "partialBucket": partial},
              capacity={"requestsPerSecondPerReplica": 10.0}, interval="60s")
    r = TargetRunner(f"{NS}/pa", sp, ReplaySource(series), None)
    start = t0 + 2 * 86400 + 5
    assert r.refit(start)
    out = None
    for i in range(20 * 10 + 4):  # 20 buckets of minute ticks, then 4 minutes into the next
        out = r.tick(start + 60.0 * i)
    assert out is not None and out.forecast is not None
    b = round((out.forecast.start_s - t0) / step)
    assert out.now_s - out.forecast.start_s < step  # the first bucket is the one in progress
    if partial:
        np.testing.assert_allclose(out.forecast.values[:, 0], levels[b])
        assert "first bucket from 4 of 10 points" in out.forecast.detail
    else:
        assert "first bucket" not in out.forecast.detail
        fc = out.forecast
        assert fc.quantile(0.9)[0] - fc.quantile(0.5)[0] > 10.0


def test_a_restarted_controller_seeds_its_readings_from_the_history() -> None:
    """Right after a (re)start no tick has read the bucket's past yet: the refit fills the
    readings from one range query at the tick step, so the first ticks are conditioned."""
    step = 600.0
    levels = np.random.default_rng(6).uniform(100.0, 300.0, 2 * 144 + 10)
    t0 = 1_800_000_000.0 - (1_800_000_000.0 % step) - len(levels) * step
    series = Series(start_s=t0, step_s=step, values=levels, kind="rate")
    sp = spec(forecast={"model": "nowcast", "history": "2d", "step": "10m", "refitEvery": "6h"},
              capacity={"requestsPerSecondPerReplica": 10.0}, interval="60s")
    src = ReplaySource(series)
    r = TargetRunner(f"{NS}/pa", sp, src, None)
    now = t0 + 2 * 86400 + 3 * 60 + 5  # 3 minutes into a bucket
    assert r.live.readings_sparse
    before = src.range_queries
    assert r.refit(now)
    assert not r.live.readings_sparse
    out = r.tick(now)
    assert out.forecast is not None and "first bucket from 4 of 10" in out.forecast.detail
    b = round((out.forecast.start_s - t0) / step)
    np.testing.assert_allclose(out.forecast.values[:, 0], levels[b])
    # a second refit finds the readings full and makes no extra query for them
    queries = src.range_queries - before
    assert r.refit(now + 60)
    assert src.range_queries - before - queries <= 1  # at most the history's own top-up


def test_a_model_that_fails_to_fit_falls_back_to_a_simpler_one(
        kube: FakeKube, nasa: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    """ETS fails (as a statsmodels fit can on odd data): the refit fits nowcast instead,
    prediction stays on, visibly (condition, Event, error count); the next refit tries ETS
    again, and when nothing at all fits the target runs reactive-only."""
    import autoscaler.controller.target as target_mod
    from forecasting.errors import ForecastingError

    real = target_mod.fit_model
    broken = {"ets"}

    def flaky(name: str, kwargs: Any, history: Series) -> Any:
        if name in broken:
            raise ForecastingError(f"{name}: injected fit failure")
        return real(name, kwargs, history)

    monkeypatch.setattr(target_mod, "fit_model", flaky)
    kube.add_deployment(NS, DEP, replicas=1)
    m = ControllerMetrics()
    r = runner_for(kube, ReplaySource(nasa), spec(forecast={
        "model": "ets", "history": "3d", "step": "1m", "refitEvery": "1h"}), metrics=m)
    now = nasa.start_s + 3 * 86400 + 12 * 3600
    assert r.refit(now)
    assert r.model_in_use == "nowcast" and "ets failed" in r.model_fallback
    out = r.tick(now)
    assert out.prediction_used and out.applied
    cond = {c["type"]: c for c in r.status()["conditions"]}["PredictionReady"]
    assert (cond["status"], cond["reason"]) == ("True", "SimplerModel")
    assert "injected fit failure" in cond["message"]
    assert "forecasting with nowcast" in cond["message"]
    events = [o for (kind, _, _), o in kube.objects.items() if kind == "events"]
    assert any(e.get("reason") == "ModelFallback" for e in events)
    key = {"target": f"{NS}/pa"}
    assert m.registry.get_sample_value(
        "surgecast_controller_errors_total", {**key, "kind": "ModelFailed"}) == 1
    assert m.registry.get_sample_value(
        "surgecast_controller_refits_total", {**key, "result": "failed"}) == 1
    assert m.registry.get_sample_value("surgecast_controller_simpler_model", key) == 1
    # ETS fits again at the next refit: back to the configured model
    broken.clear()
    assert r.refit(now + 3600) and r.model_in_use == "ets" and r.model_fallback == ""
    r.tick(now + 3600)
    cond = {c["type"]: c for c in r.status()["conditions"]}["PredictionReady"]
    assert cond["reason"] == "Forecasting" and cond["message"].startswith("ets;")
    assert m.registry.get_sample_value("surgecast_controller_simpler_model", key) == 0
    # nothing fits: reactive only, and the reason says why
    broken.update({"ets", "nowcast", "seasonal_naive"})
    assert not r.refit(now + 7200)
    out = r.tick(now + 7200)
    assert not out.prediction_used and out.decision is not None
    cond = {c["type"]: c for c in r.status()["conditions"]}["PredictionReady"]
    assert (cond["status"], cond["reason"]) == ("False", "ModelFailed")
    assert "nowcast failed" in cond["message"] and "seasonal_naive failed" in cond["message"]
