"""Property tests of the surgecast policy (hypothesis)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.decision import Decision, Reason
from autoscaler.core.policy import Policy, PolicyState
from autoscaler.core.reactive import hpa_replicas
from autoscaler.core.settings import Fallback, PolicySettings, ScheduleWindow
from autoscaler.core.signals import PodCounts, Signals
from autoscaler.errors import ConfigError
from forecasting.forecast import Forecast

NOW = 1_700_000_000.0
CAP = 10.0


def fc(level: float, ramp: float = 0.0, factor: float = 1.0) -> Forecast:
    med = level + ramp * np.arange(6)
    vals = np.vstack([med, med * 1.2, med * 1.4]) * factor
    return Forecast(
        start_s=NOW - 30, step_s=60.0, quantiles=(0.5, 0.9, 0.95), values=vals, model="t"
    )


def sig(current: int, demand: float | None) -> Signals:
    return Signals(
        now_s=NOW,
        demand_rps=demand,
        observed_at_s=NOW - 15,
        pods=PodCounts(active=current, desired=current),
    )


cur = st.integers(0, 60)
dem = st.floats(0, 2000)
lvl = st.floats(0, 2000)


@settings(max_examples=60, deadline=None)
@given(cur, dem, lvl, st.integers(0, 10), st.integers(0, 90))
def test_bounds_always_hold(c: int, d: float, level: float, lo: int, extra: int) -> None:
    p = Policy(PolicySettings(CAP, min_replicas=lo, max_replicas=lo + extra))
    dec, _ = p.decide(sig(c, d), fc(level))
    assert lo <= dec.total <= lo + extra


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), dem, lvl)
def test_rate_limits_hold(c: int, d: float, level: float) -> None:
    p = Policy(PolicySettings(CAP, min_replicas=0, max_replicas=1000))
    dec, _ = p.decide(sig(c, d), fc(level))
    assert dec.total <= max(2 * c, c + 4)


@settings(max_examples=60, deadline=None)
@given(cur, dem, lvl, st.floats(1.0, 5.0), st.floats(0, 50))
def test_monotone_in_forecast(c: int, d: float, level: float, factor: float, ramp: float) -> None:
    p = Policy(PolicySettings(CAP, max_replicas=1000, warm_max=10))
    low, _ = p.decide(sig(c, d), fc(level, ramp))
    high, _ = p.decide(sig(c, d), fc(level, ramp, factor))
    assert high.total >= low.total
    assert high.active >= low.active


@settings(max_examples=60, deadline=None)
@given(cur, dem, lvl, st.booleans())
def test_never_below_reactive_rule(c: int, d: float, level: float, predicting: bool) -> None:
    """Never below the HPA rule at the target in effect: ``target_util_ratio`` without a
    forecast, ``predicting_target_util_ratio`` while one is in use."""
    s = PolicySettings(CAP, min_replicas=0, max_replicas=1000)
    dec, _ = Policy(s).decide(sig(c, d), fc(level) if predicting else None)
    util = s.predicting_target_util_ratio if predicting else s.target_util_ratio
    assert util is not None
    reactive = hpa_replicas(c, d, CAP * util, ready=c)
    up_cap = max(2 * c, c + 4)
    assert dec.total >= min(reactive, up_cap)


#: one tick of a run: demand read (``None``: missing), forecast level (``None``: no forecast)
#: and how many of the pods ordered are still starting
tick = st.tuples(st.one_of(st.none(), dem), st.one_of(st.none(), lvl), st.integers(0, 8))


def _run(p: Policy, start: int, ticks: list[tuple[float | None, float | None, int]]) -> list[int]:
    """Totals of ``p`` over ``ticks`` 15 s apart, each tick's pods as the last one left."""
    state, current, totals = p.initial_state(), start, [start]
    for i, (d, level, starting) in enumerate(ticks):
        n_start = min(starting, current)
        s = Signals(
            now_s=NOW + 15 * i,
            demand_rps=d,
            observed_at_s=NOW + 15 * i - 15,
            pods=PodCounts(active=current - n_start, starting=n_start, desired=current),
        )
        dec, state = p.decide(s, None if level is None else fc(level), state)
        current = dec.total
        totals.append(current)
    return totals


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 60), st.lists(tick, min_size=2, max_size=30), st.integers(0, 10),
       st.integers(0, 90))
