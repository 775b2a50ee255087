"""The controller's own Prometheus metrics, on a private registry.

Every name starts with ``surgecast_controller_``, carries its unit as a suffix
(``_seconds``, ``_requests_per_second``, ``_ratio``, ``_replicas``) and counters end in
``_total``. Per-target series carry ``target="namespace/name"``; histograms are unlabelled
so that their cardinality does not grow with the number of targets.

Missing values are *absent*, never ``0``: a tick without a demand reading removes the
``demand_requests_per_second`` series of that target, and :meth:`ControllerMetrics.remove_target`
drops every series of a deleted target, so no stale series outlive a custom resource.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["PREFIX", "ControllerMetrics", "quantile_label"]

PREFIX = "surgecast_controller_"

#: Tick cost: the pure core takes ~0.1-1 ms per target, a Prometheus round trip ~1-100 ms.
TICK_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0, 30.0)
REFIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def quantile_label(q: float) -> str:
    """The ``quantile`` label value of a forecast level: ``0.5`` -> ``"0.5"``."""
    return f"{float(q):g}"


class ControllerMetrics:
    """The controller's metrics; thread-safe (the loop writes, the HTTP thread renders).

    Args:
        registry: where to register; default a fresh :class:`CollectorRegistry` (never the
            process-global one, so tests and several controllers never collide).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # a private registry changes only through this object, so its exposition can be
        # cached until the next write; a shared one may change behind our back
        self._cacheable = registry is None
        self.registry = registry if registry is not None else CollectorRegistry()
        r, p = self.registry, PREFIX
        self.decisions = Counter(p + "decisions_total",
                                 "Scaling decisions, by target and reason.",
                                 ["target", "reason"], registry=r)
        self.desired_replicas = Gauge(p + "desired_replicas",
                                      "Replicas (active + warm) the last decision asked for.",
                                      ["target"], registry=r)
        self.active_replicas = Gauge(p + "active_replicas",
                                     "Active (serving) replicas the last decision asked for.",
                                     ["target"], registry=r)
        self.warm_replicas = Gauge(p + "warm_replicas",
                                   "Warm (loaded, not serving) replicas the last decision "
                                   "asked for.", ["target"], registry=r)
        self.ready_replicas = Gauge(p + "ready_replicas",
                                    "Ready pods of the target observed at the last tick.",
                                    ["target"], registry=r)
        self.demand = Gauge(p + "demand_requests_per_second",
                            "Observed demand at the last tick (absent when missing).",
                            ["target"], registry=r)
        self.forecast = Gauge(p + "forecast_requests_per_second",
                              "Forecast demand over the lead time, by quantile level.",
                              ["target", "quantile"], registry=r)
        self.loop_duration = Histogram(p + "loop_duration_seconds",
                                       "Duration of one tick of one target, fetch included.",
                                       buckets=TICK_BUCKETS_S, registry=r)
        self.fetch_duration = Histogram(p + "fetch_duration_seconds",
                                        "Duration of the metrics fetch of one tick.",
                                        buckets=TICK_BUCKETS_S, registry=r)
        self.last_tick = Gauge(p + "last_tick_timestamp_seconds",
                               "Unix time of the last completed tick (before the first: when "
                               "the target was added).", ["target"], registry=r)
        self.capacity = Gauge(p + "capacity_requests_per_second",
                              "Per-replica capacity the decisions plan with: the configured "
                              "one, refined online from saturated throughput.",
                              ["target"], registry=r)
        self.configured_capacity = Gauge(p + "configured_capacity_requests_per_second",
                                         "Per-replica capacity as configured "
                                         "(spec.capacity.requestsPerSecondPerReplica).",
                                         ["target"], registry=r)
        self.forecast_mae = Gauge(p + "forecast_mae_requests_per_second",
                                  "Rolling mean absolute error of the forecast.",
                                  ["target"], registry=r)
        self.reactive_mae = Gauge(p + "reactive_mae_requests_per_second",
                                  "Rolling mean absolute error of the reactive rule "
                                  "(the forecast's yardstick).", ["target"], registry=r)
        self.coverage = Gauge(p + "forecast_coverage_ratio",
                              "Rolling share of observations at or below the scaling quantile.",
                              ["target"], registry=r)
        self.scaling_quantile = Gauge(p + "scaling_quantile",
                                      "The forecast quantile the policy sizes for "
                                      "(spec.forecast.quantile): coverage should be near it.",
                                      ["target"], registry=r)
        self.quantile_read = Gauge(p + "scaling_quantile_read",
                                   "The level the scaling quantile is read at: moved by the "
                                   "forecast's recent misses (spec.forecast.adaptiveQuantile), "
                                   "else scaling_quantile.", ["target"], registry=r)
        self.simpler_model = Gauge(p + "simpler_model",
                                   "1 while a simpler model stands in for the spec's, which "
                                   "failed to fit at the last refit.", ["target"], registry=r)
        self.prediction_enabled = Gauge(p + "prediction_enabled",
                                        "1 while the forecast drives scaling, 0 while it is "
                                        "switched off for being worse than the reactive rule.",
                                        ["target"], registry=r)
        self.fallback = Gauge(p + "fallback_active",
                              "1 while the target runs on its fallback (no usable forecast).",
                              ["target"], registry=r)
        self.applying = Gauge(p + "applying",
                              "1 while this replica applies the target's decisions (mode Auto, "
                              "leader), 0 while it only observes (mode Observe, or standby).",
                              ["target"], registry=r)
        self.errors = Counter(p + "errors_total", "Errors, by target and kind.",
                              ["target", "kind"], registry=r)
        self.refits = Counter(p + "refits_total", "Forecaster refits, by target and result.",
                              ["target", "result"], registry=r)
        self.refit_duration = Histogram(p + "refit_duration_seconds",
                                        "Duration of one forecaster refit.",
                                        buckets=REFIT_BUCKETS_S, registry=r)
        self.leader = Gauge(p + "leader", "1 while this replica holds the leader Lease.",
                            registry=r)
        self.targets = Gauge(p + "targets", "Targets (PredictiveAutoscalers) being managed.",
                             registry=r)
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._version = 0  # bumped by every write (under _lock)
        self._cached: tuple[int, bytes] | None = None
        # every labelled series written per target, so remove_target can drop them all
        self._series: dict[str, set[tuple[MetricWrapperBase, tuple[str, ...]]]] = {}

    # ------------------------------------------------------------------ writers
    def observe_tick(self, target: str, *, reason: str, desired: int, active: int, warm: int,
                     ready: int, demand_rps: float | None, forecast_rps: Mapping[float, float],
                     duration_s: float, fetch_s: float, now_s: float | None = None) -> None:
        """Record one tick of ``target`` (``"namespace/name"``).

        ``forecast_rps`` maps quantile levels to forecast demand; levels no longer present
        lose their series. ``demand_rps=None`` (missing data) removes the demand series.
        ``now_s`` stamps ``last_tick_timestamp_seconds`` (default: the wall clock).
        """
        with self._lock:
            self._inc(self.decisions, target, reason)
            self._set(self.desired_replicas, float(desired), target)
            self._set(self.active_replicas, float(active), target)
            self._set(self.warm_replicas, float(warm), target)
            self._set(self.ready_replicas, float(ready), target)
            self._set_or_remove(self.demand, demand_rps, target)
            keep = set()
            for q, v in forecast_rps.items():
                label = quantile_label(q)
                keep.add((target, label))
                self._set_or_remove(self.forecast, v, target, label)
            for metric, labels in list(self._series.get(target, ())):
                if metric is self.forecast and labels not in keep:
                    self._drop(target, metric, labels)
            self._set(self.last_tick, time.time() if now_s is None else now_s, target)
            self.loop_duration.observe(max(0.0, duration_s))
            self.fetch_duration.observe(max(0.0, fetch_s))
            self._version += 1

    def observe_forecast_quality(self, target: str, *, mae: float | None,
                                 reactive_mae: float | None, coverage: float | None,
                                 prediction_enabled: bool, quantile: float | None = None,
                                 simpler_model: bool = False,
                                 quantile_read: float | None = None) -> None:
        """Rolling forecast error and coverage of ``target``, the quantile the coverage
        should be near and the level it is read at, and whether a simpler model stands in;
        ``None`` removes a series."""
        with self._lock:
            self._set_or_remove(self.forecast_mae, mae, target)
            self._set_or_remove(self.reactive_mae, reactive_mae, target)
            self._set_or_remove(self.coverage, coverage, target)
            self._set_or_remove(self.scaling_quantile, quantile, target)
            self._set_or_remove(self.quantile_read,
                                quantile if quantile_read is None else quantile_read, target)
            self._set(self.simpler_model, 1.0 if simpler_model else 0.0, target)
            self._set(self.prediction_enabled, 1.0 if prediction_enabled else 0.0, target)
            self._version += 1

    def observe_capacity(self, target: str, *, rps: float, configured_rps: float) -> None:
        """The per-replica capacity ``target``'s policy plans with, and the configured one."""
        with self._lock:
            self._set_or_remove(self.capacity, rps, target)
            self._set_or_remove(self.configured_capacity, configured_rps, target)
            self._version += 1

    def set_fallback(self, target: str, active: bool) -> None:
        """Whether ``target`` runs on its fallback."""
        with self._lock:
            self._set(self.fallback, 1.0 if active else 0.0, target)
            self._version += 1

    def target_added(self, target: str, now_s: float | None = None) -> None:
        """Start ``target``'s ``last_tick_timestamp_seconds`` at the time it was added, so a
        target none of whose ticks ever completes shows as stalled too (not as absent)."""
        with self._lock:
            self._set(self.last_tick, time.time() if now_s is None else now_s, target)
            self._version += 1

    def set_applying(self, target: str, applying: bool) -> None:
        """Whether this replica applies ``target``'s decisions (``False``: it only observes)."""
        with self._lock:
            self._set(self.applying, 1.0 if applying else 0.0, target)
            self._version += 1

    def count_error(self, target: str, kind: str) -> None:
        """Count one error of ``kind`` (e.g. ``MetricsUnavailable``, ``ActuationConflict``)."""
        with self._lock:
            self._inc(self.errors, target, kind)
            self._version += 1

    def count_refit(self, target: str, *, ok: bool, duration_s: float) -> None:
        """Count one refit (``result="ok"`` or ``"failed"``) and observe its duration."""
        with self._lock:
            self._inc(self.refits, target, "ok" if ok else "failed")
            self.refit_duration.observe(max(0.0, duration_s))
            self._version += 1

    def set_leader(self, is_leader: bool) -> None:
        """1 while this replica leads."""
        with self._lock:
            self.leader.set(1.0 if is_leader else 0.0)
            self._version += 1

    def set_targets(self, n: int) -> None:
        """How many targets are managed."""
        with self._lock:
            self.targets.set(float(n))
            self._version += 1

    def remove_target(self, target: str) -> None:
        """Drop every series of ``target`` (after its custom resource was deleted)."""
        with self._lock:
            for metric, labels in list(self._series.get(target, ())):
                self._drop(target, metric, labels)
            self._series.pop(target, None)
            self._version += 1

    def render(self) -> tuple[bytes, str]:
        """The exposition: ``(body, content type)`` in Prometheus' text format.

        Rendering costs ~0.3 ms per target (``generate_latest`` is pure Python), so with a
        private registry the body is kept until the next write, and concurrent scrapes
        share one rendering (they queue on a lock instead of rendering side by side under
        the GIL). Every write invalidates it: a scrape never sees a value older than the
        writes that completed before it began rendering. Writers never wait for a render.
        """
        if not self._cacheable:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        with self._render_lock:
            version = self._version
            cached = self._cached
            if cached is not None and cached[0] == version:
                return cached[1], CONTENT_TYPE_LATEST
            # writers are not held up while we render: one that lands meanwhile bumps the
            # version, so the next scrape renders again
            body = generate_latest(self.registry)
            self._cached = (version, body)
            return body, CONTENT_TYPE_LATEST

    # ------------------------------------------------------------------ internals
    def _track(self, target: str, metric: MetricWrapperBase, labels: tuple[str, ...]) -> None:
        self._series.setdefault(target, set()).add((metric, labels))

    def _drop(self, target: str, metric: MetricWrapperBase, labels: tuple[str, ...]) -> None:
        with contextlib.suppress(KeyError):  # already gone
            metric.remove(*labels)
        self._series.get(target, set()).discard((metric, labels))

    def _inc(self, counter: Counter, target: str, *rest: str) -> None:
        labels = (target, *rest)
        counter.labels(*labels).inc()
        self._track(target, counter, labels)

    def _set(self, gauge: Gauge, value: float, target: str, *rest: str) -> None:
        labels = (target, *rest)
        gauge.labels(*labels).set(value)
        self._track(target, gauge, labels)

    def _set_or_remove(self, gauge: Gauge, value: float | None, target: str,
                       *rest: str) -> None:
        if value is None or not math.isfinite(value):
            self._drop(target, gauge, (target, *rest))
        else:
            self._set(gauge, float(value), target, *rest)
