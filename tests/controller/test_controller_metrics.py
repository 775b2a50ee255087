"""ControllerMetrics: names, labels and values as Prometheus parses them."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.controller.metrics import ControllerMetrics

T1 = "llm/worker"
T2 = "llm/other"


def samples(m: ControllerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered exposition, parsed back: {(name, labels): value}."""
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m: ControllerMetrics, name: str, **labels: str) -> float | None:
    return samples(m).get(("surgecast_controller_" + name, frozenset(labels.items())))


def series_of(m: ControllerMetrics, target: str) -> list[str]:
    return sorted(n for n, labels in samples(m) if ("target", target) in labels)


def tick(m: ControllerMetrics, target: str = T1, **kw: object) -> None:
    args: dict[str, object] = dict(reason="ForecastLead", desired=7, active=5, warm=2, ready=6,
                                   demand_rps=41.5, forecast_rps={0.5: 40.0, 0.9: 55.25},
                                   duration_s=0.004, fetch_s=0.003, now_s=1_800_000_000.0)
    args.update(kw)
    m.observe_tick(target, **args)  # type: ignore[arg-type]


def test_tick_values_names_and_labels() -> None:
    m = ControllerMetrics()
    tick(m)
    tick(m, reason="ReactiveFloor", desired=8, active=6)
    tick(m, reason="ReactiveFloor", desired=9, active=7)
    assert value(m, "decisions_total", target=T1, reason="ForecastLead") == 1
    assert value(m, "decisions_total", target=T1, reason="ReactiveFloor") == 2
    assert value(m, "desired_replicas", target=T1) == 9
    assert value(m, "active_replicas", target=T1) == 7
    assert value(m, "warm_replicas", target=T1) == 2
    assert value(m, "ready_replicas", target=T1) == 6
    assert value(m, "demand_requests_per_second", target=T1) == 41.5
    assert value(m, "forecast_requests_per_second", target=T1, quantile="0.5") == 40.0
    assert value(m, "forecast_requests_per_second", target=T1, quantile="0.9") == 55.25
    assert value(m, "last_tick_timestamp_seconds", target=T1) == 1_800_000_000.0
    # histograms are unlabelled: their cardinality does not grow with targets
    assert value(m, "loop_duration_seconds_count") == 3
    assert value(m, "loop_duration_seconds_sum") == pytest.approx(0.012)
    assert value(m, "loop_duration_seconds_bucket", le="0.005") == 3
    assert value(m, "loop_duration_seconds_bucket", le="0.0025") == 0
    assert value(m, "fetch_duration_seconds_count") == 3
    text = m.render()[0].decode()
    assert "# TYPE surgecast_controller_decisions_total counter" in text
    assert "# TYPE surgecast_controller_loop_duration_seconds histogram" in text
    assert "# TYPE surgecast_controller_desired_replicas gauge" in text


def test_missing_demand_is_absent_not_zero() -> None:
    m = ControllerMetrics()
    tick(m, demand_rps=None)
    assert value(m, "demand_requests_per_second", target=T1) is None
    assert ("surgecast_controller_demand_requests_per_second" not in
            {n for n, _ in samples(m)})
    tick(m, demand_rps=12.0)
    assert value(m, "demand_requests_per_second", target=T1) == 12.0
    tick(m, demand_rps=None)  # data goes missing again: the old value must not linger
    assert value(m, "demand_requests_per_second", target=T1) is None
    tick(m, demand_rps=math.nan)  # NaN is missing too (Series' convention)
    assert value(m, "demand_requests_per_second", target=T1) is None


def test_forecast_quantiles_that_go_away_lose_their_series() -> None:
    m = ControllerMetrics()
    tick(m, forecast_rps={0.5: 1.0, 0.9: 2.0, 0.99: 3.0})
    assert value(m, "forecast_requests_per_second", target=T1, quantile="0.99") == 3.0
    tick(m, forecast_rps={0.5: 1.5})
    assert value(m, "forecast_requests_per_second", target=T1, quantile="0.5") == 1.5
    assert value(m, "forecast_requests_per_second", target=T1, quantile="0.9") is None
    assert value(m, "forecast_requests_per_second", target=T1, quantile="0.99") is None
    tick(m, forecast_rps={})  # no forecast at all (fallback)
    assert value(m, "forecast_requests_per_second", target=T1, quantile="0.5") is None


