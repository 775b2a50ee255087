"""The ``PredictiveAutoscaler`` custom resource (``surgecast.io/v1alpha1``) as pydantic models.

The spec is camelCase on the wire and snake_case in Python. Defaults are taken from the core's
dataclasses (:class:`~autoscaler.core.settings.PolicySettings`, ``Behavior``, ``Fallback``), so
they equal the Kubernetes HPA / KEDA defaults in one place only. Every invalid input raises
:class:`~autoscaler.errors.ConfigError` whose message names the field path, e.g.
``spec.behavior.scaleUp.policies[0].type: must be one of Pods, Percent``.

Entry points:

* :func:`validate_spec` / :func:`load_config`: a mapping or a YAML file (a full CR document or
  a bare spec) to a validated :class:`PredictiveAutoscalerSpec`;
* :func:`to_policy_settings`, :func:`query_set`, :func:`source_kwargs`,
  :func:`forecaster_kwargs`: the spec for the core policy, the Prometheus adapter and the
  forecaster;
* :func:`crd`: the CustomResourceDefinition generated from the models
  (``python -m autoscaler.config --crd > manifests/controller/crd.yaml``).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from autoscaler.adapters.prometheus import QuerySet, preset
from autoscaler.core.settings import (
    DEFAULT_FORECAST_MODEL,
    Behavior,
    Fallback,
    PolicySettings,
    RateRule,
    ScalingRules,
    ScheduleWindow,
    Tier,
)
from autoscaler.errors import ConfigError
from forecasting.adaptive import DEFAULT_STEP, default_bounds
from forecasting.models import REGISTRY
from forecasting.series import parse_duration

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PredictiveAutoscaler",
    "PredictiveAutoscalerSpec",
    "crd",
    "forecaster_kwargs",
    "load_config",
    "query_set",
    "source_kwargs",
    "to_policy_settings",
    "validate_spec",
]

GROUP = "surgecast.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PredictiveAutoscaler"
PLURAL = "predictiveautoscalers"

# The single source of the defaults: the core's dataclasses (HPA / KEDA numbers).
_CORE = PolicySettings(capacity_rps_per_replica=1.0)
_CORE_BEHAVIOR = Behavior()
_CORE_FALLBACK = Fallback()
#: The shortest controller tick a spec may ask for, seconds.
MIN_INTERVAL_S = 1.0

_DURATION_RE = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+$"


def _secs(x: float) -> str:
    """``120.0`` -> ``"120s"`` (wire form of a core default)."""
    return f"{x:g}s"


def _duration_in(value: Any) -> Any:
    # YAML users write 120 for 120 s; the wire form is always a string with a unit.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return f"{value:g}s"
    return value


def _duration_check(value: str) -> str:
    parse_duration(value)  # ValueError names the problem
    return value


Duration = Annotated[
    str,
    StringConstraints(pattern=_DURATION_RE),
    AfterValidator(_duration_check),
    BeforeValidator(_duration_in),
]


def _zero_re(text: str) -> bool:
    return bool(re.fullmatch(r"0+(\.0+)?(ms|s|m|h|d|w)?", text.strip()))


def _duration_or_zero_check(value: str) -> str:
    if not _zero_re(value):
        parse_duration(value)
    return value


#: a duration that may also be zero (``0s``: off)
DurationOrZero = Annotated[
    str,
    StringConstraints(pattern=_DURATION_RE),
    AfterValidator(_duration_or_zero_check),
    BeforeValidator(_duration_in),
]


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


def _core(fn: Any) -> Any:
    """Run a core constructor, turning its ConfigError into a ValueError pydantic locates."""
    try:
        return fn()
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


# ----------------------------------------------------------------------------- spec parts
class ScaleTargetRef(_Wire):
    """The workload to scale (only ``apps/v1`` Deployments today)."""

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    name: str = Field(min_length=1, max_length=253)
    """Name of the Deployment, in the resource's namespace."""