def test_over_many_ticks_bounds_and_rate_limits_hold(
    c: int, ticks: list[tuple[float | None, float | None, int]], lo: int, extra: int
) -> None:
    """Across a run, not only at a fresh state: every total within the bounds, and no tick
    adds more than the HPA's default scale-up limits allow from the tick before (100 % or
    4 pods per 15 s, whichever is more)."""
    c = min(max(c, lo), lo + extra)
    totals = _run(Policy(PolicySettings(CAP, min_replicas=lo, max_replicas=lo + extra)), c, ticks)
    assert all(lo <= t <= lo + extra for t in totals)
    for before, after in itertools.pairwise(totals):
        assert after <= max(2 * before, before + 4, lo)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.lists(tick, min_size=2, max_size=30))
def test_over_many_ticks_missing_demand_never_lowers_the_count(
    c: int, ticks: list[tuple[float | None, float | None, int]]
) -> None:
    """Without a fallback a tick whose demand is missing holds or raises the count, however
    the ticks before it went (their stabilization and rate-limit history included)."""
    totals = _run(Policy(PolicySettings(CAP, min_replicas=0, max_replicas=1000)), c, ticks)
    for (d, _, _), before, after in zip(ticks, totals[:-1], totals[1:], strict=True):
        if d is None:
            assert after >= before


def test_reactive_floor_runs_hotter_only_while_a_forecast_is_in_use() -> None:
    """900 req/s on 10 pods of 10 req/s: the HPA at 70 % asks for 129 pods, at 90 % for
    100; a forecast that sees no more demand than now lets the floor plan 90 %."""
    s = PolicySettings(CAP, min_replicas=0, max_replicas=1000, predicting_target_util_ratio=0.9)
    p = Policy(s)
    low = fc(100.0, factor=0.5)
    with_fc, _ = p.decide(sig(100, 900.0), low)
    without, _ = p.decide(sig(100, 900.0), None)
    assert with_fc.components["reactive"] == 100 and with_fc.total == 100
    assert without.components["reactive"] == 129 and without.total == 129
    # never below target_util_ratio, and None keeps the HPA's target always
    hot = PolicySettings(CAP, target_util_ratio=0.95, predicting_target_util_ratio=0.9)
    assert hot.reactive_util(True) == 0.95
    off = PolicySettings(CAP, predicting_target_util_ratio=None)
    assert off.reactive_util(True) == off.reactive_util(False) == 0.7


@settings(max_examples=60, deadline=None)
@given(cur, st.booleans(), st.one_of(st.none(), lvl))
def test_no_scale_down_on_missing_or_stale(c: int, stale: bool, level: float | None) -> None:
    p = Policy(PolicySettings(CAP, min_replicas=0, max_replicas=1000))
    s = (
        Signals(
            now_s=NOW, demand_rps=1.0, observed_at_s=NOW - 600, pods=PodCounts(active=c, desired=c)
        )
        if stale
        else sig(c, None)
    )
    dec, _ = p.decide(s, fc(level) if level is not None else None)
    assert dec.total >= c
    assert dec.reason is Reason.STALE_METRICS_HOLD


def test_forecast_leads_reactive_before_a_ramp() -> None:
    p = Policy(PolicySettings(CAP))
    dec, _ = p.decide(sig(10, 70.0), fc(70.0, ramp=10.0))  # steady now, ramp ahead
    assert dec.reason is Reason.FORECAST_LEAD
    assert dec.total > 10
    assert "predictive" in dec.message


def test_fallback_after_repeated_failures() -> None:
    p = Policy(PolicySettings(CAP, fallback=Fallback(failure_threshold=3, replicas=20)))
    state = p.initial_state()
    reasons = []
    for i in range(3):
        s = Signals(now_s=NOW + 15 * i, pods=PodCounts(active=5, desired=5))
        dec, state = p.decide(s, None, state)
        reasons.append(dec.reason)
    assert reasons == [Reason.STALE_METRICS_HOLD, Reason.STALE_METRICS_HOLD, Reason.FALLBACK]
    assert dec.total == 10  # 5 -> 20 wanted, scale-up limit max(2x, +4) = 10


