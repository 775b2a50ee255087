"""The PredictiveAutoscaler spec: defaults, round trips, conversion and field-path errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.adapters.prometheus import GPU_PRESETS, PRESETS, PrometheusSource
from autoscaler.config import (
    FIXED_LEAD_MIN_SAMPLES,
    PredictiveAutoscalerSpec,
    forecaster_kwargs,
    load_config,
    query_set,
    source_kwargs,
    to_policy_settings,
    validate_spec,
)
from autoscaler.core.settings import (
    Behavior,
    Fallback,
    RateRule,
    ScalingRules,
    ScheduleWindow,
    Tier,
)
from autoscaler.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "manifests" / "samples" / "predictiveautoscaler.yaml"

MINIMAL: dict[str, Any] = {
    "scaleTargetRef": {"name": "surgecast-worker"},
    "capacity": {"requestsPerSecondPerReplica": 4},
}


def spec_with(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(MINIMAL)
    d.update(changes)
    return d


# ----------------------------------------------------------------------------- defaults
def test_defaults_are_the_hpa_and_keda_numbers_of_reference_md() -> None:
    wire = validate_spec(MINIMAL).to_wire()
    # Kubernetes HPA v2 default behavior (REFERENCE.md)
    assert wire["behavior"] == {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 4, "periodSeconds": 15},
            ],
            "selectPolicy": "Max",
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
            "selectPolicy": "Max",
        },
    }
    assert wire["interval"] == "15s"  # HPA sync period
    assert wire["minReplicas"] == 1  # HPA default
    assert wire["maxReplicas"] == 100  # KEDA maxReplicaCount
    assert wire["capacity"]["targetUtilization"] == 0.7  # KPA target utilization 70 %
    assert wire["mode"] == "Auto"
    assert wire["leadTime"] == {"mode": "Auto", "coldStart": "120s", "warmPromotion": "5s"}
    assert wire["warmPool"]["maxReplicas"] == 0  # warm pool off unless asked for
    assert "fallback" not in wire  # off unless configured, like KEDA
    assert validate_spec(spec_with(fallback={"replicas": 6})).to_wire()["fallback"] == {
        "failureThreshold": 3,
        "replicas": 6,
        "behavior": "static",  # KEDA's default fallback behavior
    }


def test_fallback_needs_its_replicas() -> None:
    """``fallback: {}`` once meant static 1 replica: a Prometheus outage longer than the
    scale-down window took a loaded Deployment from 10 replicas to 1. As in KEDA, the count
    must be written; an absent block still means no fallback (hold)."""
    with pytest.raises(ConfigError, match=r"^spec\.fallback\.replicas: is required$"):
        validate_spec(spec_with(fallback={}))
    with pytest.raises(ConfigError, match=r"spec\.fallback\.replicas: is required"):
        validate_spec(spec_with(fallback={"failureThreshold": 5,
                                          "behavior": "currentReplicasIfHigher"}))
    assert validate_spec(MINIMAL).fallback is None


@pytest.mark.parametrize(("changes", "error"), [
    ({"interval": "15ms"}, "spec.interval: must be at least 1s, got '15ms'"),
    ({"interval": "0.5s"}, "spec.interval: must be at least 1s, got '0.5s'"),
    ({"interval": 0}, "spec.interval: "),
    ({"forecast": {"step": "1500ms", "history": "1h"}},
     "spec.forecast.step: must be a whole number of seconds >= 1s, got '1500ms'"),
    ({"forecast": {"step": "500ms", "history": "1h"}, "interval": "1s"},
     "spec.forecast.step: must be a whole number of seconds >= 1s, got '500ms'"),
    ({"forecast": {"step": "10s"}},
     "spec.forecast.step: must be at least the interval (15s), got 10s"),
    ({"forecast": {"step": "1m"}, "interval": "2m"},
     "spec.forecast.step: must be at least the interval (2m), got 1m"),
])
def test_tick_and_grid_floors(changes: dict[str, Any], error: str) -> None:
    """``15ms`` for ``15s`` ticked back to back (~70 API requests a second); a step that is
    not whole seconds failed every refit forever; a step below the tick has buckets no tick
    reads. Each is refused up front, naming the field."""
    with pytest.raises(ConfigError) as info:
        validate_spec(spec_with(**changes))
    assert str(info.value).startswith(error)


@pytest.mark.parametrize("changes", [
    {"interval": "1s", "forecast": {"step": "1s", "history": "1h"}},
    {"interval": "1500ms", "forecast": {"step": "2s", "history": "1h"}},
    {"interval": "15s", "forecast": {"step": "15s"}},
])
def test_tick_and_grid_at_their_floors_are_accepted(changes: dict[str, Any]) -> None:
    validate_spec(spec_with(**changes))


def test_default_behavior_equals_the_cores_behavior() -> None:
    settings = to_policy_settings(validate_spec(MINIMAL))
    assert settings.behavior == Behavior()
    assert settings.fallback is None
    assert settings.tolerance == 0.1  # HPA tolerance, kept by the core
    assert settings.lead_min_samples < FIXED_LEAD_MIN_SAMPLES


def test_partial_behavior_takes_the_default_of_its_own_side() -> None:
    spec = validate_spec(spec_with(behavior={"scaleDown": {"stabilizationWindowSeconds": 60}}))
    b = to_policy_settings(spec).behavior
    assert b.scale_up == Behavior().scale_up
    assert b.scale_down == ScalingRules(60.0, (RateRule("Percent", 100, 15.0),), "Max")
    spec = validate_spec(
        spec_with(behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 2,
                                                      "periodSeconds": 60}]}})
    )
    b = to_policy_settings(spec).behavior
    assert b.scale_up == ScalingRules(0.0, (RateRule("Pods", 2, 60.0),), "Max")
    assert b.scale_down == Behavior().scale_down


# ----------------------------------------------------------------------------- conversion
def test_sample_converts_to_policy_settings_field_by_field() -> None:
    spec = load_config(SAMPLE)
    s = to_policy_settings(spec)
    assert s.capacity_rps_per_replica == 4.0
    assert s.target_util_ratio == 0.7
    assert s.target_rps_per_replica == pytest.approx(2.8)
    assert (s.min_replicas, s.max_replicas) == (1, 16)
    assert (s.warm_min, s.warm_max, s.warm_quantile) == (1, 4, 0.95)
    assert s.quantile == 0.9
    assert s.interval_s == 15.0
    assert s.cold_start_prior_s == 120.0
    assert s.warm_promotion_s == 5.0
    assert s.behavior.scale_down == ScalingRules(300.0, (RateRule("Percent", 50, 60.0),), "Max")
    assert s.behavior.scale_up == Behavior().scale_up
    assert s.fallback == Fallback(3, 4, "currentReplicasIfHigher")
    assert s.schedule == (
        ScheduleWindow("08:00", "20:00", 2, None, frozenset({0, 1, 2, 3, 4}), "Europe/Berlin"),
    )
    assert forecaster_kwargs(spec) == {
        "model": "nowcast", "forecast_step_s": 60.0, "refit_every_s": 3600.0,
        "partial_bucket": True, "adaptive": {"step": 0.05, "lo": 0.85, "hi": 0.98},
    }
    assert s.ramp_lookahead_s == 120.0


def test_the_ramp_look_ahead_and_the_partial_bucket_are_configurable() -> None:
    spec = validate_spec(spec_with(forecast={"rampLookahead": "0s", "partialBucket": False}))
    assert to_policy_settings(spec).ramp_lookahead_s == 0.0
    assert forecaster_kwargs(spec)["partial_bucket"] is False
    with pytest.raises(ConfigError, match="ramp_lookahead_s must be in"):
        to_policy_settings(validate_spec(spec_with(forecast={"rampLookahead": "2h"})))


def test_fixed_lead_time_never_learns() -> None:
    spec = validate_spec(spec_with(leadTime={"mode": "Fixed", "coldStart": "5m"}))
    s = to_policy_settings(spec)
    assert s.cold_start_prior_s == 300.0
    assert s.lead_min_samples == FIXED_LEAD_MIN_SAMPLES


def test_query_set_is_the_preset_with_gpu_source_and_overrides() -> None:
    spec = validate_spec(spec_with(signals={"preset": "vllm", "gpu": "worker"}))
    q = query_set(spec)
    assert q.demand_rps == PRESETS["vllm"].demand_rps
    assert q.gpu_util_ratio == GPU_PRESETS["worker"]
    none = query_set(validate_spec(spec_with(signals={"gpu": "none"})))
    assert none.gpu_util_ratio is None
    custom = "sum(rate(my_requests_total{$selector}[$window]))"
    spec = validate_spec(spec_with(signals={
        "selector": 'app="w"', "window": "2m", "queries": {"demandRps": custom},
    }))
    src = PrometheusSource("http://prometheus:9090", **source_kwargs(spec))
    assert src.rendered["demand_rps"] == 'sum(rate(my_requests_total{app="w"}[2m]))'
    assert src.rendered["gpu_util_ratio"] == 'avg(DCGM_FI_DEV_GPU_UTIL{app="w"}) / 100'
    assert src.combine_retry_s == 600.0  # the default 10m


@pytest.mark.parametrize(("raw", "seconds"), [("10m", 600.0), ("90s", 90.0), ("0s", 0.0)])
def test_combine_retry_reaches_the_source(raw: str, seconds: float) -> None:
    spec = validate_spec(spec_with(signals={"combineRetry": raw}))
    src = PrometheusSource("http://prometheus:9090", **source_kwargs(spec))
    assert src.combine_retry_s == seconds


# ----------------------------------------------------------------------------- round trips
def test_yaml_round_trip_is_stable(tmp_path: Path) -> None:
    spec = load_config(SAMPLE)
    text = yaml.safe_dump(spec.to_wire(), sort_keys=False)
    bare = tmp_path / "bare.yaml"
    bare.write_text(text)
    again = load_config(bare)
    assert again == spec
    assert again.to_wire() == spec.to_wire()
    # snake_case in Python, camelCase on the wire
    assert spec.scale_target_ref.name == "surgecast-worker"
    assert "scaleTargetRef" in spec.to_wire() and "scale_target_ref" not in spec.to_wire()
    assert PredictiveAutoscalerSpec.model_validate(spec.to_wire()) == spec


def test_integer_durations_are_seconds() -> None:
    spec = validate_spec(spec_with(interval=30, leadTime={"coldStart": 90}))
    assert spec.interval == "30s"
    assert to_policy_settings(spec).cold_start_prior_s == 90.0


# ----------------------------------------------------------------------------- errors
BAD: list[tuple[dict[str, Any], str]] = [
    (
        spec_with(behavior={"scaleUp": {"policies": [{"type": "Pod", "value": 1,
                                                      "periodSeconds": 15}]}}),
        "spec.behavior.scaleUp.policies[0].type: must be one of Pods, Percent",
    ),
    (
        spec_with(behavior={"scaleDown": {"policies": [{"type": "Pods", "value": 1,
                                                        "periodSeconds": 3600}]}}),
        "spec.behavior.scaleDown.policies[0].periodSeconds: must be <= 1800",
    ),
    (
        spec_with(behavior={"scaleDown": {"selectPolicy": "Average"}}),
        "spec.behavior.scaleDown.selectPolicy: must be one of Max, Min, Disabled",
    ),
    ({"scaleTargetRef": {"name": "w"}}, "spec.capacity: is required"),
    ({"capacity": {"requestsPerSecondPerReplica": 1}}, "spec.scaleTargetRef: is required"),
    (
        spec_with(capacity={"requestsPerSecondPerReplica": 0}),
        "spec.capacity.requestsPerSecondPerReplica: must be > 0",
    ),
    (
        spec_with(capacity={"requestsPerSecondPerReplica": "fast"}),
        "spec.capacity.requestsPerSecondPerReplica: input should be a valid number",
    ),
    (
        spec_with(capacity={"requestsPerSecondPerReplica": 1, "targetUtilization": 1.5}),
        "spec.capacity.targetUtilization: must be <= 1",
    ),
    (spec_with(interval="15 seconds"), "spec.interval: must be a duration such as 90s"),
    (spec_with(minReplicas=5, maxReplicas=2), "spec: minReplicas (5) must be <= maxReplicas"),
    (spec_with(minReplicas=-1), "spec.minReplicas: must be >= 0"),
    (spec_with(mode="DryRun"), "spec.mode: must be one of Auto, Observe"),
    (spec_with(replicas=3), "spec.replicas: unknown field"),
    (spec_with(warmPool={"minReplicas": 3, "maxReplicas": 1}), "spec.warmPool: minReplicas (3)"),
    (spec_with(warmPool={"quantile": 1.0}), "spec.warmPool.quantile: must be < 1"),
    (spec_with(signals={"preset": "triton"}), "spec.signals.preset: must be one of surgecast"),
    (spec_with(signals={"gpu": "nvml"}), "spec.signals.gpu: must be one of dcgm, worker, none"),
    (
        spec_with(signals={"queries": {"queueDepth": "sum(q{$namespace})"}}),
        "spec.signals: PromQL template for 'queue_depth' has an unknown or bad placeholder",
    ),
    (spec_with(signals={"queries": {"latency": "x"}}), "spec.signals.queries.latency: unknown"),
    (spec_with(forecast={"model": "prophet"}), "spec.forecast.model: must be one of auto,"),
    (spec_with(forecast={"quantile": 0}), "spec.forecast.quantile: must be > 0"),
    (spec_with(forecast={"history": "1m", "step": "1m"}), "spec.forecast: history must be"),
    (
        spec_with(forecast={"quantile": 0.9, "adaptiveQuantile": {"min": 0.95}}),
        "spec.forecast: adaptiveQuantile needs min <= quantile <= max, got 0.95 <= 0.9 <= 0.98",
    ),
    (
        spec_with(forecast={"quantile": 0.9, "adaptiveQuantile": {"max": 0.8}}),
        "spec.forecast: adaptiveQuantile needs min <= quantile <= max, got 0.85 <= 0.9 <= 0.8",
    ),
    (
        spec_with(forecast={"adaptiveQuantile": {"step": 0.9}}),
        "spec.forecast.adaptiveQuantile.step: must be <= 0.5",
    ),
    (
        spec_with(forecast={"adaptiveQuantile": {"gamma": 0.1}}),
        "spec.forecast.adaptiveQuantile.gamma: unknown field",
    ),
    (spec_with(leadTime={"mode": "Learned"}), "spec.leadTime.mode: must be one of Auto, Fixed"),
    (spec_with(leadTime={"coldStart": "-5s"}), "spec.leadTime.coldStart: must be a duration"),
    (spec_with(fallback={"failureThreshold": 0}), "spec.fallback.failureThreshold: must be >= 1"),
    (
        spec_with(fallback={"behavior": "max"}),
        "spec.fallback.behavior: must be one of static, currentReplicas,",
    ),
    (
        spec_with(schedules=[{"start": "8am", "end": "20:00"}]),
        "spec.schedules[0].start: '8am' does not match",
    ),
    (
        spec_with(schedules=[{"start": "08:00", "end": "20:00", "timezone": "Mars/Olympus"}]),
        "spec.schedules[0]: unknown time zone 'Mars/Olympus'",
    ),
    (
        spec_with(schedules=[{"start": "08:00", "end": "20:00", "days": [7]}]),
        "spec.schedules[0].days[0]: must be <= 6",
    ),
    (
        spec_with(schedules=[{"start": "08:00", "end": "09:00", "minReplicas": 4,
                              "maxReplicas": 2}]),
        "spec.schedules[0]: schedule max_replicas must be >= min_replicas",
    ),
    (
        spec_with(scaleTargetRef={"kind": "StatefulSet", "name": "w"}),
        "spec.scaleTargetRef.kind: must be one of Deployment",
    ),
    (
        spec_with(behavior={"scaleUp": {"tolerance": 1}}),
        "spec.behavior.scaleUp.tolerance: must be < 1",
    ),
    (
        spec_with(behavior={"scaleDown": {"tolerance": -0.1}}),
        "spec.behavior.scaleDown.tolerance: must be >= 0",
    ),
    (
        spec_with(gpuTiers=[{"utilizationAtLeast": 0, "scaleFactor": 1.5}]),
        "spec.gpuTiers[0].utilizationAtLeast: must be > 0",
    ),
    (
        spec_with(gpuTiers=[{"utilizationAtLeast": 0.9, "scaleFactor": 0.9}]),
        "spec.gpuTiers[0].scaleFactor: must be >= 1",
    ),
    (
        spec_with(gpuTiers=[{"utilizationAtLeast": 0.9, "scaleFactor": 1.5}],
                  signals={"gpu": "none"}),
        "spec.gpuTiers: need a GPU utilisation source: signals.gpu is none",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_invalid_input_names_the_field_path(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_spec(data)
    text = str(info.value)
    assert message in text
    assert "pydantic" not in text and "Traceback" not in text and "errors.pydantic.dev" not in text


def test_several_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        validate_spec(spec_with(mode="x", minReplicas=-1))
    assert "spec.mode:" in str(info.value) and "spec.minReplicas:" in str(info.value)


def test_load_config_accepts_a_cr_or_a_bare_spec_and_rejects_the_rest(tmp_path: Path) -> None:
    cr = load_config(SAMPLE)
    assert cr.mode == "Observe"
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(bare).scale_target_ref.name == "surgecast-worker"

    wrong_kind = tmp_path / "hpa.yaml"
    wrong_kind.write_text(yaml.safe_dump({"apiVersion": "autoscaling/v2",
                                          "kind": "HorizontalPodAutoscaler", "spec": MINIMAL}))
    with pytest.raises(ConfigError, match="kind/apiVersion must be PredictiveAutoscaler"):
        load_config(wrong_kind)

    bad_field = tmp_path / "bad.yaml"
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["spec"]["behavior"]["scaleDown"]["policies"][0]["type"] = "Replicas"
    bad_field.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"spec\.behavior\.scaleDown\.policies\[0\]\.type: "
                                          r"must be one of Pods, Percent"):
        load_config(bad_field)

    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: {minReplicas: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(broken)

    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)

    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_spec_is_immutable() -> None:
    spec = validate_spec(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        spec.min_replicas = 3  # type: ignore[misc]


def test_signal_enums_match_the_adapters_presets() -> None:
    props = PredictiveAutoscalerSpec.model_json_schema(by_alias=True)["$defs"]["Signals"][
        "properties"
    ]
    assert set(props["preset"]["enum"]) == set(PRESETS)
    assert set(props["gpu"]["enum"]) == set(GPU_PRESETS) | {"none"}


def test_forecast_sizing_knobs_reach_the_core_and_zero_means_off() -> None:
    from autoscaler.config import to_policy_settings, validate_spec
    from autoscaler.core.settings import PolicySettings

    core = PolicySettings(capacity_rps_per_replica=1.0)
    base = {"scaleTargetRef": {"name": "w"}, "capacity": {"requestsPerSecondPerReplica": 2}}
    d = to_policy_settings(validate_spec(base))
    assert d.forecast_util_ratio == core.forecast_util_ratio
    assert d.backlog_drain_s == core.backlog_drain_s
    assert d.queue_growth is core.queue_growth is True
    assert d.predictive_down_window_s == core.predictive_down_window_s
    s = to_policy_settings(validate_spec({
        **base,
        "capacity": {"requestsPerSecondPerReplica": 2, "forecastUtilization": 0.9,
                     "backlogDrain": "0s", "queueGrowth": False},
        "forecast": {"scaleDownHold": "2m"},
    }))
    assert (s.forecast_util_ratio, s.backlog_drain_s, s.predictive_down_window_s) == (
        0.9, 0.0, 120.0)
    assert s.queue_growth is False
    assert d.predicting_target_util_ratio == core.predicting_target_util_ratio == 0.9
    hot = to_policy_settings(validate_spec({
        **base, "capacity": {"requestsPerSecondPerReplica": 2, "targetUtilization": 0.8,
                             "targetUtilizationWhilePredicting": 0.95}}))
    assert (hot.reactive_util(True), hot.reactive_util(False)) == (0.95, 0.8)
    for bad in ({"backlogDrain": "-1s"}, {"forecastUtilization": 0},
                {"targetUtilizationWhilePredicting": 1.2}, {"queueGrowth": "sometimes"}):
        with pytest.raises(ConfigError):
            validate_spec({**base, "capacity": {"requestsPerSecondPerReplica": 2, **bad}})


def test_adaptive_quantile_defaults_follow_the_quantile_and_step_zero_is_off() -> None:
    from autoscaler.config import adaptive_kwargs

    assert adaptive_kwargs(validate_spec(MINIMAL).forecast) == {
        "step": 0.05, "lo": 0.85, "hi": 0.98}
    hi_q = validate_spec(spec_with(forecast={"quantile": 0.99})).forecast
    assert adaptive_kwargs(hi_q) == {"step": 0.05, "lo": 0.94, "hi": 0.99}
    own = validate_spec(spec_with(forecast={"quantile": 0.8, "adaptiveQuantile": {
        "step": 0.01, "min": 0.7, "max": 0.9}})).forecast
    assert adaptive_kwargs(own) == {"step": 0.01, "lo": 0.7, "hi": 0.9}
    off = validate_spec(spec_with(forecast={"adaptiveQuantile": {"step": 0}})).forecast
    assert adaptive_kwargs(off) is None


def test_tolerance_per_direction_and_gpu_tiers_reach_the_core() -> None:
    spec = validate_spec(spec_with(
        behavior={"scaleUp": {"tolerance": 0.02}, "scaleDown": {"tolerance": 0.3}},
        gpuTiers=[{"utilizationAtLeast": 0.7, "scaleFactor": 1.25},
                  {"utilizationAtLeast": 0.9, "scaleFactor": 1.5}],
    ))
    s = to_policy_settings(spec)
    assert s.behavior.scale_up.tolerance == 0.02 and s.behavior.scale_down.tolerance == 0.3
    # the rest of each side keeps the HPA defaults
    assert s.behavior.scale_up.policies == Behavior().scale_up.policies
    assert s.behavior.scale_down.stabilization_window_s == 300
    assert s.tiers == (Tier(0.7, 1.25), Tier(0.9, 1.5))
    # left out: the cluster-wide 0.1 both ways, no tiers
    plain = to_policy_settings(validate_spec(MINIMAL))
    assert plain.behavior.scale_up.tolerance is None and plain.tolerance == 0.1
    assert plain.tiers == ()
    assert "tolerance" not in spec_with()["capacity"]
    # the CR round-trips: what a user wrote is what the controller reads back
    assert validate_spec(spec.to_wire()) == spec


def test_the_capacity_settles_over_the_rate_window_plus_one_interval() -> None:
    spec = validate_spec(spec_with(interval="30s", signals={"window": "2m"}))
    assert to_policy_settings(spec).capacity_settle_s == pytest.approx(150.0)
    assert to_policy_settings(validate_spec(MINIMAL)).capacity_settle_s == pytest.approx(75.0)