class WarmPool(_Wire):
    """Warm pods: scheduled and loaded but not serving; ``maxReplicas: 0`` disables it."""

    min_replicas: int = Field(default=_CORE.warm_min, ge=0)
    """Warm pods always kept (pods)."""
    max_replicas: int = Field(default=_CORE.warm_max, ge=0)
    """Most warm pods (pods); 0 disables the warm pool."""
    quantile: float = Field(default=_CORE.warm_quantile, gt=0, lt=1)
    """High forecast quantile that sizes the warm pool, in (0, 1)."""

    @model_validator(mode="after")
    def _bounds(self) -> WarmPool:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        return self


class Queries(_Wire):
    """Per-signal PromQL overrides (placeholders ``$selector``, ``$gpu_selector``, ``$window``)."""

    demand_rps: str | None = None
    tokens_per_s: str | None = None
    queue_depth: str | None = None
    running: str | None = None
    gpu_util_ratio: str | None = None
    throughput_rps: str | None = None
    """Requests served per second across the pods (refines the per-replica capacity)."""
    freshness: str | None = None
    history: str | None = None


class Signals(_Wire):
    """Where the signals come from: an engine preset, a GPU source and overrides."""

    preset: Literal["surgecast", "vllm", "tgi"] = "surgecast"
    """Engine metric names: surgecast, vllm or tgi."""
    gpu: Literal["dcgm", "worker", "none"] = "dcgm"
    """GPU utilisation source: DCGM exporter, the worker's gauge, or none."""
    selector: str = ""
    """PromQL label matchers of the target's pods, e.g. namespace="llm",app="w"."""
    gpu_selector: str | None = None
    """Label matchers for the GPU exporter (default: selector)."""
    window: Duration = "1m"
    """rate() window, a duration such as 1m."""
    queries: Queries = Field(default_factory=Queries)
    """Per-signal PromQL overrides."""
    combine_retry: DurationOrZero = "10m"
    """After Prometheus refuses or fails the one combined query per tick, query each signal
    on its own for this long, then try the combined query again (0s: never again)."""

    @model_validator(mode="after")
    def _render(self) -> Signals:
        # Fails on a bad placeholder in an override, naming the signal.
        _core(lambda: _queries(self).render(selector="", gpu_selector="", window="1m"))
        return self


class AdaptiveQuantile(_Wire):
    """Adaptive conformal inference on the scaling quantile: after every forecast bucket the
    level the forecast is read at moves up by step x quantile when demand came out above it
    and down by step x (1 - quantile) otherwise, so runs of misses are answered within a few
    buckets and the long-run share of buckets above the forecast stays 1 - quantile."""

    step: float = Field(default=DEFAULT_STEP, ge=0, le=0.5)
    """How far one bucket moves the level (0: off, the quantile is read as configured)."""
    min: float | None = Field(default=None, gt=0, lt=1)
    """Lowest level read, at most forecast.quantile (default: forecast.quantile - 0.05)."""
    max: float | None = Field(default=None, gt=0, lt=1)
    """Highest level read, at least forecast.quantile (default: 0.98, or the quantile when
    higher)."""

    def bounds(self, quantile: float) -> tuple[float, float]:
        """``(min, max)`` of the level for ``quantile``, defaults filled in."""
        lo, hi = default_bounds(quantile)
        return (lo if self.min is None else self.min), (hi if self.max is None else self.max)


#: longest ``forecast.history``: 90 days, beyond Prometheus' usual retention and many times
#: the weekly season the models use (a longer one only loads Prometheus, or overflows dates)
MAX_FORECAST_HISTORY_S = 90 * 86400.0


