"""A discrete-time model of one Deployment serving a demand trace, driven by an autoscaler.

Per step of ``step_s`` seconds: requests arrive at the trace's rate, queue, and are served
by the *serving* pods (active and past their promotion delay) at ``capacity_rps_per_replica``
each; the backlog turns into waiting time. Pods go starting -> ready (a cold-start delay drawn
per pod from a seeded log-normal, clipped) -> active or warm; warm pods serve only
``warm_promotion_s`` after promotion; removed pods keep their GPU for ``termination_s``.
Every pod that exists (starting, warm, active, terminating) costs GPU time.

The autoscaler is called every ``interval_s`` and sees only what a controller would see:
demand averaged over ``rate_window_s`` and delayed by ``scrape_interval_s`` (counted as
requests arrive or, as the engines' counters do, as they finish: ``demand_signal``), queue
depth and GPU utilisation from the same delayed scrape, and pod counts from the API server
(no lag).

Conservation holds exactly: ``served + final backlog == arrivals``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from autoscaler.core.observation import Autoscaler, DemandView
from autoscaler.core.signals import PodCounts, Signals
from forecasting.series import FloatArray, Series

__all__ = [
    "DEMAND_SIGNALS",
    "SimConfig",
    "SimResult",
    "demand_rates",
    "simulate",
    "weighted_quantile",
]


#: what a demand ``rate()`` can count (see :class:`SimConfig`)
DEMAND_SIGNALS = ("arrivals", "completions")


@dataclass(frozen=True)
class SimConfig:
    """The modelled cluster and SLO.

    Attributes:
        capacity_rps_per_replica: requests/s one serving pod completes at saturation.
        step_s: simulation step.
        cold_start_s: median raise -> Ready delay of a new pod.
        cold_start_sigma: log-normal sigma of that delay.
        cold_start_min_ratio, cold_start_max_ratio: the delay is clipped to these ratios.
        warm_promotion_s: warm -> serving delay.
        termination_s: a removed pod keeps its GPU this long.
        scrape_interval_s: Prometheus observation lag.
        rate_window_s: the ``rate()`` window over which demand is averaged.
        base_latency_s: latency of a request that does not queue.
        slo_s: latency SLO (a request meets it if base + queueing wait <= slo_s).
        initial_replicas: ready active pods at the start (``None``: enough for the first
            minute's demand at 70 % utilisation).
        seed: seed of the cold-start draws.
        demand_signal: what the autoscalers' demand ``rate()`` counts: ``"arrivals"``
            (requests as they arrive: TGI's ``tgi_request_count``, and what the presets of
            our worker and vLLM measure by adding the queue's growth to their finished
            requests) or ``"completions"`` (requests as they finish: a finished-requests
            counter alone, vLLM's ``request_success_total`` or our worker's
            ``requests_total``, so a saturated fleet's demand reads as its throughput while
            the queue grows). It is also the history a forecaster sees. An autoscaler
            with a source of its own may carry a ``demand_signal`` attribute that overrides
            it (the KPA's queue-proxies count requests as they arrive).
    """

    capacity_rps_per_replica: float
    step_s: float = 5.0
    cold_start_s: float = 120.0
    cold_start_sigma: float = 0.15
    cold_start_min_ratio: float = 0.75
    cold_start_max_ratio: float = 1.5
    warm_promotion_s: float = 5.0
    termination_s: float = 30.0
    scrape_interval_s: float = 15.0
    rate_window_s: float = 60.0
    base_latency_s: float = 0.2
    slo_s: float = 0.5
    initial_replicas: int | None = None
    seed: int = 0
    demand_signal: str = "arrivals"

    def __post_init__(self) -> None:
        if self.capacity_rps_per_replica <= 0:
            raise ValueError(
                f"capacity_rps_per_replica must be > 0, got {self.capacity_rps_per_replica}"
            )
        if self.step_s <= 0:
            raise ValueError(f"step_s must be > 0, got {self.step_s}")
        if self.slo_s <= self.base_latency_s:
            raise ValueError(
                f"slo_s ({self.slo_s}) must exceed base_latency_s ({self.base_latency_s})"
            )
        if not 0 < self.cold_start_min_ratio <= 1 <= self.cold_start_max_ratio:
            raise ValueError("need 0 < cold_start_min_ratio <= 1 <= cold_start_max_ratio")
        if self.demand_signal not in DEMAND_SIGNALS:
            raise ValueError(
                f"demand_signal must be one of {', '.join(DEMAND_SIGNALS)}, "
                f"got {self.demand_signal!r}"
            )


@dataclass
class _Pod:
    created_s: float
    ready_s: float
    active: bool = False
    serve_s: float = math.inf
    reported: bool = False


@dataclass
class SimResult:
    """Per-step records and per-run metrics of one simulated run."""

    name: str
    start_s: float
    step_s: float
    demand_rps: FloatArray
    capacity_rps: FloatArray
    backlog: FloatArray
    latency_s: FloatArray
    served: FloatArray
    desired: FloatArray
    starting: FloatArray
    warm: FloatArray
    active: FloatArray
    terminating: FloatArray
    slo_s: float
    actions: int
    reasons: dict[str, int] = field(default_factory=dict)
    capacity_per_replica_rps: float = 0.0

    @property
    def arrivals(self) -> float:
        """Requests that arrived."""
        return float(np.sum(self.demand_rps) * self.step_s)

    @property
    def slo_share(self) -> float:
        """Share of requests whose latency met the SLO."""
        w = self.demand_rps * self.step_s
        tot = float(w.sum())
        return 1.0 if tot == 0 else float(w[self.latency_s <= self.slo_s].sum() / tot)

    @property
    def p99_latency_s(self) -> float:
        """99th percentile latency, requests weighted."""
        return weighted_quantile(self.latency_s, self.demand_rps, 0.99)

    @property
    def gpu_hours(self) -> float:
        """GPU-hours of every pod that existed (starting, warm, active, terminating)."""
        pods = self.starting + self.warm + self.active + self.terminating
        return float(pods.sum() * self.step_s / 3600.0)

    @property
    def under_provisioned_min(self) -> float:
        """Minutes in which serving capacity was below demand."""
        return float(np.sum(self.capacity_rps < self.demand_rps - 1e-9) * self.step_s / 60.0)

    def summary(self, oracle_gpu_hours: float | None = None) -> dict[str, float | str]:
        """One table row."""
        row: dict[str, float | str] = {
            "policy": self.name,
            "slo_pct": 100.0 * self.slo_share,
            "p99_s": self.p99_latency_s,
            "gpu_hours": self.gpu_hours,
            "actions": float(self.actions),
            "under_min": self.under_provisioned_min,
        }
        if oracle_gpu_hours:
            row["x_oracle"] = self.gpu_hours / oracle_gpu_hours
        return row


def weighted_quantile(values: FloatArray, weights: FloatArray, q: float) -> float:
    """The ``q`` quantile of ``values`` weighted by ``weights`` (0 when all weights are 0)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        return 0.0
    order = np.argsort(values, kind="stable")
    cw = np.cumsum(w[order])
    i = int(np.searchsorted(cw, q * cw[-1]))
    return float(np.asarray(values)[order][min(i, len(order) - 1)])


def demand_rates(series: Series, step_s: float) -> Series:
    """The trace as req/s on the simulation grid: coarser traces are held piecewise
    constant, finer ones averaged; missing buckets are interpolated linearly.

    The simulation grid is aligned to multiples of ``step_s`` (as
    :meth:`~forecasting.series.Series.resample` aligns it), so the first and last simulation
    buckets may be only partly covered by the trace: their rate is the mean rate over the
    covered part (never a gap).

    Raises:
        ValueError: no observed value, or a coarser trace step that is not a whole multiple
            of ``step_s``.
    """
    rate = series.as_rate()
    vals = np.asarray(rate.values, dtype=np.float64)
    if np.isnan(vals).all():
        raise ValueError("the demand trace has no observed value")
    if np.isnan(vals).any():
        idx = np.arange(len(vals))
        ok = ~np.isnan(vals)
        vals = np.interp(idx, idx[ok], vals[ok])
    rate = rate.replace(values=vals)
    if math.isclose(rate.step_s, step_s):
        return rate
    if rate.step_s > step_s:
        k = rate.step_s / step_s
        if abs(k - round(k)) > 1e-9:
            raise ValueError(
                f"trace step {rate.step_s:g} s is not a multiple of the sim step {step_s:g} s"
            )
        return rate.replace(step_s=step_s, values=np.repeat(vals, round(k)))
    k_fine = step_s / rate.step_s
    # every edge bucket holds at least one observed fine bucket (the interior is complete
    # after the interpolation above), so a partly covered bucket averages what it has
    return rate.resample(step_s, min_coverage=min(1.0, 1.0 / math.floor(k_fine + 1e-9)))


def simulate(
    demand: Series,
    autoscaler: Autoscaler,
    config: SimConfig,
    *,
    name: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Replay ``demand`` (any kind; converted to req/s on the ``config.step_s`` grid)
    through a Deployment driven by ``autoscaler``.

    ``on_progress(steps_done, steps)``, when given, is called about every 1 % of the steps
    and once at the end (for a progress bar on long traces; it changes nothing simulated).
    """
    cfg = config
    dt = cfg.step_s
    rates_series = demand_rates(demand, dt)
    rates = np.asarray(rates_series.values, dtype=np.float64)
    start = rates_series.start_s
    n = len(rates)
    rng = np.random.default_rng(cfg.seed)
    cap = cfg.capacity_rps_per_replica

    init = cfg.initial_replicas
    if init is None:
        first = float(np.mean(rates[: max(1, int(60 / dt))]))
        init = max(1, math.ceil(first / (cap * 0.7)))
    pods: list[_Pod] = [
        _Pod(start - 1e6, start - 1e6, True, start - 1e6, True) for _ in range(init)
    ]
    terminating: list[float] = []  # end times
    desired_total, desired_active = init, init

    rec = {
        k: np.zeros(n)
        for k in (
            "cap",
            "backlog",
            "lat",
            "served",
            "desired",
            "starting",
            "warm",
            "active",
            "term",
            "util",
            "thr",
        )
    }
    backlog = 0.0
    own_lag = getattr(autoscaler, "observation_lag_s", None)
    if own_lag is None:  # Prometheus: only buckets complete at the last scrape
        lag_steps = max(0, math.ceil(cfg.scrape_interval_s / dt - 1e-9))
    else:  # a fresher source: the buckets nearest to that age (1 s at a 15 s step: all)
        lag_steps = max(0, round(float(own_lag) / dt))
    win_steps = max(1, round(cfg.rate_window_s / dt))
    counted = getattr(autoscaler, "demand_signal", None) or cfg.demand_signal
    if counted not in DEMAND_SIGNALS:
        raise ValueError(f"{autoscaler.name}: unknown demand_signal {counted!r}")
    # the series the demand rate() and the forecaster's history are read from: arrivals,
    # or what the pods served (filled in step by step, read only where already filled)
    seen = rates if counted == "arrivals" else rec["thr"]
    next_tick = start
    actions = 0
    reasons: dict[str, int] = {}
    pending_ready: list[float] = []
    every = max(1, n // 100)

    for k in range(n):
        if on_progress is not None and k % every == 0 and k > 0:
            on_progress(k, n)
        t = start + k * dt
        # pods that became ready in this step report their start duration once
        for p in pods:
            if not p.reported and p.ready_s <= t:
                p.reported = True
                pending_ready.append(p.ready_s - p.created_s)
        if t + 1e-9 >= next_tick:
            while next_tick <= t + 1e-9:
                next_tick += autoscaler.interval_s
            n_vis = max(0, k - lag_steps)
            obs_k = n_vis - 1
            if n_vis > 0:
                demand_obs: float | None = float(np.mean(seen[max(0, n_vis - win_steps) : n_vis]))
                queue_obs: float | None = float(rec["backlog"][obs_k])
                util_obs: float | None = float(rec["util"][obs_k])
                thr_obs: float | None = float(rec["thr"][obs_k])
                observed_at: float | None = start + n_vis * dt
            else:
                demand_obs = queue_obs = util_obs = thr_obs = observed_at = None
            n_ready = sum(1 for p in pods if p.ready_s <= t)
            n_act = sum(1 for p in pods if p.ready_s <= t and p.active)
            signals = Signals(
                now_s=t,
                demand_rps=demand_obs,
                queue_depth=queue_obs,
                gpu_util_ratio=util_obs,
                observed_at_s=observed_at,
                throughput_rps=thr_obs,
                pods=PodCounts(
                    active=n_act,
                    warm=n_ready - n_act,
                    starting=len(pods) - n_ready,
                    desired=desired_total,
                ),
                ready_durations_s=tuple(pending_ready),
            )
            pending_ready = []
            view = DemandView(start, dt, seen[:n_vis])
            decision = autoscaler.decide(signals, view)
            reasons[decision.reason.value] = reasons.get(decision.reason.value, 0) + 1
            if decision.total != desired_total:
                actions += 1
            desired_total, desired_active = decision.total, decision.active
            # scale the Deployment
            while len(pods) < desired_total:
                delay = cfg.cold_start_s * float(
                    np.clip(
                        rng.lognormal(0.0, cfg.cold_start_sigma),
                        cfg.cold_start_min_ratio,
                        cfg.cold_start_max_ratio,
                    )
                )
                pods.append(_Pod(t, t + delay))
            if len(pods) > desired_total:
                # remove starting pods first (newest first), then warm, then active
                pods.sort(key=lambda p: (p.ready_s <= t, p.active, -p.created_s))
                terminating.extend([t + cfg.termination_s] * (len(pods) - desired_total))
                pods = pods[len(pods) - desired_total :]
        # roles: keep desired_active pods active among the ready ones
        ready = [p for p in pods if p.ready_s <= t]
        act = [p for p in ready if p.active]
        if len(act) > desired_active:
            act.sort(key=lambda p: p.serve_s)
            for p in act[desired_active:]:
                p.active, p.serve_s = False, math.inf
        elif len(act) < desired_active:
            idle = sorted((p for p in ready if not p.active), key=lambda p: -p.ready_s)
            for p in idle[: desired_active - len(act)]:
                p.active = True
                # a pod that just became ready goes straight to active; a warm one is promoted
                p.serve_s = p.ready_s if p.ready_s > t - dt else t + cfg.warm_promotion_s
        terminating = [e for e in terminating if e > t]
        serving = sum(1 for p in ready if p.active and p.serve_s <= t)
        cap_rps = serving * cap
        arrivals = rates[k] * dt
        avail = backlog + arrivals
        served = min(avail, cap_rps * dt)
        backlog = avail - served
        wait = 0.0 if backlog <= 1e-09 else backlog / cap_rps if cap_rps > 0 else math.inf
        n_act_ready = sum(1 for p in ready if p.active)
        rec["cap"][k] = cap_rps
        rec["backlog"][k] = backlog
        rec["lat"][k] = cfg.base_latency_s + wait
        rec["served"][k] = served
        rec["desired"][k] = desired_total
        rec["starting"][k] = len(pods) - len(ready)
        rec["active"][k] = n_act_ready
        rec["warm"][k] = len(ready) - n_act_ready
        rec["term"][k] = len(terminating)
        rec["util"][k] = min(1.0, served / dt / cap_rps) if cap_rps > 0 else 0.0
        rec["thr"][k] = served / dt
    if on_progress is not None:
        on_progress(n, n)
    return SimResult(
        name=name or autoscaler.name,
        start_s=start,
        step_s=dt,
        demand_rps=rates,
        capacity_rps=rec["cap"],
        backlog=rec["backlog"],
        latency_s=rec["lat"],
        served=rec["served"],
        desired=rec["desired"],
        starting=rec["starting"],
        warm=rec["warm"],
        active=rec["active"],
        terminating=rec["term"],
        slo_s=cfg.slo_s,
        actions=actions,
        reasons=reasons,
        capacity_per_replica_rps=cap,
    )