def test_schedule_bounds_in_time_zone() -> None:
    # 2023-11-14 22:13:20 UTC = 23:13:20 in Berlin (a Tuesday)
    w = ScheduleWindow(
        "23:00", "23:30", min_replicas=8, days=frozenset({1}), timezone="Europe/Berlin"
    )
    p = Policy(PolicySettings(CAP, schedule=(w,), max_replicas=50))
    dec, _ = p.decide(sig(8, 0.0), fc(0.0))
    assert dec.total == 8 and dec.reason is Reason.SCHEDULE
    w_utc = ScheduleWindow("23:00", "23:30", min_replicas=8, days=frozenset({1}), timezone="UTC")
    dec2, _ = Policy(PolicySettings(CAP, schedule=(w_utc,))).decide(sig(8, 0.0), fc(0.0))
    assert dec2.total < 8


def test_tiers_raise_the_floor() -> None:
    from autoscaler.core.settings import Tier

    p = Policy(PolicySettings(CAP, tiers=(Tier(0.5, 1.0), Tier(0.9, 1.5))))
    s = Signals(
        now_s=NOW,
        demand_rps=60.0,
        gpu_util_ratio=0.95,
        observed_at_s=NOW,
        pods=PodCounts(active=10, desired=10),
    )
    dec, _ = p.decide(s, None)
    assert dec.total == 15 and dec.reason is Reason.TIER