class ForecastSpec(_Wire):
    """The forecaster: model, quantile sized for, history length, refit cadence, step."""

    model: str = Field(
        default=DEFAULT_FORECAST_MODEL,
        json_schema_extra={"enum": list[JsonValue](sorted(REGISTRY))},
    )
    """Forecaster name (forecasting.models.REGISTRY)."""
    quantile: float = Field(default=_CORE.quantile, gt=0, lt=1)
    """Demand quantile the active replicas are sized for, in (0, 1)."""
    history: Duration = "7d"
    """History fetched for fitting, a duration."""
    refit_every: Duration = "1h"
    """Refit cadence, a duration."""
    scale_down_hold: DurationOrZero = _secs(_CORE.predictive_down_window_s)
    """How long the forecast's replica count is held before it may fall (the reactive side
    keeps behavior.scaleDown's window)."""
    step: Duration = "1m"
    """Forecast grid step, a whole number of seconds, at least the interval."""
    ramp_lookahead: DurationOrZero = _secs(_CORE.ramp_lookahead_s)
    """How far beyond the cold start the forecast is read for a rise that the scale-up
    rate limits need several ticks to climb to (0s: off)."""
    partial_bucket: bool = True
    """Condition the forecast's bucket in progress on the demand read so far within it."""
    adaptive_quantile: AdaptiveQuantile = Field(default_factory=AdaptiveQuantile)
    """Move the level the quantile is read at with the forecast's recent misses."""

    @field_validator("model")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in REGISTRY:
            raise ValueError(f"must be one of {', '.join(sorted(REGISTRY))}")
        return value

    @field_validator("step")
    @classmethod
    def _whole_seconds(cls, value: str) -> str:
        step_s = parse_duration(value)
        if not (step_s >= 1 and float(step_s).is_integer()):
            # Prometheus range queries and the forecast grid take whole seconds
            raise ValueError(f"must be a whole number of seconds >= 1s, got {value!r}")
        return value

    @model_validator(mode="after")
    def _steps(self) -> ForecastSpec:
        if parse_duration(self.history) < 2 * parse_duration(self.step):
            raise ValueError("history must be at least two steps")
        if parse_duration(self.history) > MAX_FORECAST_HISTORY_S:
            raise ValueError(
                f"history must be at most {MAX_FORECAST_HISTORY_S / 86400:g}d (what a "
                f"refit fetches from Prometheus), got {self.history!r}")
        lo, hi = self.adaptive_quantile.bounds(self.quantile)
        if not lo <= self.quantile <= hi:
            raise ValueError(
                f"adaptiveQuantile needs min <= quantile <= max, got {lo:g} <= "
                f"{self.quantile:g} <= {hi:g}"
            )
        return self


class Capacity(_Wire):
    """Per-replica throughput at saturation and the planned utilisation."""

    requests_per_second_per_replica: float = Field(gt=0)
    """Requests/s one replica serves at saturation."""
    target_utilization: float = Field(default=_CORE.target_util_ratio, gt=0, le=1)
    """Planned utilisation of the active replicas by the reactive (HPA) rule, in (0, 1]."""
    forecast_utilization: float = Field(default=_CORE.forecast_util_ratio or 0.9, gt=0, le=1)
    """Planned utilisation of the replicas sized from the forecast quantile, in (0, 1]."""
    target_utilization_while_predicting: float = Field(
        default=_CORE.predicting_target_util_ratio or _CORE.target_util_ratio, gt=0, le=1
    )
    """Planned utilisation of the reactive (HPA) floor while a forecast is in use, in (0, 1],
    never below targetUtilization, which applies without one (no history yet, a failed
    model, or prediction switched off for being worse than the reactive rule)."""
    backlog_drain: DurationOrZero = _secs(_CORE.backlog_drain_s)
    """Active replicas also drain the observed queue within this duration (0s: off)."""
    queue_growth: bool = _CORE.queue_growth
    """The drain counts what the queue gained since its previous sample as arriving, on top
    of the throughput (a saturated fleet's finished-requests rate hides it)."""