def test_quality_fallback_errors_refits_leader_targets() -> None:
    m = ControllerMetrics()
    m.observe_forecast_quality(T1, mae=3.5, reactive_mae=5.0, coverage=0.92,
                               prediction_enabled=True)
    assert value(m, "forecast_mae_requests_per_second", target=T1) == 3.5
    assert value(m, "reactive_mae_requests_per_second", target=T1) == 5.0
    assert value(m, "forecast_coverage_ratio", target=T1) == 0.92
    assert value(m, "prediction_enabled", target=T1) == 1
    assert value(m, "scaling_quantile", target=T1) is None  # not given: absent
    m.observe_forecast_quality(T1, mae=1.0, reactive_mae=1.0, coverage=0.9,
                               prediction_enabled=True, quantile=0.95)
    assert value(m, "scaling_quantile", target=T1) == 0.95
    m.observe_forecast_quality(T1, mae=None, reactive_mae=None, coverage=None,
                               prediction_enabled=False)
    assert value(m, "forecast_mae_requests_per_second", target=T1) is None
    assert value(m, "forecast_coverage_ratio", target=T1) is None
    assert value(m, "prediction_enabled", target=T1) == 0
    m.set_fallback(T1, True)
    assert value(m, "fallback_active", target=T1) == 1
    m.set_fallback(T1, False)
    assert value(m, "fallback_active", target=T1) == 0
    m.set_applying(T1, True)
    assert value(m, "applying", target=T1) == 1
    m.set_applying(T1, False)
    assert value(m, "applying", target=T1) == 0
    m.count_error(T1, "MetricsUnavailable")
    m.count_error(T1, "MetricsUnavailable")
    m.count_error(T1, "ActuationConflict")
    assert value(m, "errors_total", target=T1, kind="MetricsUnavailable") == 2
    assert value(m, "errors_total", target=T1, kind="ActuationConflict") == 1
    m.count_refit(T1, ok=True, duration_s=0.8)
    m.count_refit(T1, ok=False, duration_s=0.2)
    assert value(m, "refits_total", target=T1, result="ok") == 1
    assert value(m, "refits_total", target=T1, result="failed") == 1
    assert value(m, "refit_duration_seconds_count") == 2
    assert value(m, "refit_duration_seconds_bucket", le="1.0") == 2
    m.set_leader(True)
    assert value(m, "leader") == 1
    m.set_leader(False)
    assert value(m, "leader") == 0
    m.set_targets(3)
    assert value(m, "targets") == 3


def test_remove_target_drops_every_series_of_that_target_only() -> None:
    m = ControllerMetrics()
    for t in (T1, T2):
        tick(m, target=t)
        m.observe_forecast_quality(t, mae=1.0, reactive_mae=2.0, coverage=0.9,
                                   prediction_enabled=True, quantile=0.95)
        m.set_fallback(t, False)
        m.set_applying(t, True)
        m.count_error(t, "TargetNotFound")
        m.count_refit(t, ok=True, duration_s=0.1)
    before_t2 = series_of(m, T2)
    assert len(series_of(m, T1)) == 23  # 20 metrics + the 3 counters' _created
    m.remove_target(T1)
    assert series_of(m, T1) == []
    assert series_of(m, T2) == before_t2
    m.remove_target(T1)  # twice: nothing left, no error
    tick(m, target=T1)  # a target that comes back starts afresh
    assert value(m, "decisions_total", target=T1, reason="ForecastLead") == 1


def test_own_registry_never_the_global_one() -> None:
    from prometheus_client import REGISTRY

    a, b = ControllerMetrics(), ControllerMetrics()  # no "Duplicated timeseries" clash
    assert a.registry is not REGISTRY and a.registry is not b.registry
    assert REGISTRY.get_sample_value("surgecast_controller_leader") is None
    shared = CollectorRegistry()
    Counter("other_total", "another component's counter", registry=shared).inc()
    m = ControllerMetrics(shared)
    m.set_leader(True)
    names = {n for n, _ in samples(m)}
    assert {"other_total", "surgecast_controller_leader"} <= names
