"""One scaled target in the live controller: read, forecast, decide, (maybe) act, report.

:class:`TargetRunner` glues the pure core (:class:`~autoscaler.core.live_forecast.LiveForecaster`,
:class:`~autoscaler.core.policy.Policy`, :class:`~autoscaler.core.prediction_guard.PredictionGuard`)
to the adapters (a :class:`~autoscaler.ports.MetricsSource`, a pod reader/actuator, a status
writer). It decides nothing itself. Two entry points, run by the scheduler on their own
cadences and never on the same lock for long:

- :meth:`TargetRunner.tick` (every ``spec.interval``): signals, pod counts, the new complete
  history buckets (one small range query per forecast step), forecast from the installed
  model, guard, decision; then, only in ``Auto`` mode and only while ``can_write()`` (the
  leader), scale; then status and metrics.
- :meth:`TargetRunner.refit` (every ``spec.forecast.refitEvery``): the first time it fetches
  the whole history window (chunked range queries), then fits a fresh model on a snapshot
  *outside* the lock and installs it; ticks keep running on the old model meanwhile.

Failures never escape as exceptions: each is counted, shown in a condition, and the policy
falls back (hold on missing data; reactive-only without a forecast).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from autoscaler.config import (
    PredictiveAutoscalerSpec,
    forecaster_kwargs,
    source_kwargs,
    to_policy_settings,
)
from autoscaler.core.decision import Decision, Reason
from autoscaler.core.live_forecast import SIMPLER_MODELS, LiveForecaster, fit_model
from autoscaler.core.policy import Policy, PolicyState
from autoscaler.core.prediction_guard import GuardPlan, GuardSettings, PredictionGuard
from autoscaler.core.signals import PodCounts, Signals
from autoscaler.errors import (
    ActuationConflict,
    ActuationForbidden,
    ConfigError,
    MetricsUnavailable,
    TargetNotFound,
    UnsupportedSelector,
)
from autoscaler.ports import MetricsSource
from forecasting.errors import ForecastingError
from forecasting.forecast import Forecast
from forecasting.models import make
from forecasting.series import parse_duration

from .status import ConditionSet

__all__ = ["PodReader", "TargetRunner", "TickOutcome"]

log = logging.getLogger(__name__)


#: what the cluster can answer with, as the Ready condition's reason
_API_FAILURES = (TargetNotFound, ActuationForbidden, ActuationConflict)


def _condition_reason(exc: Exception) -> str:
    if isinstance(exc, UnsupportedSelector):
        return "InvalidSelector"
    if isinstance(exc, TargetNotFound):
        return "TargetNotFound"
    return "Forbidden" if isinstance(exc, ActuationForbidden) else "ApiConflict"


class PodReader(Protocol):
    """What the runner needs from the cluster (``KubernetesActuator`` implements it)."""

    def observe(self) -> tuple[PodCounts, list[Any]]:
        """Pod counts and new lead-time samples (objects with ``lead_s``)."""
        ...

    def apply(self, active: int, warm: int, *, reason: str = "", message: str = "",
              reuse_observation: bool = False) -> None:
        """Make the target hold ``active`` serving and ``warm`` standby pods (planning on
        the last :meth:`observe` when ``reuse_observation``)."""
        ...

    def event(self, reason: str, message: str, *, type_: str = "Normal") -> None:
        """Record an Event on the target."""
        ...

    def release(self, *, reason: str = "") -> list[str]:
        """Label every warm pod active (the controller stops writing for the target)."""
        ...


class _Metrics(Protocol):
    def observe_tick(self, target: str, *, reason: str, desired: int, active: int, warm: int,
                     ready: int, demand_rps: float | None, forecast_rps: Any,
                     duration_s: float, fetch_s: float) -> None: ...
    def observe_forecast_quality(self, target: str, *, mae: float | None,
                                 reactive_mae: float | None, coverage: float | None,
                                 prediction_enabled: bool, quantile: float | None = None,
                                 simpler_model: bool = False,
                                 quantile_read: float | None = None) -> None: ...
    def observe_capacity(self, target: str, *, rps: float, configured_rps: float) -> None: ...
    def set_fallback(self, target: str, active: bool) -> None: ...
    def set_applying(self, target: str, applying: bool) -> None: ...
    def count_error(self, target: str, kind: str) -> None: ...
    def count_refit(self, target: str, *, ok: bool, duration_s: float) -> None: ...


@dataclass
class TickOutcome:
    """What one tick saw and did."""

    now_s: float
    signals: Signals
    forecast: Forecast | None
    decision: Decision | None
    applied: bool = False
    prediction_used: bool = False
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    fetch_s: float = 0.0

    def forecast_peaks(self, quantiles: tuple[float, ...], lead_s: float,
                       interval_s: float) -> dict[float, float]:
        """Peak of each quantile over ``[now, now + lead + interval]`` (req/s)."""
        fc = self.forecast
        if fc is None:
            return {}
        t = fc.timestamps
        sel = (t + fc.step_s > self.now_s) & (t <= self.now_s + lead_s + interval_s)
        if not sel.any():
            sel[-1] = True
        return {q: float(fc.quantile(q)[sel].max()) for q in quantiles}


class TargetRunner:
    """The live loop body for one ``PredictiveAutoscaler``.

    Args:
        key: ``namespace/name`` of the resource (labels, logs).
        spec: the validated spec.
        source: demand and saturation (a ``PrometheusSource``).
        pods: the target's pods and the writer (``KubernetesActuator``); ``None`` runs
            with no cluster (pod counts unknown: the policy sees zero pods).
        can_write: whether this process may write now (leader election); writes happen
            only when it returns ``True`` **and** ``spec.mode == "Auto"``.
        write_status: ``(status dict) -> error or None``; ``None`` writes no status.
        metrics: controller metrics (``ControllerMetrics``), optional.
        guard: prediction-guard settings.
        clock: wall clock for durations only (decisions take ``now_s`` from the caller).
    """

    def __init__(
        self,
        key: str,
        spec: PredictiveAutoscalerSpec,
        source: MetricsSource,
        pods: PodReader | None,
        *,
        can_write: Callable[[], bool] = lambda: True,
        write_status: Callable[[dict[str, Any]], str | None] | None = None,
        metrics: _Metrics | None = None,
        guard: GuardSettings | None = None,
        generation: int | None = None,
        uid: str | None = None,
    ) -> None:
        self.key = key
        self.spec = spec
        self.generation = generation
        self.uid = uid
        self.settings = to_policy_settings(spec)
        self.policy = Policy(self.settings)
        self.state: PolicyState = self.policy.initial_state()
        fk = forecaster_kwargs(spec)
        self.step_s: float = fk["forecast_step_s"]
        self.refit_every_s: float = fk["refit_every_s"]
        self.history_s = parse_duration(spec.forecast.history)
        self.live = LiveForecaster(
            fk["model"], self.step_s, self.history_s,
            fine_step_s=self.settings.interval_s if fk["partial_bucket"] else None,
            scaling_quantile=self.settings.quantile, adaptive=fk["adaptive"],
        )
        self.source, self.pods = source, pods
        self.can_write, self.write_status, self.metrics = can_write, write_status, metrics
        self.guard = PredictionGuard(guard or GuardSettings())
        self.guard_plan = GuardPlan.of(self.settings)
        #: what the forecaster and the guard's record depend on: a new spec that keeps it
        #: keeps them (see :meth:`carry_from`)
        self.forecast_basis: tuple[object, ...] = (
            repr(fk), repr(source_kwargs(spec)), spec.forecast.history,
            self.settings.quantile, self.settings.warm_quantile, self.settings.interval_s,
            self.guard_plan, guard,
        )
        self.conditions = ConditionSet()
        self.quantiles = tuple(sorted({0.5, self.settings.quantile, self.settings.warm_quantile}))
        self._lock = threading.Lock()  # guards self.live
        self._history_failed = ""
        self.last: TickOutcome | None = None
        self.created_s = 0.0  # set by the loop (wall clock), for its liveness check
        self.ticks = 0
        self._prediction_on: bool | None = None
        self._prediction_reason = ""
        self._fallback_on = False
        #: the model the installed forecaster is (the spec's, or a simpler one after the
        #: spec's failed to fit: then ``model_fallback`` says why)
        self.model_in_use = spec.forecast.model
        self.model_fallback = ""
        #: status is written when its significant part changes, else at most this often
        self.status_every_s = 60.0
        self._status_sig: object = None
        self._status_at_s = -math.inf
        #: held while acting and reporting; :meth:`close` takes it, so once it returns the
        #: runner never scales, records an Event, writes status or touches a metric again
        self._fence = threading.RLock()
        self.closed = False
        #: whether the stabilization window holds a recommendation (seeded at the 1st tick)
        self._seeded = False
        #: an Event with the same reason is not recorded again within this many seconds
        #: (the Kubernetes event recorder's aggregation, kept simple)
        self.event_repeat_s = 600.0
        self._events_at: dict[str, float] = {}
        #: failed refits in a row (history fetch failed); the loop retries with backoff
        self.refit_failures = 0

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Fence this runner off (its resource was deleted or its spec replaced): waits for
        an act/report in flight, after which nothing it does reaches the cluster or the
        metrics (a refit or tick still running finishes unseen)."""
        with self._fence:
            self.closed = True

    def release_warm_pool(self, why: str) -> list[str]:
        """Hand the warm pool back to the Service (every warm pod labelled active) when this
        runner wrote the target's pods and the controller stops doing so: its resource was
        deleted or became invalid, or its spec moved to Observe or to another Deployment.
        Pods the controller made warm would otherwise stay out of the Service for good (new
        pods start active). Runs even on a closed runner; an API failure is logged and
        counted, never raised. Returns the pods released."""
        if not self._writes():
            return []
        assert self.pods is not None
        try:
            return self.pods.release(reason=why)
        except _API_FAILURES as exc:
            log.warning("%s: could not release the warm pool (%s): %s", self.key, why, exc)
            if self.metrics is not None:
                self.metrics.count_error(self.key, _condition_reason(exc))
            return []

    def carry_from(self, old: TargetRunner) -> None:
        """Continue where ``old`` (the same resource under its previous spec, closed)
        left off: the policy's stabilization history, scale events and failure count, its
        capacity and lead estimates where the spec still means the same, the conditions
        (honest transition times) and which transitions were already announced by Events;
        and, when the new spec's forecast settings, signal queries and plan shape are the
        old ones (:attr:`forecast_basis`), the fitted forecaster and the prediction
        guard's record."""
        with old._fence:
            self.state = self.policy.carry(old.state, old.settings)
            self._seeded = old._seeded
            self.conditions = old.conditions
            self._prediction_on, self._fallback_on = old._prediction_on, old._fallback_on
            self._prediction_reason = old._prediction_reason
            self._events_at = dict(old._events_at)
            if self.forecast_basis == old.forecast_basis:
                # an edit the forecast does not depend on (bounds, behavior, mode, ...):
                # keep the fitted forecaster, its history and adapted quantile, and the
                # guard's record, instead of a fresh fit and an empty record. The lock
                # goes with the forecaster: a refit of ``old`` still running holds it.
                self._lock, self.live = old._lock, old.live
                self.guard = old.guard
                self.model_in_use, self.model_fallback = old.model_in_use, old.model_fallback
                self._history_failed = old._history_failed

    # ------------------------------------------------------------------ history + refit
    def _fetch_history(self, now_s: float, *, full: bool) -> None:
        """Append the complete buckets up to the grid point at or before ``now_s``."""
        end = math.floor(now_s / self.step_s) * self.step_s
        with self._lock:
            have = self.live.history_end_s
        if have is None:
            if not full:
                return  # the first (large) fetch belongs to the refit job
            start = end - self.history_s
        else:
            start = max(have, end - self.history_s)
        if end - start < self.step_s:
            return
        series = self.source.history(start, end, self.step_s)
        with self._lock:
            self.live.extend(series)

    def _seed_readings(self, now_s: float) -> None:
        """After a restart the forecaster holds few demand readings, and the bucket in
        progress is conditioned only once it has 12 buckets of them: fill the gaps from
        one range query at the tick step (the same query as the history). A failure only
        delays the conditioning."""
        with self._lock:
            sparse = self.live.readings_sparse
            span = self.live.readings_buckets * self.step_s
        if not sparse:
            return
        step = self.settings.interval_s
        try:
            fine = self.source.history(now_s - span, now_s, step)
        except (MetricsUnavailable, ConfigError) as exc:
            log.info("%s: demand readings not seeded: %s", self.key, exc)
            return
        with self._lock:
            n = self.live.seed(fine)
        log.info("%s: seeded %d demand readings at %g s", self.key, n, step)

    def refit(self, now_s: float) -> bool:
        """Fetch what is missing of the history, fit a fresh model off the lock, install it.

        Returns whether a model was installed. Never raises for data or model problems.
        """
        t0 = time.perf_counter()
        try:
            self._fetch_history(now_s, full=True)
        except (MetricsUnavailable, ConfigError) as exc:
            self._history_failed = str(exc)
            self.refit_failures += 1
            self._count("MetricsUnavailable" if isinstance(exc, MetricsUnavailable)
                        else "ConfigError")
            log.warning("%s: history fetch failed: %s", self.key, exc)
            return False
        self._history_failed = ""
        self.refit_failures = 0
        self._seed_readings(now_s)
        with self._lock:
            snap = self.live.snapshot()
            need = self.live.min_history()
        if snap is None or snap.n_observed < need:
            got = 0 if snap is None else snap.n_observed
            with self._lock:
                self.live.last_error = (f"not enough history: {got} of {need} buckets at "
                                        f"{self.step_s:g} s")
            return False
        failed = ""
        for name in (self.live.model, *(m for m in SIMPLER_MODELS if m != self.live.model)):
            if failed and snap.n_observed < make(name).min_history(self.step_s):
                continue  # a simpler model that needs more history than there is
            try:
                model = fit_model(name, {}, snap)
            except (ForecastingError, ValueError, ArithmeticError) as exc:
                why = f"{name} failed: {type(exc).__name__}: {exc}"
                failed = f"{failed}; {why}" if failed else why
                self._count("ModelFailed")
                log.warning("%s: refit failed: %s", self.key, why)
                continue
            with self._lock:
                self.live.install(model, snap)
            # the configured model is tried again at the next refit
            self.model_in_use = name
            self.model_fallback = f"{failed}; forecasting with {name}" if failed else ""
            self._count_refit(ok=not failed, duration_s=time.perf_counter() - t0)
            log.info("%s: refit %s on %d buckets in %.2f s", self.key, name, len(snap),
                     time.perf_counter() - t0)
            return True
        with self._lock:
            self.live.drop(f"fit failed: {failed}")
        self.model_in_use, self.model_fallback = "", ""
        self._count_refit(ok=False, duration_s=time.perf_counter() - t0)
        return False

    def _count_refit(self, *, ok: bool, duration_s: float) -> None:
        with self._fence:
            if self.metrics is not None and not self.closed:
                self.metrics.count_refit(self.key, ok=ok, duration_s=duration_s)

    # ------------------------------------------------------------------ the tick
    def tick(self, now_s: float) -> TickOutcome:
        """One controller tick at ``now_s`` (see the module docstring)."""
        t0 = time.perf_counter()
        errors: list[str] = []
        # -- observe
        try:
            signals = self.source.signals(now_s)
        except MetricsUnavailable as exc:
            signals = Signals(now_s=now_s, errors={"prometheus": str(exc)})
            errors.append(f"MetricsUnavailable: {exc}")
            self._count("MetricsUnavailable")
        why = _demand_problem(signals)
        if why is not None and not errors:  # Prometheus answered, but not with a demand
            self._count(_metrics_reason(why))
        try:
            self._fetch_history(now_s, full=False)
        except (MetricsUnavailable, ConfigError) as exc:
            errors.append(f"history: {exc}")
        if self.pods is not None:
            try:
                counts, samples = self.pods.observe()
            except _API_FAILURES as exc:
                return self._failed(now_s, signals, _condition_reason(exc), exc, t0)
            signals = replace(signals, pods=counts,
                              ready_durations_s=tuple(float(s.lead_s) for s in samples))
        fetch_s = time.perf_counter() - t0
        # -- forecast and guard
        lead_s = self._lead_s()
        stale_s = signals.staleness_s()
        fresh = stale_s is None or stale_s <= self.settings.max_staleness_s
        with self._lock:
            # this tick's reading conditions the forecast's bucket in progress
            self.live.observe(now_s, signals.demand_rps if fresh else None)
            # the horizon also covers the policy's look-ahead for multi-tick climbs
            fc = self.live.predict(now_s, lead_s + self.settings.ramp_lookahead_s,
                                   self.settings.interval_s, self.quantiles)
            model_error = self.live.last_error
        self.guard, use = self.guard.step(now_s, fc, signals.demand_rps, lead_s,
                                          self.settings.quantile, self.guard_plan)
        # -- decide
        with self._fence:
            state = self.state
            if not self._seeded:  # a fresh start holds the current count (HPA-like)
                pods = signals.pods
                state = self.policy.seed(state, now_s,
                                         pods.desired if pods.desired > 0 else pods.total)
                self._seeded = True
        scale_events = state.hpa.events
        decision, state = self.policy.decide(signals, use, state)
        out = TickOutcome(now_s, signals, fc, decision, prediction_used=use is not None,
                          errors=errors, fetch_s=fetch_s)
        with self._fence:
            if self.closed:  # removed or replaced meanwhile: its successor decides
                return out
            # the HPA's rate limits count scale events that happened; an Observe-mode or
            # standby decision, or a write that failed, did not happen (the HPA records
            # events only when it rescales)
            self.state = replace(state, hpa=replace(state.hpa, events=scale_events))
            # -- act
            writer = self._writes()
            if writer and self._needs_apply(decision, signals.pods):
                assert self.pods is not None
                try:
                    self.pods.apply(decision.active, decision.warm,
                                    reason=decision.reason.value,
                                    message=decision.message, reuse_observation=True)
                    out.applied = True
                except _API_FAILURES as exc:
                    return self._failed(now_s, signals, _condition_reason(exc), exc, t0)
            if out.applied:
                self.state = state
            # -- report
            self._conditions(out, model_error, writer)
            out.duration_s = time.perf_counter() - t0
            self._report(out)
        return out

    @staticmethod
    def _needs_apply(d: Decision, pods: PodCounts) -> bool:
        return d.total != pods.desired or (d.active != pods.active and pods.ready > 0)

    def _failed(self, now_s: float, signals: Signals, reason: str, exc: Exception,
                t0: float) -> TickOutcome:
        self._count(type(exc).__name__)
        log.warning("%s: %s: %s", self.key, reason, exc)
        self.conditions.set("Ready", False, reason, str(exc), now_s)
        out = TickOutcome(now_s, signals, None, None, errors=[f"{reason}: {exc}"],
                          duration_s=time.perf_counter() - t0)
        self._report(out)
        return out

    def _conditions(self, out: TickOutcome, model_error: str, writer: bool) -> None:
        now, c = out.now_s, self.conditions
        d = out.decision
        assert d is not None
        # the fallback engages after failureThreshold bad ticks in a row (3 without a
        # fallback configured); a shorter gap is a plain hold, not worth a condition flip
        holding = d.reason in (Reason.FALLBACK, Reason.STALE_METRICS_HOLD)
        fb = self.settings.fallback
        threshold = fb.failure_threshold if fb is not None else 3
        fallback = d.reason == Reason.FALLBACK or (holding and self.state.failures >= threshold)
        why = _demand_problem(out.signals)
        if fallback and out.errors and out.signals.demand_rps is None:
            c.set("Ready", False, "MetricsUnavailable", "; ".join(out.errors), now)
        elif fallback and why is not None:  # Prometheus answers, but not with a usable demand
            c.set("Ready", False, _metrics_reason(why), f"demand: {why}", now)
        else:
            c.set("Ready", True, "Decided", f"{d.reason.value}: {d.message}", now)
        g = self.guard
        if out.prediction_used and self.model_fallback:
            on, reason, msg = True, "SimplerModel", f"{self.model_fallback}; {g.reason}"
        elif out.prediction_used:
            on, reason, msg = True, "Forecasting", f"{self.model_in_use}; {g.reason}"
        elif out.forecast is not None:
            on, reason, msg = False, "WorseThanReactive", g.reason
        elif self._history_failed:
            on, reason, msg = False, "MetricsUnavailable", self._history_failed
        elif model_error.startswith("not enough history"):
            on, reason, msg = False, "NotEnoughHistory", model_error
        elif model_error:
            on, reason, msg = False, "ModelFailed", model_error
        else:
            on, reason, msg = False, "Waiting", "waiting for the first fit"
        c.set("PredictionReady", on, reason, msg, now)
        if fallback:
            c.set("FallbackActive", True, d.reason.value, d.message, now)
        else:
            c.set("FallbackActive", False, "SignalsOk",
                  f"holding: demand missing or stale for {self.state.failures} of {threshold} "
                  "ticks" if holding else "demand observed and fresh", now)
        # visible transitions: events (leader only; the Event is a write)
        if writer and self.pods is not None:
            if reason == "SimplerModel" and self._prediction_reason != "SimplerModel":
                self._event(now, "ModelFallback", msg, type_="Warning")
            if self._prediction_on is not None and on != self._prediction_on:
                if on:
                    self._event(now, "PredictionRecovered", f"Prediction back on: {msg}")
                elif reason in ("WorseThanReactive", "ModelFailed"):
                    self._event(now, "PredictionFallback",
                                f"Prediction off, reactive only ({reason}): {msg}",
                                type_="Warning")
            if fallback and not self._fallback_on:
                self._event(now, "MetricsFallback", f"{d.reason.value}: {d.message}",
                            type_="Warning")
        if self._prediction_on is not None and on != self._prediction_on:
            log.warning("%s: prediction %s (%s: %s)", self.key, "on" if on else "off",
                        reason, msg)
        self._prediction_on, self._fallback_on = on, fallback
        self._prediction_reason = reason

    def _event(self, now_s: float, reason: str, message: str, *,
               type_: str = "Normal") -> None:
        """Record an Event unless one with the same reason was recorded within
        ``event_repeat_s`` (a flapping signal or model makes one Event, not one per flip)."""
        if now_s - self._events_at.get(reason, -math.inf) < self.event_repeat_s:
            log.info("%s: Event %s not repeated within %g s: %s", self.key, reason,
                     self.event_repeat_s, message)
            return
        assert self.pods is not None
        self.pods.event(reason, message, type_=type_)
        self._events_at[reason] = now_s

    def _report(self, out: TickOutcome) -> None:
        with self._fence:
            if not self.closed:
                self._report_unfenced(out)

    def _report_unfenced(self, out: TickOutcome) -> None:
        self.last = out
        self.ticks += 1
        if self.metrics is not None:
            d = out.decision
            if d is not None:
                self.metrics.observe_tick(
                    self.key, reason=d.reason.value, desired=d.total, active=d.active,
                    warm=d.warm, ready=out.signals.pods.ready,
                    demand_rps=out.signals.demand_rps,
                    forecast_rps=out.forecast_peaks(self.quantiles, self._lead_s(),
                                                    self.settings.interval_s),
                    duration_s=out.duration_s, fetch_s=out.fetch_s)
            cap = self.state.capacity
            if cap is not None:
                self.metrics.observe_capacity(self.key, rps=cap.rps,
                                              configured_rps=cap.configured_rps)
            g = self.guard
            self.metrics.observe_forecast_quality(
                self.key, mae=g.mae, reactive_mae=g.reactive_mae, coverage=g.coverage,
                prediction_enabled=out.prediction_used, quantile=self.settings.quantile,
                simpler_model=bool(self.model_fallback), quantile_read=self._quantile_read())
            self.metrics.set_fallback(self.key, self.conditions.status_of("FallbackActive")
                                      == "True")
            self.metrics.set_applying(self.key, self._writes())
        if self.write_status is not None and self.can_write():
            st = self.status()
            sig = _significant(st)
            due = out.now_s - self._status_at_s >= self.status_every_s
            if sig != self._status_sig or due:  # like the HPA: write on change (+ heartbeat)
                err = self.write_status(st)
                if err:
                    self._count("StatusWriteFailed")
                else:
                    self._status_sig, self._status_at_s = sig, out.now_s

    def _writes(self) -> bool:
        """Whether this replica applies the decisions: mode Auto, an actuator, leadership."""
        return self.spec.mode == "Auto" and self.pods is not None and self.can_write()

    def _lead_s(self) -> float:
        return self.state.lead.lead_s if self.state.lead else self.settings.cold_start_prior_s

    def _count(self, kind: str) -> None:
        with self._fence:
            if self.metrics is not None and not self.closed:
                self.metrics.count_error(self.key, kind)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """The resource's ``status`` (camelCase, JSON-ready)."""
        out = self.last
        st: dict[str, Any] = {"conditions": self.conditions.to_wire()}
        if self.generation is not None:
            st["observedGeneration"] = self.generation
        if out is not None and out.decision is not None:
            d = out.decision
            peaks = out.forecast_peaks(self.quantiles, self._lead_s(), self.settings.interval_s)
            st.update(
                desiredReplicas=d.total, activeReplicas=d.active, warmReplicas=d.warm,
                lastDecision={
                    "time": _iso(out.now_s), "reason": d.reason.value, "message": d.message,
                    "demandRps": _num(out.signals.demand_rps),
                    "throughputRps": _num(out.signals.throughput_rps),
                    "forecastRps": {f"p{round(q * 100)}": _num(v) for q, v in peaks.items()},
                    "predictionUsed": out.prediction_used,
                    "leadSeconds": round(self._lead_s(), 1),
                    "applied": out.applied,
                },
            )
        cap = self.state.capacity
        if cap is not None:
            # the per-replica capacity the decisions plan with: the configured one, refined
            # from the throughput per active pod on ticks whose pods were saturated
            st["capacity"] = {"configuredRpsPerReplica": _num(cap.configured_rps),
                              "rpsPerReplica": _num(cap.rps), "samples": cap.samples}
        g = self.guard
        st["forecastQuality"] = {"scored": g.n, "mae": _num(g.mae),
                                 "reactiveMae": _num(g.reactive_mae),
                                 "planLoss": _num(g.plan_loss),
                                 "reactivePlanLoss": _num(g.reactive_plan_loss),
                                 "coverage": _num(g.coverage), "predictionEnabled": g.enabled,
                                 "quantileRead": self._quantile_read()}
        return st

    def _quantile_read(self) -> float:
        """The level the scaling quantile is read at now (spec.forecast.adaptiveQuantile)."""
        with self._lock:
            lv = self.live.level
            return self.settings.quantile if lv is None else lv.level