class LeadTime(_Wire):
    """Cold-start lead: learned from observed starts (``Auto``) or ``Fixed`` at ``coldStart``."""

    mode: Literal["Auto", "Fixed"] = "Auto"
    """Auto learns the cold start from observed starts; Fixed uses coldStart."""
    cold_start: Duration = _secs(_CORE.cold_start_prior_s)
    """Cold start (scale-up to Ready): the prior, or the fixed value."""
    warm_promotion: Duration = _secs(_CORE.warm_promotion_s)
    """Time for a warm pod to start serving."""


class HPAPolicy(_Wire):
    """One HPA scaling policy."""

    type: Literal["Pods", "Percent"]
    """Pods or Percent."""
    value: int = Field(gt=0)
    """Pods, or percent of the current replicas, per period."""
    period_seconds: int = Field(gt=0, le=1800)
    """Period of the policy, seconds (1-1800)."""


class HPARules(_Wire):
    """HPA ``scaleUp`` / ``scaleDown``; an omitted field takes the HPA default of its side."""

    stabilization_window_seconds: int | None = Field(default=None, ge=0, le=3600)
    """Stabilization window, seconds (0-3600)."""
    policies: list[HPAPolicy] | None = Field(default=None, min_length=1)
    """Rate limits."""
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    """Which policy wins: Max, Min or Disabled."""
    tolerance: float | None = Field(default=None, ge=0, lt=1)
    """No scaling this way while the metric is within this ratio of its target
    (Kubernetes 1.33+ ``behavior`` field; default: the HPA's cluster-wide 0.1)."""


def _rules_from_core(r: ScalingRules) -> HPARules:
    return HPARules(
        stabilization_window_seconds=int(r.stabilization_window_s),
        policies=[
            HPAPolicy(type=p.kind, value=p.value, period_seconds=int(p.period_s))
            for p in r.policies
        ],
        select_policy=r.select_policy,
    )


def _fill(given: HPARules | None, default: ScalingRules) -> HPARules:
    d = _rules_from_core(default)
    if given is None:
        return d
    return HPARules(
        stabilization_window_seconds=(
            d.stabilization_window_seconds
            if given.stabilization_window_seconds is None
            else given.stabilization_window_seconds
        ),
        policies=d.policies if given.policies is None else given.policies,
        select_policy=d.select_policy if given.select_policy is None else given.select_policy,
        tolerance=given.tolerance,
    )


class HPABehavior(_Wire):
    """HPA ``behavior`` (autoscaling/v2 shape); omitted parts take the HPA defaults."""

    scale_up: HPARules | None = None
    scale_down: HPARules | None = None

    @model_validator(mode="after")
    def _defaults(self) -> HPABehavior:
        object.__setattr__(self, "scale_up", _fill(self.scale_up, _CORE_BEHAVIOR.scale_up))
        object.__setattr__(self, "scale_down", _fill(self.scale_down, _CORE_BEHAVIOR.scale_down))
        return self


class FallbackSpec(_Wire):
    """KEDA-style fallback after ``failureThreshold`` failed ticks in a row."""

    failure_threshold: int = Field(default=_CORE_FALLBACK.failure_threshold, ge=1)
    """Failed ticks in a row before falling back."""
    # required, as in KEDA: no default knows the load (a default of 1 with behavior static
    # dropped a 10-replica Deployment to 1 in a long Prometheus outage)
    replicas: int = Field(ge=0)
    """Replicas to hold while failing (required, as in KEDA)."""
    behavior: Literal[
        "static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"
    ] = _CORE_FALLBACK.behavior
    """How replicas combines with the current count (KEDA)."""


class GPUTier(_Wire):
    """A tiered threshold on GPU utilisation: at or above ``utilizationAtLeast``, keep at
    least ``ceil(ready pods x scaleFactor)`` replicas (e.g. 0.5/1.0, 0.7/1.25, 0.9/1.5)."""

    utilization_at_least: float = Field(gt=0, le=1)
    """GPU utilisation (0, 1] at which the tier applies."""
    scale_factor: float = Field(ge=1)
    """Replicas as a multiple of the ready pods while it applies (>= 1)."""


