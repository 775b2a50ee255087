"""Typed policy settings with units in the names and the Kubernetes HPA defaults.

Validated on construction: a bad value raises :class:`~autoscaler.errors.ConfigError` naming
the field and what it must be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from autoscaler.errors import ConfigError

__all__ = [
    "DEFAULT_FORECAST_MODEL",
    "Behavior",
    "Fallback",
    "FallbackBehavior",
    "PolicySettings",
    "RateRule",
    "ScalingRules",
    "ScheduleWindow",
    "Tier",
    "default_behavior",
]

#: surgecast's forecaster unless configured otherwise: the short-horizon model, chosen per
#: horizon step among persistence, short means and seasonal rules (docs/autoscaling.md)
DEFAULT_FORECAST_MODEL = "nowcast"

SelectPolicy = Literal["Max", "Min", "Disabled"]
FallbackBehavior = Literal[
    "static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"
]


@dataclass(frozen=True)
class RateRule:
    """One HPA scaling policy: at most ``value`` pods (``Pods``) or % (``Percent``) per period."""

    kind: Literal["Pods", "Percent"]
    value: int
    period_s: float

    def __post_init__(self) -> None:
        if self.kind not in ("Pods", "Percent"):
            raise ConfigError(f"rate rule kind must be 'Pods' or 'Percent', got {self.kind!r}")
        if self.value <= 0:
            raise ConfigError(f"rate rule value must be > 0, got {self.value}")
        if not 0 < self.period_s <= 1800:
            raise ConfigError(f"rate rule period_s must be in (0, 1800], got {self.period_s}")


@dataclass(frozen=True)
class ScalingRules:
    """HPA ``behavior.scaleUp`` / ``scaleDown``: stabilization window, policies, selection,
    and the direction's tolerance (Kubernetes 1.33+; ``None``: the policy's ``tolerance``,
    the cluster-wide 0.1 by default)."""

    stabilization_window_s: float
    policies: tuple[RateRule, ...]
    select_policy: SelectPolicy = "Max"
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.tolerance is not None and not 0 <= self.tolerance < 1:
            raise ConfigError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if not 0 <= self.stabilization_window_s <= 3600:
            raise ConfigError(
                f"stabilization_window_s must be in [0, 3600], got {self.stabilization_window_s}"
            )
        if self.select_policy not in ("Max", "Min", "Disabled"):
            raise ConfigError(
                f"select_policy must be one of Max, Min, Disabled; got {self.select_policy!r}"
            )


@dataclass(frozen=True)
class Behavior:
    """HPA ``behavior`` with the Kubernetes defaults (REFERENCE.md)."""

    scale_up: ScalingRules = field(
        default_factory=lambda: ScalingRules(
            0.0, (RateRule("Percent", 100, 15.0), RateRule("Pods", 4, 15.0)), "Max"
        )
    )
    scale_down: ScalingRules = field(
        default_factory=lambda: ScalingRules(300.0, (RateRule("Percent", 100, 15.0),), "Max")
    )


def default_behavior() -> Behavior:
    """The Kubernetes HPA default behavior."""
    return Behavior()


@dataclass(frozen=True)
class Fallback:
    """KEDA-style ``fallback``: after ``failure_threshold`` failed ticks, use ``replicas``."""

    failure_threshold: int = 3
    replicas: int = 1
    behavior: FallbackBehavior = "static"

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ConfigError(
                f"fallback failure_threshold must be >= 1, got {self.failure_threshold}"
            )
        if self.replicas < 0:
            raise ConfigError(f"fallback replicas must be >= 0, got {self.replicas}")
        allowed = ("static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower")
        if self.behavior not in allowed:
            raise ConfigError(f"fallback behavior must be one of {allowed}, got {self.behavior!r}")


def _parse_hhmm(text: str, what: str) -> int:
    try:
        hh, mm = text.split(":")
        minutes = int(hh) * 60 + int(mm)
    except ValueError:
        raise ConfigError(f"{what} must be 'HH:MM', got {text!r}") from None
    if not 0 <= minutes <= 24 * 60:
        raise ConfigError(f"{what} must be between 00:00 and 24:00, got {text!r}")
    return minutes


@dataclass(frozen=True)
class ScheduleWindow:
    """A cron-like window of replica bounds: on ``days`` (0 = Monday) from ``start`` to
    ``end`` (``HH:MM`` local time in ``timezone``; ``end`` before ``start`` wraps past
    midnight), the bounds become ``min_replicas`` / ``max_replicas`` (``None`` keeps the base).
    """

    start: str
    end: str
    min_replicas: int | None = None
    max_replicas: int | None = None
    days: frozenset[int] = frozenset(range(7))
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        _parse_hhmm(self.start, "schedule start")
        _parse_hhmm(self.end, "schedule end")
        if not self.days or not all(0 <= d <= 6 for d in self.days):
            raise ConfigError(
                f"schedule days must be a non-empty set of 0..6, got {set(self.days)}"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {self.timezone!r}") from None
        if self.min_replicas is not None and self.min_replicas < 0:
            raise ConfigError(f"schedule min_replicas must be >= 0, got {self.min_replicas}")
        if (
            self.min_replicas is not None
            and self.max_replicas is not None
            and self.max_replicas < self.min_replicas
        ):
            raise ConfigError("schedule max_replicas must be >= min_replicas")

    @property
    def start_min(self) -> int:
        """Start, minutes after local midnight."""
        return _parse_hhmm(self.start, "schedule start")

    @property
    def end_min(self) -> int:
        """End, minutes after local midnight."""
        return _parse_hhmm(self.end, "schedule end")


@dataclass(frozen=True)
class Tier:
    """Tiered threshold: when GPU utilisation is at least ``util_at_least_ratio``, keep at
    least ``ceil(ready * scale_factor)`` replicas (e.g. 0.5/1.0, 0.7/1.25, 0.9/1.5)."""

    util_at_least_ratio: float
    scale_factor: float

    def __post_init__(self) -> None:
        if not 0 < self.util_at_least_ratio <= 1:
            raise ConfigError(
                f"tier util_at_least_ratio must be in (0, 1], got {self.util_at_least_ratio}"
            )
        if not self.scale_factor >= 1:
            raise ConfigError(f"tier scale_factor must be >= 1, got {self.scale_factor}")


@dataclass(frozen=True)
class PolicySettings:
    """Everything the surgecast policy needs for one target.

    Attributes:
        capacity_rps_per_replica: configured requests/s one replica serves at saturation.
        target_util_ratio: planned utilisation of the active replicas (0, 1] by the reactive
            (HPA) rule.
        forecast_util_ratio: planned utilisation of the replicas sized from the forecast
            quantile (``None``: ``target_util_ratio``). The quantile already holds the
            forecast's uncertainty, so it is higher than the reactive target by default
            (planning the 0.9 quantile at 70 % stacks two margins: 1.43x the GPUs at once).
        predicting_target_util_ratio: planned utilisation of the reactive (HPA) floor while
            a forecast is in use, never below ``target_util_ratio`` (``None``:
            ``target_util_ratio`` always). The forecast
            already orders capacity one cold start ahead of the demand; the floor then only
            has to catch what the forecast misses, so it can run hotter. Without a forecast
            (no history yet, a failed model, or the prediction guard switched prediction off
            for being worse than the reactive rule) the floor plans ``target_util_ratio``.
        quantile: forecast quantile sized for (the SLO-versus-cost knob).
        min_replicas, max_replicas: base bounds of the total replica count.
        interval_s: the controller's tick.
        cold_start_prior_s: cold-start lead (raise -> Ready) until enough samples exist.
        warm_promotion_s: time for a warm pod to start serving.
        warm_min, warm_max: warm-pool bounds (``warm_max = 0`` disables the warm pool).
        warm_quantile: high quantile of the spread that sizes the warm pool.
        tolerance: HPA tolerance of the reactive rule, both ways, where ``behavior``'s
            ``scale_up`` / ``scale_down`` set none of their own.
        max_staleness_s: demand older than this is stale (hold, never scale down).
        behavior: HPA-shaped stabilization and rate limits.
        fallback: KEDA-style fallback after repeated failures (``None``: hold forever).
        schedule: scheduled bound windows; later windows override earlier ones.
        tiers: optional tiered GPU-utilisation thresholds.
        capacity_min_ratio, capacity_max_ratio: bounds of the online capacity refinement,
            as ratios of the configured capacity.
        capacity_settle_s: the capacity is refined only once the serving pods have been
            unchanged for this long (beyond the last tick): the throughput a ``rate()``
            over a window measures still counts the pods before a change until the window
            has passed. The controller sets the ``rate()`` window plus one interval; ``0``
            (the simulator's throughput is not windowed) means only the last tick.
        lead_quantile, lead_min_samples: the lead-time estimator's quantile and sample need.
        learn_lead: learn the cold-start lead from observed raise -> Ready durations
            (``False``: always plan with ``cold_start_prior_s``, the CRD's ``Fixed`` mode).
        predictive_down_window_s: scale-down stabilization of the *predictive* part (its
            forecast already covers the cold-start lead; the ``behavior`` scale-down window
            keeps applying to the reactive part).
        backlog_drain_s: the active replicas also drain the observed queue within this many
            seconds (``0`` disables the term).
        queue_growth: the drain term counts as arriving at least the pods' throughput plus
            the queue's growth (what a saturated fleet cannot serve is what the queue
            gains), when the queue grew over each of its last two sample intervals (the
            smaller growth counts: a one-scrape burst is over before the pods it would
            order are ready). A demand signal that counts requests as they finish is capped
            at the throughput while the pods queue; the queue gauge is one scrape old.
            ``False``: the drain term takes the larger of demand and throughput only.
        ramp_lookahead_s: how far beyond ``lead + interval`` the predictive part looks for
            a need the scale-up rate limits reach only after several ticks (a climb to more
            than twice the current count): its pods must be ordered that much earlier
            (``0``: only ``lead + interval``). The forecast horizon includes it.
    """

    capacity_rps_per_replica: float
    target_util_ratio: float = 0.7
    quantile: float = 0.9
    min_replicas: int = 1
    max_replicas: int = 100
    interval_s: float = 15.0
    cold_start_prior_s: float = 120.0
    warm_promotion_s: float = 5.0
    warm_min: int = 0
    warm_max: int = 0
    warm_quantile: float = 0.95
    tolerance: float = 0.1
    max_staleness_s: float = 120.0
    behavior: Behavior = field(default_factory=Behavior)
    fallback: Fallback | None = None
    schedule: tuple[ScheduleWindow, ...] = ()
    tiers: tuple[Tier, ...] = ()
    capacity_min_ratio: float = 0.5
    capacity_max_ratio: float = 2.0
    capacity_settle_s: float = 0.0
    lead_quantile: float = 0.9
    lead_min_samples: int = 5
    learn_lead: bool = True
    predictive_down_window_s: float = 60.0
    backlog_drain_s: float = 60.0
    queue_growth: bool = True
    ramp_lookahead_s: float = 120.0
    forecast_util_ratio: float | None = 0.9
    predicting_target_util_ratio: float | None = 0.9

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        c = self.capacity_rps_per_replica
        need(math.isfinite(c) and c > 0, f"capacity_rps_per_replica must be > 0, got {c}")
        need(
            0 < self.target_util_ratio <= 1,
            f"target_util_ratio must be in (0, 1], got {self.target_util_ratio}",
        )
        need(0 < self.quantile < 1, f"quantile must be in (0, 1), got {self.quantile}")
        need(
            0 < self.warm_quantile < 1, f"warm_quantile must be in (0, 1), got {self.warm_quantile}"
        )
        need(
            0 <= self.min_replicas <= self.max_replicas,
            f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas}, {self.max_replicas}",
        )
        need(self.interval_s > 0, f"interval_s must be > 0, got {self.interval_s}")
        need(
            self.cold_start_prior_s >= 0,
            f"cold_start_prior_s must be >= 0, got {self.cold_start_prior_s}",
        )
        need(
            self.warm_promotion_s >= 0,
            f"warm_promotion_s must be >= 0, got {self.warm_promotion_s}",
        )
        need(
            0 <= self.warm_min <= self.warm_max or self.warm_max == 0 == self.warm_min,
            f"need 0 <= warm_min <= warm_max, got {self.warm_min}, {self.warm_max}",
        )
        need(0 <= self.tolerance < 1, f"tolerance must be in [0, 1), got {self.tolerance}")
        need(self.max_staleness_s > 0, f"max_staleness_s must be > 0, got {self.max_staleness_s}")
        need(
            0 < self.capacity_min_ratio <= 1 <= self.capacity_max_ratio,
            "need 0 < capacity_min_ratio <= 1 <= capacity_max_ratio",
        )
        need(
            0 <= self.capacity_settle_s <= 3600,
            f"capacity_settle_s must be in [0, 3600], got {self.capacity_settle_s}",
        )
        need(
            0 < self.lead_quantile < 1, f"lead_quantile must be in (0, 1), got {self.lead_quantile}"
        )
        need(
            self.lead_min_samples >= 1,
            f"lead_min_samples must be >= 1, got {self.lead_min_samples}",
        )
        need(
            0 <= self.ramp_lookahead_s <= 3600,
            f"ramp_lookahead_s must be in [0, 3600], got {self.ramp_lookahead_s}",
        )
        need(
            0 <= self.predictive_down_window_s <= 3600,
            f"predictive_down_window_s must be in [0, 3600], got {self.predictive_down_window_s}",
        )
        fu = self.forecast_util_ratio
        need(
            fu is None or 0 < fu <= 1,
            f"forecast_util_ratio must be in (0, 1] or None, got {fu}",
        )
        pu = self.predicting_target_util_ratio
        need(
            pu is None or 0 < pu <= 1,
            f"predicting_target_util_ratio must be in (0, 1] or None, got {pu}",
        )
        need(
            math.isfinite(self.backlog_drain_s) and self.backlog_drain_s >= 0,
            f"backlog_drain_s must be >= 0 (0 disables), got {self.backlog_drain_s}",
        )

    @property
    def target_rps_per_replica(self) -> float:
        """Planned load per active replica: capacity times target utilisation."""
        return self.capacity_rps_per_replica * self.target_util_ratio

    def reactive_util(self, predicting: bool) -> float:
        """Planned utilisation of the reactive floor, with or without a forecast in use."""
        pu = self.predicting_target_util_ratio
        if predicting and pu is not None:
            return max(pu, self.target_util_ratio)
        return self.target_util_ratio

    @property
    def forecast_util(self) -> float:
        """Planned utilisation of the forecast-sized replicas."""
        fu = self.forecast_util_ratio
        return self.target_util_ratio if fu is None else fu
