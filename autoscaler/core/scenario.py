"""The documented backtest scenario and the policy comparison, shared by
``benchmarks/autoscaling.py``, ``surgecast backtest`` and ``surgecast dry-run``.

A :class:`Scenario` sizes the cluster from the trace (per-replica capacity such that the
trace's peak needs ``peak_replicas`` at 70 % utilisation), holds the simulator config and the
oracle's GPU-hours lower bound. :func:`build_policies` makes surgecast and the baselines by
name, :func:`compare` simulates each and returns one summary row per policy, and
:class:`RecordingAutoscaler` keeps every decision of a wrapped autoscaler (what the dry-run
prints). Pure: no clock (``perf_counter`` only measures), no I/O.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from autoscaler.core.baselines import REGISTRY, oracle_gpu_hours
from autoscaler.core.baselines.clairvoyant import ClairvoyantSurgecast
from autoscaler.core.decision import Decision
from autoscaler.core.observation import Autoscaler, DemandView
from autoscaler.core.prediction_guard import GuardSettings
from autoscaler.core.settings import DEFAULT_FORECAST_MODEL, PolicySettings
from autoscaler.core.signals import Signals
from autoscaler.core.simulator import SimConfig, SimResult, demand_rates, simulate
from autoscaler.core.surgecast import SurgecastAutoscaler
from autoscaler.core.warm_pool import demand_window
from forecasting.forecast import Forecast
from forecasting.series import FloatArray, Series

__all__ = [
    "DEFAULT_POLICIES",
    "POLICY_LABELS",
    "RecordingAutoscaler",
    "Scenario",
    "Tick",
    "build_policies",
    "build_scenario",
    "compare",
    "compatible_step",
    "forecast_step",
    "make_clairvoyant",
    "make_surgecast",
    "split_history",
    "trim_to_grid",
]

#: policy names accepted by :func:`build_policies`, in table order, with their table labels
POLICY_LABELS: dict[str, str] = {
    "surgecast": "surgecast",
    "hpa": "hpa(gpu 70%)",
    "hpa_rps": "hpa(req/s)",
    "keda": "keda",
    "kpa": "kpa",
    "static": "static peak",
    "oracle": "oracle (replay)",
    "phpa": "phpa",
    "exact": "exact forecast",
}

#: what ``surgecast backtest`` runs unless told otherwise (PHPA's Holt-Winters fits are slow)
DEFAULT_POLICIES: tuple[str, ...] = (
    "surgecast",
    "hpa",
    "hpa_rps",
    "keda",
    "kpa",
    "static",
    "oracle",
)

#: ceiling on replicas every autoscaler may ask for
MAX_REPLICAS = 400


@dataclass(frozen=True)
class Scenario:
    """One trace's cluster: per-replica capacity, simulator config and the oracle bound.

    Attributes:
        rates: the trace as req/s on the simulation grid.
        config: the simulator config (capacity, step, cold start, warm promotion, SLO).
        peak_replicas: replicas the trace's peak needs at 70 % utilisation.
        initial_replicas: pods ready at the start (first minute's demand at 70 %).
        oracle_gpu_hours: GPU-hours of the cheapest no-queue schedule (a lower bound).
    """

    rates: FloatArray
    config: SimConfig
    peak_replicas: int
    initial_replicas: int
    oracle_gpu_hours: float

    @property
    def capacity(self) -> float:
        """Requests/s one serving replica completes at saturation."""
        return self.config.capacity_rps_per_replica

    @property
    def step_s(self) -> float:
        """The simulation step."""
        return self.config.step_s


def compatible_step(trace_step_s: float, step_s: float) -> bool:
    """Whether the simulator can run ``step_s`` on a trace of ``trace_step_s``: one must
    be a whole multiple of the other."""
    if trace_step_s <= 0 or step_s <= 0:
        return False
    big, small = max(trace_step_s, step_s), min(trace_step_s, step_s)
    k = big / small
    return abs(k - round(k)) < 1e-9


def split_history(
    trace: Series, history_days: float, days: float | None = None
) -> tuple[Series, Series | None]:
    """``(replay, history)``: ``days`` of ``trace`` (all the rest when ``None``) from day
    ``history_days`` on, and the days before it (``None`` for none), for
    :func:`make_surgecast`'s ``history``.

    Raises:
        ValueError: ``history_days`` is negative or not finite, or the trace ends before
            two points of the replay (or, with ``days``, before all of them).
    """
    if not (history_days >= 0 and math.isfinite(history_days)):
        raise ValueError(f"history must be >= 0 days, got {history_days:g}")
    h = round(history_days * 86400 / trace.step_s)
    n = len(trace) - h if days is None else max(2, round(days * 86400 / trace.step_s))
    if n < 2 or h + n > len(trace):
        raise ValueError(
            f"{history_days:g} days of history leave too little to replay: the trace covers "
            f"{len(trace) * trace.step_s / 86400:.2f} days"
        )
    return trace.slice(h, h + n), (trace.slice(0, h) if h else None)


def trim_to_grid(trace: Series, step_s: float) -> Series:
    """``trace`` without its trailing points that would leave the last simulation bucket
    partly covered. No longer needed before :func:`build_scenario` (the simulator averages a
    partly covered bucket over its covered part); kept for callers that want whole buckets."""
    if step_s <= trace.step_s:
        return trace
    end = trace.start_s + len(trace) * trace.step_s
    full_end = math.floor(end / step_s + 1e-9) * step_s
    n = max(1, math.floor((full_end - trace.start_s) / trace.step_s + 1e-9))
    return trace.slice(0, n) if n < len(trace) else trace


def build_scenario(
    trace: Series,
    step_s: float,
    *,
    peak_replicas: int = 40,
    cold_start_s: float = 120.0,
    warm_promotion_s: float = 5.0,
    slo_s: float = 0.5,
    seed: int = 0,
    capacity_rps: float | None = None,
    rate_window_s: float = 60.0,
    replica_bounds: tuple[int, int] | None = None,
    demand_signal: str = "arrivals",
) -> Scenario:
    """Size the cluster so that the trace's peak needs ``peak_replicas`` at 70 % utilisation,
    or, with ``capacity_rps`` (a real fleet's per-replica throughput at saturation, e.g. a
    ``PredictiveAutoscaler``'s), take that capacity and report the replicas the peak needs.
    ``rate_window_s`` is the ``rate()`` window the autoscalers' demand signal averages over;
    ``replica_bounds`` (``(min, max)``, a spec's) clamp the pods running at the start.

    Raises:
        ValueError: no demand at all, a bad step, a non-positive ``peak_replicas`` or
            ``capacity_rps``.
    """
    if peak_replicas < 1:
        raise ValueError(f"peak_replicas must be >= 1, got {peak_replicas}")
    if capacity_rps is not None and not (capacity_rps > 0 and math.isfinite(capacity_rps)):
        raise ValueError(f"capacity_rps must be > 0, got {capacity_rps:g}")
    rates = np.asarray(demand_rates(trace, step_s).values, dtype=np.float64)
    if np.isnan(rates).any():
        raise ValueError(
            f"the trace leaves {int(np.isnan(rates).sum())} simulation bucket(s) of "
            f"{step_s:g} s without data"
        )
    peak = float(rates.max())
    if not peak > 0:
        raise ValueError("the demand trace is zero everywhere: nothing to scale")
    if capacity_rps is None:
        cap = peak / peak_replicas / 0.7
    else:
        cap = float(capacity_rps)
        peak_replicas = max(1, math.ceil(peak / (cap * 0.7) - 1e-9))
    init = max(1, math.ceil(float(np.mean(rates[: max(1, int(60 / step_s))])) / (cap * 0.7)))
    if replica_bounds is not None:
        init = min(max(init, replica_bounds[0]), replica_bounds[1])
    cfg = SimConfig(
        capacity_rps_per_replica=cap,
        step_s=step_s,
        cold_start_s=cold_start_s,
        warm_promotion_s=warm_promotion_s,
        rate_window_s=rate_window_s,
        slo_s=slo_s,
        seed=seed,
        initial_replicas=init,
        demand_signal=demand_signal,
    )
    orc = oracle_gpu_hours(
        rates, step_s, cap, cfg.cold_start_s * cfg.cold_start_min_ratio, initial_replicas=init
    )
    return Scenario(rates, cfg, peak_replicas, init, orc)


def _surgecast_settings(
    scenario: Scenario, warm_max: int, overrides: Mapping[str, Any] | None
) -> PolicySettings:
    """:class:`PolicySettings` with the scenario's capacity, cold start and warm promotion,
    ``warm_max`` and ``overrides``; the rest are the defaults."""
    cfg = scenario.config
    kwargs: dict[str, Any] = {
        "max_replicas": MAX_REPLICAS,
        "warm_max": warm_max,
        "cold_start_prior_s": cfg.cold_start_s,
        "warm_promotion_s": cfg.warm_promotion_s,
    }
    kwargs.update(overrides or {})
    return PolicySettings(scenario.capacity, **kwargs)


def forecast_step(trace_step_s: float) -> float:
    """The forecast bucket surgecast uses on a trace: 1 minute, or the trace's own step
    when that is coarser."""
    return max(60.0, trace_step_s)


def make_surgecast(
    scenario: Scenario,
    trace_step_s: float,
    model: str = DEFAULT_FORECAST_MODEL,
    *,
    warm_max: int = 0,
    overrides: Mapping[str, Any] | None = None,
    forecast_step_s: float | None = None,
    guard: GuardSettings | None = None,
    partial_bucket: bool = True,
    history: Series | None = None,
    adaptive: Mapping[str, float] | None = MappingProxyType({}),
) -> SurgecastAutoscaler:
    """surgecast with the scenario's capacity, cold start and warm promotion; the other
    settings are :class:`PolicySettings`' defaults. ``warm_max = 0`` (no warm pool) because
    the simulator charges a warm pod like an active one: see docs/autoscaling.md.
    ``overrides`` replaces further :class:`PolicySettings` fields (ablations);
    ``forecast_step_s`` the forecast bucket (``None``: :func:`forecast_step`); ``guard``
    switches the live controller's prediction guard on (``None``: off); ``partial_bucket``
    conditions the bucket in progress on its observed part
    (:func:`~forecasting.partial.condition_first_bucket`); ``history`` is the demand
    before the replay (any kind and step; it must end where the replay starts), which the
    forecaster starts with, as the live controller's first refit backfills
    ``forecast.history`` from Prometheus (``None``: no history, a fresh install);
    ``adaptive`` the :class:`~forecasting.adaptive.AdaptiveLevel` keyword arguments the
    scaling quantile is read with (empty: its defaults, as the CRD's; ``None``: off)."""
    return SurgecastAutoscaler(
        _surgecast_settings(scenario, warm_max, overrides),
        model=model,
        forecast_step_s=forecast_step_s or forecast_step(trace_step_s),
        refit_every_s=6 * 3600.0,
        guard=guard,
        partial_bucket=partial_bucket,
        history=_history_rates(scenario, history),
        adaptive=adaptive,
    )


def _history_rates(scenario: Scenario, history: Series | None) -> Series | None:
    """``history`` as req/s on the simulation grid, for surgecast's forecaster."""
    if history is None:
        return None
    # whole simulation buckets only: a partly covered last one would end after the
    # replay's first bucket starts (a trace finer than the step, cut off its grid)
    return demand_rates(trim_to_grid(history, scenario.step_s), scenario.step_s)


def make_clairvoyant(
    scenario: Scenario,
    start_s: float,
    forecast_step_s: float,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> ClairvoyantSurgecast:
    """surgecast's policy (as :func:`make_surgecast` sets it up) fed the scenario's true
    demand as its forecast, in buckets of ``forecast_step_s``: the benchmark's yardstick
    for what a perfect forecast at that step would buy."""
    return ClairvoyantSurgecast(
        _surgecast_settings(scenario, 0, overrides),
        scenario.rates,
        start_s,
        scenario.step_s,
        forecast_step_s=forecast_step_s,
    )


def build_policies(
    scenario: Scenario,
    trace: Series,
    names: Sequence[str] = DEFAULT_POLICIES,
    *,
    model: str = DEFAULT_FORECAST_MODEL,
    history: Series | None = None,
    settings: PolicySettings | None = None,
    forecaster: Mapping[str, Any] | None = None,
    guard: GuardSettings | None = None,
) -> dict[str, Autoscaler]:
    """The autoscalers called ``names`` (keys of :data:`POLICY_LABELS`), by table label;
    surgecast's forecaster starts with ``history`` (see :func:`make_surgecast`).

    With ``settings`` (a ``PredictiveAutoscaler``'s, as the controller derives them),
    surgecast and the ``exact`` yardstick run with them instead of the benchmark's
    defaults, surgecast's forecaster with ``forecaster`` (``SurgecastAutoscaler`` keyword
    arguments: ``model``, ``forecast_step_s``, ``refit_every_s``, ``partial_bucket``,
    ``adaptive``; ``model``
    is then ignored) and the prediction ``guard``, and every baseline is capped at the
    spec's ``max_replicas``.

    Raises:
        KeyError: an unknown policy name.
    """
    cap = scenario.capacity
    max_replicas = MAX_REPLICAS if settings is None else settings.max_replicas
    fk: dict[str, Any] = {"model": model, **(forecaster or {})}
    out: dict[str, Autoscaler] = {}
    for name in names:
        if name not in POLICY_LABELS:
            raise KeyError(name)
        pol: Autoscaler
        if name == "surgecast" and settings is not None:
            pol = SurgecastAutoscaler(settings, **fk, guard=guard,
                                      history=_history_rates(scenario, history))
        elif name == "surgecast":
            pol = make_surgecast(scenario, trace.step_s, model, history=history)
        elif name == "static":
            pol = REGISTRY["static"](
                min(math.ceil(float(scenario.rates.max()) / cap), max_replicas))
        elif name == "oracle":
            cfg = scenario.config
            pol = REGISTRY["oracle"](
                scenario.rates,
                trace.start_s,
                scenario.step_s,
                cap,
                max_cold_start_s=cfg.cold_start_s * cfg.cold_start_max_ratio,
            )
        elif name == "exact" and settings is not None:
            pol = ClairvoyantSurgecast(
                settings, scenario.rates, trace.start_s, scenario.step_s,
                forecast_step_s=fk.get("forecast_step_s") or forecast_step(trace.step_s),
            )
        elif name == "exact":
            # yardstick: surgecast's policy fed the true demand of each forecast bucket
            pol = make_clairvoyant(scenario, trace.start_s, forecast_step(trace.step_s))
        elif name == "phpa":
            # a daily season of 15 s syncs, 3 stored seasons, alpha/beta/gamma tuned hourly
            pol = REGISTRY["phpa"](
                cap, max_replicas=max_replicas, season_length=5760, stored_seasons=3,
                tune_every=240,
            )
        else:
            pol = REGISTRY[name](cap, max_replicas=max_replicas)
        out[POLICY_LABELS[name]] = pol
    return out


def compare(
    trace: Series,
    scenario: Scenario,
    policies: dict[str, Autoscaler],
    *,
    on_done: Callable[[str, SimResult], None] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[tuple[dict[str, float | str], SimResult]]:
    """Simulate every policy on ``trace``; one summary row (``policy``, ``slo_pct``,
    ``p99_s``, ``gpu_hours``, ``x_oracle``, ``actions``, ``under_min``, ``util_pct``,
    ``sim_s``) and the full result per policy, in order. ``on_done`` is called after each;
    ``on_progress(name, steps_done, steps)`` during each (see :func:`simulate`)."""
    out: list[tuple[dict[str, float | str], SimResult]] = []
    for name, pol in policies.items():
        t0 = time.perf_counter()
        step_cb = None
        if on_progress is not None:
            step_cb = functools.partial(on_progress, name)
        res = simulate(trace, pol, scenario.config, name=name, on_progress=step_cb)
        row = res.summary(scenario.oracle_gpu_hours)
        busy = res.served.sum() / max(1e-9, (res.capacity_rps * scenario.step_s).sum())
        row["util_pct"] = 100 * float(busy)
        row["sim_s"] = time.perf_counter() - t0
        out.append((row, res))
        if on_done is not None:
            on_done(name, res)
    return out


@dataclass(frozen=True)
class Tick:
    """One controller decision as the dry-run prints it.

    Attributes:
        now_s: tick time (epoch seconds).
        demand_rps: the demand the controller saw (delayed ``rate()``; ``None`` before any).
        p50_rps, pq_rps: peak of the forecast's median and of the policy's quantile over the
            lead window, now to now + lead + one tick (``None``: no forecast used).
        current: the Deployment's replicas before the decision.
        decision: the decision.
    """

    now_s: float
    demand_rps: float | None
    p50_rps: float | None
    pq_rps: float | None
    current: int
    decision: Decision


class RecordingAutoscaler:
    """Wraps an autoscaler and keeps every decision (with surgecast's forecast) as a
    :class:`Tick`; behaves exactly like the wrapped one."""

    def __init__(self, inner: Autoscaler) -> None:
        self.inner = inner
        self.name = inner.name
        self.interval_s = inner.interval_s
        #: the inner autoscaler's own demand lag, if any (see :class:`Autoscaler`)
        self.observation_lag_s: float | None = getattr(inner, "observation_lag_s", None)
        self.demand_signal: str | None = getattr(inner, "demand_signal", None)
        settings: PolicySettings | None = getattr(inner, "settings", None)
        #: the quantile the policy sizes for (the ``pq`` column)
        self.quantile = settings.quantile if settings is not None else 0.9
        self.ticks: list[Tick] = []

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """Decide with the wrapped autoscaler and record the tick; the forecast columns are
        the peaks of the median and of the policy's quantile over the decision's lead
        window."""
        decision = self.inner.decide(signals, view)
        p50 = pq = None
        fc: Forecast | None = getattr(self.inner, "last_forecast", None)
        if fc is not None and "predictive" in decision.components:
            now = signals.now_s
            end = now + decision.components.get("lead_s", 0.0) + self.interval_s
            p50 = float(np.max(demand_window(fc, 0.5, now, end)))
            if self.quantile in fc.quantiles:
                pq = float(np.max(demand_window(fc, self.quantile, now, end)))
        self.ticks.append(
            Tick(signals.now_s, signals.demand_rps, p50, pq, signals.pods.desired, decision)
        )
        return decision