class Schedule(_Wire):
    """Replica bounds on ``days`` (0 = Monday) from ``start`` to ``end`` (``HH:MM``)."""

    start: str = Field(pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$")
    """Window start, HH:MM local time."""
    end: str = Field(pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$")
    """Window end, HH:MM local time (before start: wraps past midnight)."""
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: list(range(7)), min_length=1
    )
    """Days the window applies, 0 = Monday."""
    timezone: str = "UTC"
    """IANA time zone of start and end."""
    min_replicas: int | None = Field(default=None, ge=0)
    """Lower bound inside the window (default: the base bound)."""
    max_replicas: int | None = Field(default=None, ge=0)
    """Upper bound inside the window (default: the base bound)."""

    @model_validator(mode="after")
    def _core_check(self) -> Schedule:
        _core(lambda: _window(self))
        return self


class PredictiveAutoscalerSpec(_Wire):
    """``spec`` of a ``PredictiveAutoscaler``."""

    scale_target_ref: ScaleTargetRef
    """The Deployment to scale."""
    min_replicas: int = Field(default=_CORE.min_replicas, ge=0)
    """Lower bound of the total replica count."""
    max_replicas: int = Field(default=_CORE.max_replicas, ge=1)
    """Upper bound of the total replica count."""
    warm_pool: WarmPool = Field(default_factory=WarmPool)
    """Warm pods: loaded but not serving."""
    signals: Signals = Field(default_factory=Signals)
    """Where the signals come from (Prometheus)."""
    forecast: ForecastSpec = Field(default_factory=ForecastSpec)
    """The forecaster."""
    capacity: Capacity
    """Per-replica throughput and planned utilisation."""
    lead_time: LeadTime = Field(default_factory=LeadTime)
    """How far ahead to act."""
    behavior: HPABehavior = Field(default_factory=HPABehavior)
    """HPA autoscaling/v2 behavior; omitted parts take the HPA defaults."""
    fallback: FallbackSpec | None = None
    """KEDA-style fallback after repeated failures (off when absent)."""
    schedules: list[Schedule] = Field(default_factory=list)
    """Scheduled replica bounds; later windows override earlier ones."""
    gpu_tiers: list[GPUTier] = Field(default_factory=list)
    """Tiered GPU-utilisation thresholds that raise the reactive floor (needs signals.gpu)."""
    mode: Literal["Auto", "Observe"] = "Auto"
    """Auto writes replicas; Observe computes and reports, never writes."""
    interval: Duration = _secs(_CORE.interval_s)
    """The controller's tick, a duration of at least 1s."""

    @field_validator("interval")
    @classmethod
    def _tick_floor(cls, value: str) -> str:
        # each tick is a Prometheus query plus a Deployment read and a pod list: "15ms" for
        # "15s" would send ~70 API requests a second
        if parse_duration(value) < MIN_INTERVAL_S:
            raise ValueError(f"must be at least {MIN_INTERVAL_S:g}s, got {value!r}")
        return value

    @model_validator(mode="after")
    def _whole(self) -> PredictiveAutoscalerSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        if parse_duration(self.forecast.step) < parse_duration(self.interval):
            # a bucket needs at least one tick's reading; the error names the field
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError(
                    "value_error", "must be at least the interval ({interval}), got {step}",
                    {"interval": self.interval, "step": self.forecast.step}),
                loc=("forecast", "step"), input=self.forecast.step)])
        if self.gpu_tiers and self.signals.gpu == "none":
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError(
                    "value_error", "need a GPU utilisation source: signals.gpu is none", {}),
                loc=("gpuTiers",), input=len(self.gpu_tiers))])
        _core(lambda: to_policy_settings(self))
        return self

    def to_wire(self) -> dict[str, Any]:
        """The spec as camelCase JSON-ready data (defaults filled, nulls left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Condition(_Wire):
    """A status condition (Ready, PredictionReady, FallbackActive, ...)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None