def _demand_problem(signals: Signals) -> str | None:
    """Why the demand reading is missing or stale (the source's words), else ``None``."""
    stale_or_missing = signals.errors.get("demand_rps")
    if signals.demand_rps is None:
        return stale_or_missing or signals.errors.get("prometheus") or "demand missing"
    return stale_or_missing if stale_or_missing and stale_or_missing.startswith("stale") \
        else None


def _metrics_reason(why: str) -> str:
    """The condition reason and ``errors_total`` kind of a demand problem:
    ``MetricsInvalid`` (the query is wrong: refused as bad data, +Inf/NaN, several
    series), ``MetricsStale``, else ``MetricsUnavailable`` (no series, Prometheus down)."""
    if why.startswith("stale"):
        return "MetricsStale"
    if why.startswith(("value is", "returned")) or "Code 400" in why or "bad_data" in why:
        return "MetricsInvalid"
    return "MetricsUnavailable"


def _significant(st: dict[str, Any]) -> object:
    """The part of a status worth an API write: replicas, conditions (without their
    messages), prediction switch and generation. The decision's reason alone is not (a
    signal missing every other tick flips it between a hold and a decision each tick):
    it reaches the status with the next significant change or the heartbeat."""
    ld = st.get("lastDecision") or {}
    return (
        st.get("observedGeneration"), st.get("desiredReplicas"), st.get("activeReplicas"),
        st.get("warmReplicas"), ld.get("predictionUsed"),
        tuple((c["type"], c["status"], c["reason"]) for c in st.get("conditions", [])),
        (st.get("forecastQuality") or {}).get("predictionEnabled"),
    )


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def _iso(t: float) -> str:
    from .status import rfc3339

    return rfc3339(t)