def test_the_reactive_floor_takes_each_directions_tolerance_from_behavior() -> None:
    from autoscaler.core.settings import Behavior

    b = Behavior()
    tight_up = Behavior(replace(b.scale_up, tolerance=0.0), b.scale_down)
    loose_down = Behavior(
        b.scale_up, replace(b.scale_down, tolerance=0.5, stabilization_window_s=0)
    )
    # 10 pods at 70 % of 10 req/s plan 70 req/s; 73.5 req/s is 1.05x: inside the default band
    assert Policy(PolicySettings(CAP)).decide(sig(10, 73.5), None)[0].total == 10
    assert Policy(PolicySettings(CAP, behavior=tight_up)).decide(sig(10, 73.5), None)[0].total == 11
    # 42 req/s is 0.6x: the default band scales down to 6, a 0.5 scale-down tolerance holds
    no_window = Behavior(b.scale_up, replace(b.scale_down, stabilization_window_s=0))
    assert Policy(PolicySettings(CAP, behavior=no_window)).decide(sig(10, 42.0), None)[0].total == 6
    held = Policy(PolicySettings(CAP, behavior=loose_down)).decide(sig(10, 42.0), None)[0]
    assert held.total == 10


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"target_util_ratio": 0}, "target_util_ratio"),
        ({"quantile": 1.0}, "quantile"),
        ({"min_replicas": 5, "max_replicas": 2}, "min_replicas"),
        ({"forecast_util_ratio": 1.5}, "forecast_util_ratio"),
        ({"predicting_target_util_ratio": 0.0}, "predicting_target_util_ratio"),
        ({"predictive_down_window_s": -1}, "predictive_down_window_s"),
        ({"backlog_drain_s": float("nan")}, "backlog_drain_s"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        PolicySettings(CAP, **kwargs)  # type: ignore[arg-type]


def test_bad_timezone() -> None:
    with pytest.raises(ConfigError, match="time zone"):
        ScheduleWindow("01:00", "02:00", timezone="Mars/Olympus")


def flat(level: float) -> Forecast:
    return Forecast(
        start_s=NOW - 30,
        step_s=60.0,
        quantiles=(0.5, 0.9, 0.95),
        values=np.full((3, 12), level),
        model="t",
    )


def at(t: float, current: int, demand: float, **kw: float) -> Signals:
    return Signals(
        now_s=NOW + t,
        demand_rps=demand,
        observed_at_s=NOW + t - 15,
        pods=PodCounts(active=current, desired=current),
        **kw,  # type: ignore[arg-type]
    )


def test_forecast_is_held_only_for_the_predictive_window() -> None:
    # a forecast peak that passes: the predictive recommendation is not held for the HPA's
    # 300 s (the forecast already covered the cold-start lead), only for 60 s
    s = PolicySettings(
        CAP, max_replicas=1000, forecast_util_ratio=1.0, predicting_target_util_ratio=None
    )
    p = Policy(s)
    dec, st = p.decide(at(0, 10, 50.0), flat(300.0))
    assert dec.total == 20  # 30 wanted, scale-up limit max(2x, +4)
    totals = []
    for t in (15, 30, 45, 60, 75, 90):
        dec, st = p.decide(at(t, dec.total, 50.0), flat(50.0), st)
        totals.append(dec.total)
    assert totals[:3] == [30, 30, 30]  # held within 60 s of the last high recommendation
    assert totals[-1] == 8  # then down to the HPA rule on demand (50 / 7 per pod)
    # the HPA's own 300 s window still holds the reactive side
    p2 = Policy(s)
    dec, st = p2.decide(at(0, 10, 200.0), None)
    dec, st = p2.decide(at(75, dec.total, 50.0), None, st)
    assert dec.total == 20 and dec.reason is Reason.SCALE_DOWN_STABILIZED  # not 8


def test_pods_beyond_the_warm_plan_serve() -> None:
    p = Policy(PolicySettings(CAP, max_replicas=1000, warm_max=3, forecast_util_ratio=1.0,
                              predicting_target_util_ratio=None))
    dec, st = p.decide(at(0, 20, 130.0), flat(100.0))  # reactive: 130/7 -> 19 (tolerance)
    dec, st = p.decide(at(15, 20, 20.0), flat(20.0), st)  # demand falls; stabilized at 20
    assert dec.total == 20 and dec.reason is Reason.SCALE_DOWN_STABILIZED
    assert dec.warm <= 3 and dec.active >= 17  # the held pods serve, not idle as "warm"


def test_queue_is_drained_within_backlog_drain_s() -> None:
    s = PolicySettings(CAP, max_replicas=1000)
    calm, _ = Policy(s).decide(at(0, 10, 60.0, queue_depth=0.0, throughput_rps=60.0), flat(60))
    busy, _ = Policy(s).decide(at(0, 10, 60.0, queue_depth=3000.0, throughput_rps=100.0), flat(60))
    # arrivals >= throughput 100 req/s, plus 3000 / 60 s: 150 req/s at 10 per pod
    assert busy.components["drain"] == 15 and busy.total >= 15 > calm.total
    off, _ = Policy(PolicySettings(CAP, max_replicas=1000, backlog_drain_s=0)).decide(
        at(0, 10, 60.0, queue_depth=3000.0, throughput_rps=100.0), flat(60)
    )
    assert "drain" not in off.components and off.total < busy.total


def test_drain_counts_what_the_queue_gained_as_arriving() -> None:
    """A demand rate() that counts requests as they finish reads a saturated fleet as its
    throughput while the queue grows: the queue's growth, sustained over two sample
    intervals, is arriving too."""
    s = PolicySettings(CAP, max_replicas=1000)

    def run(settings: PolicySettings, queues: list[float]) -> Decision:
        p, st = Policy(settings), None
        for k, q in enumerate(queues):
            dec, st = p.decide(
                at(15 * k, 10, 100.0, queue_depth=q, throughput_rps=100.0), flat(100), st
            )
        return dec

    # 15 s apart the queue gains 1500, then 1800: 100 and 120 req/s beyond the 100 served
    dec = run(s, [600.0, 2100.0, 3900.0])
    assert dec.components["queue_growth_rps"] == pytest.approx(100.0)  # the smaller one
    # arriving 200 req/s, plus 3900 / 60 s = 65: 265 req/s at 10 per pod
    assert dec.components["drain"] == 27 and dec.total == 20  # the rate limit: 2x a tick
    assert "drain 27 (queue 3900 within 60s, growing 100.0 req/s)" in dec.message
    # the same ticks without the growth: throughput 100 + 65 -> 17
    off = run(replace(s, queue_growth=False), [600.0, 2100.0, 3900.0])
    assert off.components["drain"] == 17 and "queue_growth_rps" not in off.components
    # one interval of growth is not enough: a burst one scrape long
    one = run(s, [0.0, 1500.0])
    assert "queue_growth_rps" not in one.components and one.components["drain"] == 13
    assert "drain 13 (queue 1500 within 60s)" in one.message


def test_queue_growth_is_measured_between_distinct_samples_only() -> None:
    """A tick that sees the same scrape again keeps the growth measured when it arrived; a
    shrinking queue adds nothing; a missing queue forgets the last sample."""
    p = Policy(PolicySettings(CAP, max_replicas=1000))
    obs = NOW - 15

    def tick(
        t: float, q: float | None, observed: float, st: PolicyState | None = None
    ) -> tuple[Decision, PolicyState]:
        sig = replace(
            at(t, 10, 100.0, throughput_rps=100.0), queue_depth=q, observed_at_s=observed
        )
        return p.decide(sig, flat(100), st)

    _, st = tick(0, 300.0, obs)
    _, st = tick(15, 1050.0, obs + 15, st)  # 750 in 15 s: 50 req/s
    dec, st = tick(30, 2550.0, obs + 45, st)  # 1500 in 30 s: 50 req/s
    assert dec.components["queue_growth_rps"] == pytest.approx(50.0)
    dec, st = tick(45, 2550.0, obs + 45, st)  # the same sample again
    assert dec.components["queue_growth_rps"] == pytest.approx(50.0)
    dec, st = tick(60, 900.0, obs + 60, st)  # draining: arrivals are the throughput
    assert "queue_growth_rps" not in dec.components
    assert dec.components["drain"] == 12  # (100 + 900 / 60) / 10 -> 11.5
    _, st = tick(75, None, obs + 75, st)
    assert st.queue_sample is None and st.queue_growths_rps == (0.0, 0.0)
    _, st = tick(90, 1200.0, obs + 90, st)  # no sample before it: no growth yet
    dec, _ = tick(105, 2700.0, obs + 105, st)  # one interval since: not sustained yet
    assert "queue_growth_rps" not in dec.components


def test_capacity_is_not_refined_while_pods_change() -> None:
    p = Policy(PolicySettings(CAP, max_replicas=1000))
    st = p.initial_state()
    # saturated (queue), but the scraped throughput is from before 10 new pods were active
    for t, active in ((0, 10), (15, 20), (30, 30)):
        _, st = p.decide(at(t, active, 100.0, queue_depth=500.0, throughput_rps=100.0), None, st)
    assert st.capacity is not None and st.capacity.samples == 0
    for t in (45, 60):  # pods steady: now throughput per pod measures capacity
        _, st = p.decide(at(t, 30, 100.0, queue_depth=500.0, throughput_rps=240.0), None, st)
    assert st.capacity is not None and st.capacity.samples == 2


def test_capacity_is_not_refined_from_a_tick_with_stale_metrics() -> None:
    p = Policy(PolicySettings(CAP, max_replicas=1000))
    st = p.initial_state()
    for t in (0, 15):  # saturated, pods steady, but the newest demand sample is 10 min old
        stale = replace(at(t, 10, 100.0, queue_depth=500.0, throughput_rps=60.0),
                        observed_at_s=NOW + t - 600)
        _, st = p.decide(stale, None, st)
    assert st.capacity is not None and st.capacity.samples == 0 and st.capacity.rps == CAP
    _, st = p.decide(at(30, 10, 100.0, queue_depth=500.0, throughput_rps=60.0), None, st)
    assert st.capacity is not None and st.capacity.samples == 1


def test_fixed_lead_ignores_observed_start_durations() -> None:
    for learn, expected in ((True, 300.0), (False, 120.0)):
        p = Policy(PolicySettings(CAP, learn_lead=learn, cold_start_prior_s=120.0))
        st = p.initial_state()
        sig_ = Signals(
            now_s=NOW,
            demand_rps=10.0,
            observed_at_s=NOW,
            pods=PodCounts(active=2, desired=2),
            ready_durations_s=(300.0,) * 6,
        )
        dec, st = p.decide(sig_, flat(10.0), st)
        assert dec.components["lead_s"] == pytest.approx(expected)


def _jump_at(bucket: int) -> Forecast:
    """50 req/s (5 pods at 90 %), then 320 req/s (36 pods) from the bucket that starts at
    ``NOW - 30 + 60 * bucket``."""
    med = np.where(np.arange(6) >= bucket, 320.0, 50.0)
    return Forecast(
        start_s=NOW - 30, step_s=60.0, quantiles=(0.5, 0.9), values=np.vstack([med, med]),
        model="t",
    )


def test_a_climb_the_rate_limits_spread_over_ticks_starts_early_enough() -> None:
    """5 -> 36 pods takes three ticks under "100 % or 4 pods per 15 s" (5, 10, 20, 36), so
    a need at now + 150 s, beyond the 135 s of lead plus interval, is ordered now; one at
    now + 210 s, which the climb reaches in time from a later tick, is not yet."""
    s = PolicySettings(CAP, min_replicas=0, max_replicas=100, cold_start_prior_s=120.0)
    early, _ = Policy(s).decide(sig(5, 50.0), _jump_at(3))
    assert early.total == 10 and early.components["ramp_s"] == 30.0
    assert early.components["predictive"] == 36
    later, _ = Policy(s).decide(sig(5, 50.0), _jump_at(4))
    assert later.total <= 6 and "ramp_s" not in later.components
    off = PolicySettings(CAP, min_replicas=0, max_replicas=100, ramp_lookahead_s=0.0)
    plain, _ = Policy(off).decide(sig(5, 50.0), _jump_at(3))
    assert plain.total <= 6
    with pytest.raises(ConfigError, match="ramp_lookahead_s"):
        PolicySettings(CAP, ramp_lookahead_s=-1.0)


def test_warm_pool_floor_holds_without_a_forecast() -> None:
    # start-up, prediction switched off, a failed model: the reactive rule decides the
    # active pods, and the configured warm floor stays on top (it used to drop to 0)
    s = PolicySettings(CAP, max_replicas=1000, warm_min=2, warm_max=5)
    dec, _ = Policy(s).decide(at(0, 10, 70.0), None)  # 70 / 7 per pod -> 10 active
    assert (dec.active, dec.warm, dec.total) == (10, 2, 12)
    # with a forecast the pool is sized from its spread, still within [2, 5]
    dec, _ = Policy(s).decide(at(0, 10, 70.0), fc(70.0))
    assert 2 <= dec.warm <= 5
    # no pool configured: nothing warm either way
    dec, _ = Policy(PolicySettings(CAP, max_replicas=1000)).decide(at(0, 10, 70.0), None)
    assert dec.warm == 0 and dec.total == 10


def test_capacity_waits_for_the_rate_window_after_a_scale_up() -> None:
    """A rate() over 60 s still averages the throughput of the pods before a change: with
    ``capacity_settle_s`` 75 (the controller's 1m window plus one 15 s interval) the
    capacity is refined only 75 s after the serving pods last changed, not at the tick
    after, where the throughput of 10 pods divided by 20 would halve it."""
    p = Policy(PolicySettings(CAP, max_replicas=1000, capacity_settle_s=75.0))
    st = p.initial_state()
    _, st = p.decide(at(0, 10, 100.0, queue_depth=500.0, throughput_rps=100.0), None, st)
    for t in (15, 30, 45, 60, 75):  # 20 pods from t=15 on; the window still reads 10 pods
        _, st = p.decide(at(t, 20, 100.0, queue_depth=500.0, throughput_rps=100.0), None, st)
        assert st.capacity is not None and st.capacity.samples == 0, t
    _, st = p.decide(at(90, 20, 100.0, queue_depth=500.0, throughput_rps=200.0), None, st)
    assert st.capacity is not None and st.capacity.samples == 1
    assert st.capacity.rps == pytest.approx(CAP)  # 200 req/s over 20 pods: the configured 10
    # the default (0, the simulator's unwindowed throughput) refines at the tick after
    p0 = Policy(PolicySettings(CAP, max_replicas=1000))
    st0 = p0.initial_state()
    for t, active in ((0, 10), (15, 20), (30, 20)):
        _, st0 = p0.decide(at(t, active, 100.0, queue_depth=500.0, throughput_rps=200.0), None, st0)
    assert st0.capacity is not None and st0.capacity.samples == 1