class PredictiveAutoscalerStatus(_Wire):
    """``status``, written by the controller through the status subresource."""

    observed_generation: int | None = None
    desired_replicas: int | None = None
    active_replicas: int | None = None
    warm_replicas: int | None = None
    last_decision: dict[str, Any] | None = None
    capacity: dict[str, Any] | None = None
    forecast_quality: dict[str, Any] | None = None
    conditions: list[Condition] = Field(default_factory=list)


class PredictiveAutoscaler(_Wire):
    """The whole custom resource (``metadata`` is kept as given)."""

    api_version: Literal["surgecast.io/v1alpha1"] = "surgecast.io/v1alpha1"
    kind: Literal["PredictiveAutoscaler"] = "PredictiveAutoscaler"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: PredictiveAutoscalerSpec
    status: PredictiveAutoscalerStatus | None = None


# ----------------------------------------------------------------------------- conversion
def _rules(r: HPARules | None) -> ScalingRules:
    assert r is not None and r.policies is not None  # filled by HPABehavior
    return ScalingRules(
        stabilization_window_s=float(r.stabilization_window_seconds or 0),
        policies=tuple(RateRule(p.type, p.value, float(p.period_seconds)) for p in r.policies),
        select_policy=r.select_policy or "Max",
        tolerance=r.tolerance,
    )


def _window(s: Schedule) -> ScheduleWindow:
    return ScheduleWindow(
        start=s.start,
        end=s.end,
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        days=frozenset(s.days),
        timezone=s.timezone,
    )


def _queries(signals: Signals) -> QuerySet:
    gpu = None if signals.gpu == "none" else signals.gpu
    overrides = {k: v for k, v in signals.queries.model_dump().items() if v is not None}
    return preset(signals.preset, gpu, **overrides)


#: ``lead_min_samples`` in ``Fixed`` mode. ``Fixed`` is the core's ``learn_lead=False`` (the
#: estimator ignores observations and plans with the configured cold start); this sample
#: need is kept as well so that the settings read as "never enough samples".
FIXED_LEAD_MIN_SAMPLES = 2**31 - 1


def _seconds_or_zero(text: str) -> float:
    """A :data:`DurationOrZero` in seconds."""
    return 0.0 if _zero_re(text) else parse_duration(text)


def to_policy_settings(spec: PredictiveAutoscalerSpec) -> PolicySettings:
    """The core's :class:`PolicySettings` for a validated spec.

    Raises:
        ConfigError: the combination is invalid for the core.
    """
    assert spec.behavior.scale_up is not None and spec.behavior.scale_down is not None
    fb = spec.fallback
    return PolicySettings(
        capacity_rps_per_replica=spec.capacity.requests_per_second_per_replica,
        target_util_ratio=spec.capacity.target_utilization,
        forecast_util_ratio=spec.capacity.forecast_utilization,
        predicting_target_util_ratio=spec.capacity.target_utilization_while_predicting,
        backlog_drain_s=_seconds_or_zero(spec.capacity.backlog_drain),
        queue_growth=spec.capacity.queue_growth,
        predictive_down_window_s=_seconds_or_zero(spec.forecast.scale_down_hold),
        ramp_lookahead_s=_seconds_or_zero(spec.forecast.ramp_lookahead),
        quantile=spec.forecast.quantile,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        interval_s=parse_duration(spec.interval),
        # a rate() over the window still counts the pods before a change until it has
        # passed; plus one interval for the scrape that lands it
        capacity_settle_s=min(
            3600.0, parse_duration(spec.signals.window) + parse_duration(spec.interval)
        ),
        cold_start_prior_s=parse_duration(spec.lead_time.cold_start),
        warm_promotion_s=parse_duration(spec.lead_time.warm_promotion),
        warm_min=spec.warm_pool.min_replicas,
        warm_max=spec.warm_pool.max_replicas,
        warm_quantile=spec.warm_pool.quantile,
        behavior=Behavior(
            scale_up=_rules(spec.behavior.scale_up), scale_down=_rules(spec.behavior.scale_down)
        ),
        fallback=(
            None
            if fb is None
            else Fallback(
                failure_threshold=fb.failure_threshold, replicas=fb.replicas, behavior=fb.behavior
            )
        ),
        schedule=tuple(_window(s) for s in spec.schedules),
        tiers=tuple(Tier(t.utilization_at_least, t.scale_factor) for t in spec.gpu_tiers),
        lead_min_samples=(
            FIXED_LEAD_MIN_SAMPLES if spec.lead_time.mode == "Fixed" else _CORE.lead_min_samples
        ),
        learn_lead=spec.lead_time.mode != "Fixed",
    )


