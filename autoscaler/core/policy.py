"""surgecast's scaling policy: predictive (forecast over the cold-start lead) with the HPA
as a reactive floor, then stabilization, rate limits and (scheduled) bounds.

Order of one decision (all pure; ``now_s`` comes from the signals):

1. bounds at ``now_s`` (base bounds overridden by active schedule windows);
2. reactive floor: the HPA rule on demand per active pod (plus optional GPU tiers), and,
   when a queue is observed, the replicas that drain it within ``backlog_drain_s`` (counting
   the queue's sustained growth as arriving, ``queue_growth``); while
   a forecast is in use the floor plans ``predicting_target_util_ratio`` (it only has to
   catch what the forecast misses), else ``target_util_ratio``;
3. predictive: the replicas that must be *ready* at every moment of
   ``[now, now + lead + interval]`` for the chosen forecast quantile at the target
   utilisation (pods ordered now are ready only after the cold-start lead, so scaling down
   below that peak now could not be undone in time); a later bucket whose need the scale-up
   rate limits reach only after several ticks (:func:`~autoscaler.core.reactive.ramp_s`)
   counts from the tick its climb must start; the active share covers
   ``[now, now + promotion + interval]`` and the warm pool the rest plus the forecast spread;
4. stabilization: the HPA ``behavior`` scale-down window (300 s by default) applies to the
   reactive recommendation; the predictive recommendation, which already looks one lead
   ahead, is held only for ``predictive_down_window_s``;
5. ``max`` of both; on missing or stale demand, hold (``max(current, predictive)``: never
   scale down), and after ``failure_threshold`` failed ticks apply the KEDA-style fallback;
6. HPA rate limits + bounds. Pods the total keeps beyond the active need and the warm plan
   stay active (a warm pod costs the same GPU and does not serve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from autoscaler.core.capacity import CapacityEstimate, update_capacity
from autoscaler.core.decision import Decision, Reason
from autoscaler.core.lead_time import LeadTimeEstimate
from autoscaler.core.reactive import (
    HpaState,
    hpa_replicas,
    ramp_s,
    rate_limit,
    record_scale,
    stabilize,
)
from autoscaler.core.schedule import bounds_at
from autoscaler.core.settings import PolicySettings
from autoscaler.core.signals import Signals
from autoscaler.core.warm_pool import demand_window, warm_pool_size
from forecasting.forecast import Forecast

__all__ = ["Policy", "PolicyState"]


@dataclass(frozen=True)
class PolicyState:
    """Everything the policy remembers between ticks (returned new by every decision)."""

    hpa: HpaState = field(default_factory=HpaState)
    failures: int = 0
    capacity: CapacityEstimate | None = None
    lead: LeadTimeEstimate | None = None
    predictive_recs: tuple[tuple[float, int], ...] = ()
    last_active: int = -1
    #: when the serving pod count last differed from the tick before (``None``: never seen)
    active_changed_s: float | None = None
    #: the newest queue sample seen (its time, its depth; ``None``: none yet, or the signal
    #: was missing) and the queue's growth in req/s over the last two sample intervals
    #: (older, newer)
    queue_sample: tuple[float, float] | None = None
    queue_growths_rps: tuple[float, float] = (0.0, 0.0)


def _ceil_div(x: float, per: float) -> int:
    return max(0, math.ceil(x / per - 1e-9))


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _lead_prior(s: PolicySettings) -> LeadTimeEstimate:
    return LeadTimeEstimate(
        s.cold_start_prior_s, s.lead_quantile, s.lead_min_samples, learn=s.learn_lead
    )


def _hold(
    recs: tuple[tuple[float, int], ...], now_s: float, window_s: float, value: int
) -> tuple[int, tuple[tuple[float, int], ...]]:
    """The highest of ``value`` and the recommendations within ``window_s``; new records."""
    cut = now_s - window_s
    kept = tuple(r for r in recs if r[0] > cut)
    held = max([value, *(v for _, v in kept)])
    return held, (*kept, (now_s, value))


def _ramp_peak(
    fc: Forecast,
    s: PolicySettings,
    hpa: HpaState,
    now_s: float,
    t_cold_s: float,
    current: int,
    per_pod_rps: float,
) -> tuple[float, float]:
    """The highest forecast bucket after ``t_cold_s`` (within ``ramp_lookahead_s``) whose
    replicas the scale-up rate limits reach only so many ticks from now that the climb must
    start this tick to have them ready when the bucket starts; ``(0, 0)`` when none.
    Returns the bucket's demand and the climb's seconds."""
    if s.ramp_lookahead_s <= 0:
        return 0.0, 0.0
    row = fc.quantile(s.quantile)
    starts = fc.start_s + fc.step_s * np.arange(fc.horizon)
    best = ramp_best = 0.0
    for b in np.flatnonzero((starts > t_cold_s) & (starts <= t_cold_s + s.ramp_lookahead_s)):
        need = _ceil_div(float(row[b]), per_pod_rps)
        ramp = ramp_s(hpa, now_s, current, need, s.behavior, s.interval_s)
        if ramp > 0 and starts[b] <= t_cold_s + ramp and row[b] > best:
            best, ramp_best = float(row[b]), ramp
    return best, ramp_best


def _queue_growth(
    signals: Signals, st: PolicyState
) -> tuple[tuple[float, float] | None, tuple[float, float]]:
    """The newest queue sample and the queue's growth (req/s) over the last two intervals
    between samples, older first.

    The sample's time is the demand sample's (the same scrape), else the tick's. A tick
    that sees the same sample again keeps what was measured when it arrived; a missing
    queue forgets it all (growth across a gap is not one scrape's)."""
    q = signals.queue_depth
    if q is None:
        return None, (0.0, 0.0)
    t = signals.observed_at_s if signals.observed_at_s is not None else signals.now_s
    prev = st.queue_sample
    if prev is None:
        return (t, q), (0.0, 0.0)
    if t <= prev[0] + 1e-9:
        return prev, st.queue_growths_rps
    return (t, q), (st.queue_growths_rps[1], (q - prev[1]) / (t - prev[0]))


def _drain_note(drain: int, queue: float | None, drain_s: float, comps: dict[str, float]) -> str:
    """The decision message's part on the queue-drain term (empty when it asks nothing)."""
    if not drain or queue is None:
        return ""
    growth = comps.get("queue_growth_rps")
    grows = f", growing {growth:.1f} req/s" if growth is not None else ""
    return f"; drain {drain} (queue {queue:.0f} within {drain_s:g}s{grows})"


class Policy:
    """The surgecast policy for one target; stateless itself (state goes in and out)."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings

    def initial_state(self) -> PolicyState:
        """State before the first tick: the configured capacity and the lead prior."""
        s = self.settings
        return PolicyState(
            capacity=CapacityEstimate.initial(
                s.capacity_rps_per_replica,
                min_ratio=s.capacity_min_ratio,
                max_ratio=s.capacity_max_ratio,
            ),
            lead=_lead_prior(s),
        )

    def decide(
        self, signals: Signals, forecast: Forecast | None, state: PolicyState | None = None
    ) -> tuple[Decision, PolicyState]:
        """One decision at ``signals.now_s``; returns it with the next state."""
        s = self.settings
        st = state if state is not None else self.initial_state()
        now = signals.now_s
        pods = signals.pods
        current = pods.desired if pods.desired > 0 else pods.total

        # -- is demand usable?
        stale_s = signals.staleness_s()
        missing = signals.demand_rps is None
        stale = stale_s is not None and stale_s > s.max_staleness_s
        failures = st.failures + 1 if (missing or stale) else 0

        # -- learn: lead time and capacity
        lead_est = st.lead or _lead_prior(s)
        lead_est = lead_est.observe(*signals.ready_durations_s)
        cap_est = st.capacity or CapacityEstimate.initial(
            s.capacity_rps_per_replica,
            min_ratio=s.capacity_min_ratio,
            max_ratio=s.capacity_max_ratio,
        )
        changed_s = now if pods.active != st.last_active else st.active_changed_s
        settled = (
            pods.active == st.last_active
            and changed_s is not None
            and now - changed_s >= s.capacity_settle_s - 1e-9
        )
        if not (missing or stale) and settled and pods.starting == 0:
            # only while the serving pods did not change over the last tick, nor within the
            # settle time (the rate() window): the scraped throughput lags the pod counts,
            # so a fresh scale-up would read as slow pods; and never from a tick whose
            # metrics are missing or stale
            cap_est = update_capacity(
                cap_est,
                throughput_rps=signals.throughput_rps,
                ready_pods=pods.active,
                queue_depth=signals.queue_depth,
            )
        lead_s = lead_est.lead_s
        per_pod = cap_est.rps * s.reactive_util(forecast is not None)
        per_pod_fc = cap_est.rps * s.forecast_util
        lo, hi, scheduled = bounds_at(s.schedule, now, s.min_replicas, s.max_replicas)
        comps: dict[str, float] = {
            "current": current,
            "min": lo,
            "max": hi,
            "lead_s": lead_s,
            "rps_per_replica": cap_est.rps,
            "capacity_samples": cap_est.samples,
        }
        if signals.throughput_rps is not None:
            comps["throughput_rps"] = signals.throughput_rps

        # -- predictive
        pred_total = pred_active = warm = 0
        peak = 0.0
        if forecast is not None:
            t_cold = now + lead_s + s.interval_s
            t_warm = now + s.warm_promotion_s + s.interval_s
            peak = float(np.max(demand_window(forecast, s.quantile, now, t_cold)))
            later, ramp = _ramp_peak(forecast, s, st.hpa, now, t_cold, current, per_pod_fc)
            if later > peak:
                peak = later
                comps["ramp_s"] = ramp
            pred_total = _ceil_div(peak, per_pod_fc)
            pred_active = _ceil_div(
                float(np.max(demand_window(forecast, s.quantile, now, t_warm))), per_pod_fc
            )
            if s.warm_max > 0:
                warm = warm_pool_size(
                    forecast,
                    now,
                    lead_s,
                    per_pod_fc,
                    high_q=s.warm_quantile,
                    warm_min=s.warm_min,
                    warm_max=s.warm_max,
                )
            else:
                pred_active = pred_total
            comps.update(
                predictive=pred_total,
                predictive_active=pred_active,
                warm_plan=warm,
                forecast_peak_rps=peak,
            )
        elif s.warm_max > 0:
            # no forecast (start-up, prediction off, a failed model): the pool's floor still
            # holds, when a late reactive rule needs warm pods the most
            warm = min(s.warm_min, s.warm_max)
            comps["warm_plan"] = warm

        # -- the queue's growth, sustained over its last two sample intervals (req/s; 0
        # when unknown or not growing in both): a one-scrape burst is over before the pods
        # it would order are ready
        queue_sample, growths = _queue_growth(signals, st)
        growth = max(0.0, min(growths)) if s.queue_growth else 0.0

        # -- reactive floor (HPA on demand per active pod) and tiers
        reactive = drain = 0
        if not (missing or stale):
            assert signals.demand_rps is not None
            serving = pods.active if pods.active > 0 else pods.ready
            reactive = hpa_replicas(
                max(serving, 0),
                signals.demand_rps,
                per_pod,
                ready=serving,
                unready=pods.starting,
                tolerance=_or(s.behavior.scale_up.tolerance, s.tolerance),
                tolerance_down=_or(s.behavior.scale_down.tolerance, s.tolerance),
            )
            comps["reactive"] = reactive
            comps["demand_rps"] = signals.demand_rps
            q = signals.queue_depth
            if s.backlog_drain_s > 0 and q is not None and q > 0:
                # a queue means the pods are saturated: arrivals are at least the throughput,
                # plus what the queue gained (fresher than a rate() of arrivals)
                served = signals.throughput_rps or 0.0
                arriving = max(signals.demand_rps, served + growth)
                if growth > 0:
                    comps["queue_growth_rps"] = growth
                drain = _ceil_div(arriving + q / s.backlog_drain_s, cap_est.rps)
                comps["drain"] = drain
        tier = 0
        if signals.gpu_util_ratio is not None:
            for t in s.tiers:
                if signals.gpu_util_ratio >= t.util_at_least_ratio:
                    tier = max(tier, math.ceil(pods.ready * t.scale_factor - 1e-9))
            if s.tiers:
                comps["tier"] = tier

        # the drain term rides with the forecast (short hold): its pods are not needed once
        # the queue is gone
        active_need = max(pred_active, reactive, tier, drain)
        reactive_raw = max(reactive, tier)
        predictive_raw = max(pred_total, active_need + warm)
        fallback_used = False
        if missing or stale:
            reactive_raw = predictive_raw = max(current, pred_total)
            fb = s.fallback
            if fb is not None and failures >= fb.failure_threshold:
                fallback_used = True
                reactive_raw = predictive_raw = {
                    "static": fb.replicas,
                    "currentReplicas": current,
                    "currentReplicasIfHigher": max(current, fb.replicas),
                    "currentReplicasIfLower": min(current, fb.replicas),
                }[fb.behavior]
        raw = max(reactive_raw, predictive_raw)
        comps["raw"] = raw

        # -- stabilization: the HPA window on the reactive side, a short one on the forecast
        stab_r, hpa_state = stabilize(st.hpa, now, current, reactive_raw, s.behavior)
        held_p, pred_recs = _hold(
            st.predictive_recs, now, s.predictive_down_window_s, predictive_raw
        )
        stab = max(stab_r, held_p)
        why = "ScaleDownStabilized" if stab > raw else ""
        limited, why_rate = rate_limit(hpa_state, now, current, stab, s.behavior)
        why = why_rate or why
        final = min(max(limited, lo), hi)
        if final != limited:
            why = "Bounds"
        if (missing or stale) and not fallback_used and final < current:
            final = min(current, hi)  # a hold never scales down (bounds still win)
        hpa_state = record_scale(hpa_state, now, current, final)
        if s.warm_max > 0 and not (missing or stale):
            # the warm plan is what stays warm; any pods beyond it and the active need serve
            need = max(active_need, 1 if final > 0 else 0)
            active = max(min(final, need), final - warm)
        else:
            active = (
                final if not (missing or stale) else min(final, max(pods.active, final - pods.warm))
            )
        warm_now = final - active

        # -- reason
        if fallback_used:
            reason = Reason.FALLBACK
        elif missing or stale:
            reason = Reason.STALE_METRICS_HOLD
        elif why == "Bounds":
            reason = Reason.SCHEDULE if scheduled else Reason.BOUNDS
        elif why == "ScaleUpLimit":
            reason = Reason.SCALE_UP_LIMIT
        elif why == "ScaleDownLimit":
            reason = Reason.SCALE_DOWN_LIMIT
        elif why == "ScaleDownStabilized":
            reason = Reason.SCALE_DOWN_STABILIZED
        elif tier > max(pred_total, reactive):
            reason = Reason.TIER
        elif forecast is not None and pred_total >= reactive and pred_total > 0:
            reason = Reason.FORECAST_LEAD
        else:
            reason = Reason.REACTIVE_FLOOR
        why_missing = (
            "demand missing" if missing else (f"demand stale by {stale_s:.0f}s" if stale else "")
        )
        msg = (
            f"{current}->{final} replicas ({active} active, {warm_now} warm): {reason.value}; "
            f"reactive {reactive}, predictive {pred_total} (q{s.quantile:g} peak {peak:.1f} req/s "
            f"within {lead_s:.0f}s at {per_pod_fc:.2f} req/s per replica), bounds [{lo}, {hi}]"
            + _drain_note(drain, signals.queue_depth, s.backlog_drain_s, comps)
            + (
                f"; capacity {cap_est.rps:.2f} req/s per replica (configured "
                f"{cap_est.configured_rps:g}, refined from {cap_est.samples} saturated ticks)"
                if cap_est.samples
                else ""
            )
            + (f"; {why_missing}, failures {failures}" if why_missing else "")
        )
        decision = Decision(active, warm_now, reason, msg, comps)
        new_state = replace(
            st,
            hpa=hpa_state,
            failures=failures,
            capacity=cap_est,
            lead=lead_est,
            predictive_recs=pred_recs,
            last_active=pods.active,
            active_changed_s=changed_s,
            queue_sample=queue_sample,
            queue_growths_rps=growths,
        )
        return decision, new_state

    def seed(self, state: PolicyState, now_s: float, current: int) -> PolicyState:
        """Record ``current`` as a scale-down recommendation at ``now_s`` when ``state``
        has none yet (the HPA's ``recordInitialRecommendation``): a target picked up by a
        fresh (re)started controller holds its replicas for the stabilization window
        instead of scaling down on its first tick."""
        if state.hpa.recommendations:
            return state
        return replace(state, hpa=replace(state.hpa, recommendations=((now_s, current),)))

    def carry(self, old: PolicyState, old_settings: PolicySettings) -> PolicyState:
        """``old`` (the same target's state under ``old_settings``) for these settings: the
        stabilization history, scale events, failure count and predictive holds stay (they
        are facts about the target, not about the spec); the capacity and lead-time
        estimates stay only while the settings they were learned under are unchanged."""
        s, o = self.settings, old_settings
        fresh = self.initial_state()
        same_cap = (s.capacity_rps_per_replica, s.capacity_min_ratio, s.capacity_max_ratio) == (
            o.capacity_rps_per_replica, o.capacity_min_ratio, o.capacity_max_ratio)
        same_lead = (s.cold_start_prior_s, s.lead_quantile, s.lead_min_samples, s.learn_lead) == (
            o.cold_start_prior_s, o.lead_quantile, o.lead_min_samples, o.learn_lead)
        return replace(
            old,
            capacity=old.capacity if same_cap else fresh.capacity,
            lead=old.lead if same_lead else fresh.lead,
        )