def query_set(spec: PredictiveAutoscalerSpec) -> QuerySet:
    """The :class:`PrometheusSource` :class:`QuerySet`: preset + GPU source + overrides."""
    return _queries(spec.signals)


def source_kwargs(spec: PredictiveAutoscalerSpec) -> dict[str, Any]:
    """Keyword arguments for ``PrometheusSource(base_url, **source_kwargs(spec))``."""
    s = spec.signals
    return {
        "queries": query_set(spec),
        "selector": s.selector,
        "gpu_selector": s.gpu_selector,
        "window": s.window,
        "combine_retry_s": _seconds_or_zero(s.combine_retry),
    }


def forecaster_kwargs(spec: PredictiveAutoscalerSpec) -> dict[str, Any]:
    """Keyword arguments for ``SurgecastAutoscaler(settings, **forecaster_kwargs(spec))``."""
    f = spec.forecast
    return {
        "model": f.model,
        "forecast_step_s": parse_duration(f.step),
        "refit_every_s": parse_duration(f.refit_every),
        "partial_bucket": f.partial_bucket,
        "adaptive": adaptive_kwargs(f),
    }


def adaptive_kwargs(f: ForecastSpec) -> dict[str, float] | None:
    """``AdaptiveLevel`` keyword arguments (``step``, ``lo``, ``hi``) for ``f``'s
    ``adaptiveQuantile``; ``None`` when its step is 0 (off)."""
    a = f.adaptive_quantile
    if a.step <= 0:
        return None
    lo, hi = a.bounds(f.quantile)
    return {"step": a.step, "lo": lo, "hi": hi}


# ----------------------------------------------------------------------------- validation
def _path(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "literal[", "union[")) or "[" in str(part):
            continue  # pydantic's internal union/validator steps
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(allowed)}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field"
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        shown = f"{limit:g}" if isinstance(limit, int | float) else limit
        return f"must be {bounds[kind]} {shown}, got {err.get('input')!r}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == _DURATION_RE:
            return f"must be a duration such as 90s, 5m, 1h30m; got {err.get('input')!r}"
        return f"{err.get('input')!r} does not match {ctx.get('pattern')}"
    msg = str(err["msg"])
    for p in ("Value error, ", "Assertion failed, "):
        if msg.startswith(p):
            return msg[len(p) :]
    return (
        msg[:1].lower()
        + msg[1:]
        + (f", got {err.get('input')!r}" if kind.endswith("_type") or "parsing" in kind else "")
    )


def _config_error(exc: ValidationError, prefix: str) -> ConfigError:
    lines = [f"{_path(prefix, e['loc'])}: {_message(e)}" for e in exc.errors()]
    return ConfigError("; ".join(lines))


def validate_spec(data: Any, *, prefix: str = "spec") -> PredictiveAutoscalerSpec:
    """Validate a spec mapping (camelCase keys).

    Raises:
        ConfigError: naming each bad field's path, e.g. ``spec.capacity: ...``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix}: must be a mapping, got {type(data).__name__}")
    try:
        return PredictiveAutoscalerSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise _config_error(exc, prefix) from None


def validate_resource(data: Any) -> PredictiveAutoscaler:
    """Validate a whole ``PredictiveAutoscaler`` document."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"document must be a mapping, got {type(data).__name__}")
    try:
        return PredictiveAutoscaler.model_validate(dict(data))
    except ValidationError as exc:
        raise _config_error(exc, "") from None


def load_config(path: str | Path) -> PredictiveAutoscalerSpec:
    """The spec in a YAML file: a full ``PredictiveAutoscaler`` document or a bare spec.

    Raises:
        ConfigError: unreadable file, bad YAML, wrong kind or an invalid field (with its path).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the config as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{p}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: must hold a mapping (a PredictiveAutoscaler or its spec)")
    if "kind" in data or "apiVersion" in data:
        if data.get("kind") != KIND or data.get("apiVersion") != API_VERSION:
            raise ConfigError(
                f"{p}: kind/apiVersion must be {KIND}/{API_VERSION}, got "
                f"{data.get('kind')!r}/{data.get('apiVersion')!r}"
            )
        return validate_resource(data).spec
    return validate_spec(data)


# ----------------------------------------------------------------------------- CRD
_DROP = {"title", "$defs", "examples", "discriminator"}


def _structural(node: Any, defs: Mapping[str, Any]) -> Any:
    """Inline ``$ref``s and turn JSON Schema 2020 into Kubernetes' OpenAPI v3 subset."""
    if isinstance(node, list):
        return [_structural(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        merged = {**copy.deepcopy(defs[name]), **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _structural({**branches[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties" and value is False:
            continue  # Kubernetes prunes unknown fields; false is not allowed with properties
        if key == "default" and value is None:
            continue
        if key == "description" and isinstance(value, str):
            out[key] = " ".join(value.split())  # docstrings' line breaks are layout only
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
            continue
        out[key] = _structural(value, defs)
    return out


def spec_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``spec``."""
    raw = PredictiveAutoscalerSpec.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return result


def _status_schema() -> dict[str, Any]:
    raw = PredictiveAutoscalerStatus.model_json_schema(by_alias=True, mode="validation")
    out: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    # the free-form decision record, and room for fields a newer controller writes
    for free_form in ("lastDecision", "capacity", "forecastQuality"):
        out["properties"][free_form] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def crd() -> dict[str, Any]:
    """The ``PredictiveAutoscaler`` CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    spec = spec_schema()
    spec["description"] = "Desired behaviour of the predictive autoscaler for one Deployment."
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": _status_schema(),
        },
    }

    def col(name: str, path: str, type_: str = "integer") -> dict[str, Any]:
        return {"name": name, "type": type_, "jsonPath": path}

    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["pas"],
                "categories": ["surgecast"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        col("Target", ".spec.scaleTargetRef.name", "string"),
                        col("Min", ".spec.minReplicas"),
                        col("Max", ".spec.maxReplicas"),
                        col("Desired", ".status.desiredReplicas"),
                        col("Active", ".status.activeReplicas"),
                        col("Warm", ".status.warmReplicas"),
                        col("Mode", ".spec.mode", "string"),
                        col("Age", ".metadata.creationTimestamp", "date"),
                    ],
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML text kept in ``manifests/controller/crd.yaml``."""
    header = (
        "# GENERATED by `python -m autoscaler.config --crd > manifests/controller/crd.yaml`;\n"
        "# do not edit by hand (tests/unit/test_manifests.py fails when it drifts).\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m autoscaler.config --crd`` prints the CRD; ``--check FILE`` validates one."""
    ap = argparse.ArgumentParser(prog="python -m autoscaler.config", description=__doc__)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--crd", action="store_true", help="print the CRD YAML")
    g.add_argument("--check", metavar="FILE", help="validate a config file (CR or bare spec)")
    args = ap.parse_args(argv)
    if args.crd:
        sys.stdout.write(crd_yaml())
        return 0
    try:
        spec = load_config(args.check)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(spec.to_wire(), sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
