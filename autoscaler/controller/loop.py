"""The controller loop: one APScheduler job per target, refits on their own executor,
targets kept in step with the ``PredictiveAutoscaler`` resources by list + watch.

- Ticks run on the ``default`` executor (a small thread pool), one job per target at the
  target's ``interval`` with ``max_instances=1`` and ``coalesce=True``: a slow tick is never
  overlapped by the next one, and missed runs collapse into one.
- Refits run on the ``refit`` executor (its own thread), every ``forecast.refitEvery``, so a
  multi-second fit never delays a tick.
- A watch thread lists the resources, then watches from the list's ``resourceVersion``
  (re-listing on ``410 Gone`` and after errors, with backoff). An invalid spec gets an
  ``InvalidSpec`` condition in its status and no runner; it never crashes the loop.
- Only the leader writes (replicas, Events, status); standbys keep forecasting so a
  fail-over starts warm.

Nothing here decides: :class:`~autoscaler.controller.target.TargetRunner` runs the pure core.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from autoscaler.config import PredictiveAutoscalerSpec, validate_resource
from autoscaler.core.prediction_guard import GuardSettings
from autoscaler.errors import ConfigError
from autoscaler.ports import MetricsSource
from forecasting.series import parse_duration

from .status import GROUP, PLURAL, VERSION, ConditionSet, StatusWriter
from .target import PodReader, TargetRunner

__all__ = ["Controller", "TargetKey"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetKey:
    """A ``PredictiveAutoscaler`` by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> TargetKey:
        """``NAMESPACE/NAME`` (raises :class:`ConfigError` otherwise)."""
        ns, sep, name = text.partition("/")
        if not sep or not ns or not name or "/" in name:
            raise ConfigError(f"target must be NAMESPACE/NAME, got {text!r}")
        return cls(ns, name)



def _target_of(obj: Mapping[str, Any]) -> str | None:
    """The Deployment name a ``PredictiveAutoscaler`` object points at (unvalidated)."""
    ref = ((obj.get("spec") or {}).get("scaleTargetRef") or {})
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return str(name) if name else None


def _order(obj: Mapping[str, Any]) -> tuple[str, str]:
    """Which of two resources on one Deployment came first: (creationTimestamp, name)."""
    meta = obj.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")

class Controller:
    """Runs every target's ticks and refits; keeps the set of targets in step.

    Args:
        source_factory: ``(key, spec) -> MetricsSource`` (a ``PrometheusSource``).
        pods_factory: ``(namespace, deployment) -> PodReader`` (a ``KubernetesActuator``),
            or ``None`` to run without a cluster.
        api_client: a ``kubernetes.client.ApiClient`` for the watch and status writes;
            ``None`` runs only the targets given to :meth:`upsert` (no watch, no status).
        namespace: watch one namespace (``None``: all).
        can_write: leadership (``LeaderElector.is_leader``); default: always.
        metrics: ``ControllerMetrics`` (optional).
        clock: wall clock (Unix seconds) for the ticks' ``now``.
        tick_workers: threads running ticks.
        refit_workers: threads running refits (a slow fit delays only other targets'
            refits, never a tick; more workers let several targets refit at once).
        guard: prediction-guard settings for every target.
    """

    def __init__(
        self,
        source_factory: Callable[[TargetKey, PredictiveAutoscalerSpec], MetricsSource],
        pods_factory: Callable[[str, str], PodReader] | None,
        *,
        api_client: Any | None = None,
        namespace: str | None = None,
        can_write: Callable[[], bool] = lambda: True,
        metrics: Any | None = None,
        clock: Callable[[], float] = time.time,
        tick_workers: int = 4,
        refit_workers: int = 1,
        guard: GuardSettings | None = None,
        watch_timeout_s: int = 300,
        watch_read_timeout_s: float | None = None,
        refit_retry_s: float = 30.0,
    ) -> None:
        self.source_factory, self.pods_factory = source_factory, pods_factory
        self.api_client, self.namespace = api_client, namespace
        self.can_write, self.metrics, self.clock = can_write, metrics, clock
        self.guard = guard
        self.watch_timeout_s = watch_timeout_s
        #: first retry of a refit whose history fetch failed (doubling, capped at 5 min
        #: and at the target's refitEvery), instead of waiting a whole refit period
        self.refit_retry_s = refit_retry_s
        #: how often a leader checks for InvalidSpec conditions still to write
        self.invalid_status_every_s = 5.0
        #: client-side read timeout of the watch (and list) requests: a connection dropped
        #: without a FIN (NAT or load-balancer idle timeout) ends in a re-list, not a hang
        self.watch_read_timeout_s = (watch_read_timeout_s if watch_read_timeout_s is not None
                                     else watch_timeout_s + 30.0)
        #: no watch event and no completed list for this long: not ready (and, while the
        #: watch thread is stuck inside one request that long, not healthy)
        self.watch_stall_s = self.watch_timeout_s + self.watch_read_timeout_s + 60.0
        self._watch_progress_s = self.clock()
        self._watch_call_since: float | None = None
        self.status_writer = StatusWriter(api_client) if api_client is not None else None
        self.runners: dict[TargetKey, TargetRunner] = {}
        #: rejected resources: key -> (generation, why, uid); not re-validated until the
        #: generation or the uid changes
        self.invalid: dict[TargetKey, tuple[Any, str, str | None]] = {}
        #: the condition reason of each rejected resource (InvalidSpec, AmbiguousTarget)
        self._invalid_reason: dict[TargetKey, str] = {}
        #: the last object seen of every resource, its (creationTimestamp, name) order and
        #: the Deployment it targets: a resource refused for targeting a Deployment that an
        #: older one already scales is admitted once that one lets go
        self._objects: dict[TargetKey, Mapping[str, Any]] = {}
        #: rejected resources whose InvalidSpec condition is written (a standby writes
        #: nothing: the rest are written once it leads, by the ``invalid-status`` job)
        self._invalid_written: set[TargetKey] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(tick_workers),
                       "refit": ThreadPoolExecutor(refit_workers)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self.internal_errors = 0

    # ------------------------------------------------------------------ targets
    def upsert(self, key: TargetKey, spec: PredictiveAutoscalerSpec,
               generation: int | None = None, uid: str | None = None) -> TargetRunner:
        """Add or replace the runner of ``key`` and (re)schedule its jobs.

        A replaced runner is closed first (it never acts again) and, when it ran the same
        resource (same ``uid``), the new one continues its policy state: a spec edit, an
        ``Observe`` -> ``Auto`` switch or any other change keeps the scale-down
        stabilization window and the rate limits' scale events."""
        pods = (self.pods_factory(key.namespace, spec.scale_target_ref.name)
                if self.pods_factory is not None else None)
        write_status = None
        if self.status_writer is not None:
            writer = self.status_writer

            def write_status(st: dict[str, Any]) -> str | None:
                return writer.write(key.namespace, key.name, st)

        runner = TargetRunner(
            str(key), spec, self.source_factory(key, spec), pods,
            can_write=self.can_write, write_status=write_status, metrics=self.metrics,
            guard=self.guard, generation=generation, uid=uid,
        )
        runner.created_s = self.clock()
        with self._lock:
            old = self.runners.get(key)
        if old is not None:
            old.close()
            if uid is None or old.uid == uid:
                runner.carry_from(old)
            if spec.mode != "Auto" or (spec.scale_target_ref.name
                                       != old.spec.scale_target_ref.name):
                old.release_warm_pool(f"now mode {spec.mode}, Deployment "
                                      f"{spec.scale_target_ref.name}")
        with self._lock:
            self.runners[key] = runner
            self.invalid.pop(key, None)
            if self.metrics is not None:
                self.metrics.set_targets(len(self.runners))
                self.metrics.target_added(str(key))
        interval = runner.settings.interval_s
        now = datetime.now(tz=UTC)
        self.scheduler.add_job(
            self._tick_job, IntervalTrigger(seconds=interval, timezone=UTC), args=[key],
            id=f"tick:{key}", name=f"tick {key}", replace_existing=True,
            next_run_time=now + timedelta(seconds=0.5), misfire_grace_time=max(1, int(interval)),
        )
        self.scheduler.add_job(
            self._refit_job, IntervalTrigger(seconds=runner.refit_every_s, timezone=UTC),
            args=[key], id=f"refit:{key}", name=f"refit {key}", replace_existing=True,
            next_run_time=now, executor="refit",
            misfire_grace_time=max(1, int(runner.refit_every_s)),
        )
        log.info("target %s -> Deployment %s/%s every %g s (%s, %s)", key, key.namespace,
                 spec.scale_target_ref.name, interval, spec.mode, spec.forecast.model)
        return runner

    def remove(self, key: TargetKey, *, deleted: bool = True) -> None:
        """Stop scheduling ``key``, hand its warm pool back to the Service and drop its
        metrics (its resource was deleted, or with ``deleted=False`` is being rejected).
        A deleted resource frees its Deployment for one refused as ambiguous."""
        with self._lock:
            gone = self.runners.pop(key, None)
            self.invalid.pop(key, None)
            self._invalid_reason.pop(key, None)
            self._invalid_written.discard(key)
            obj = self._objects.pop(key, None) if deleted else None
        if gone is not None:
            gone.close()  # a tick in flight can no longer scale or report
        with self._lock:
            if self.metrics is not None:
                self.metrics.set_targets(len(self.runners))
                self.metrics.remove_target(str(key))
        for job in (f"tick:{key}", f"refit:{key}", f"refit-retry:{key}"):
            if self.scheduler.get_job(job) is not None:
                self.scheduler.remove_job(job)
        if gone is not None:
            log.info("target %s removed", key)
            gone.release_warm_pool("PredictiveAutoscaler deleted or invalid")
        if obj is not None:
            self._admit_waiting(key.namespace, _target_of(obj))

    def upsert_resource(self, obj: Mapping[str, Any]) -> None:
        """Add, replace or reject one ``PredictiveAutoscaler`` object (a dict)."""
        meta = obj.get("metadata") or {}
        key = TargetKey(str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        generation = meta.get("generation")
        uid = str(meta["uid"]) if meta.get("uid") else None
        with self._lock:
            cur = self.runners.get(key)
            bad = self.invalid.get(key)
        # the same object (uid) at the same generation: a status-only change (ours,
        # usually), nothing to re-validate. A resource deleted and re-created under the
        # same name while the watch was down has a new uid (and maybe generation 1 again).
        if generation is not None and (
            (cur is not None and (cur.generation, cur.uid) == (generation, uid))
            or (bad is not None and (bad[0], bad[2]) == (generation, uid))
        ):
            return
        with self._lock:
            before = self._objects.get(key)
            self._objects[key] = obj
        try:  # status is the controller's own output, never an input
            res = validate_resource({k: v for k, v in obj.items() if k != "status"})
        except ConfigError as exc:
            self._reject(key, str(exc), generation, uid)
            return
        dep = res.spec.scale_target_ref.name
        rival = self._rival(key, dep)
        if rival is not None:
            if _order(obj) > _order(self._objects[rival]):
                self._reject(key, f"Deployment {key.namespace}/{dep} is already scaled by the "
                             f"older PredictiveAutoscaler {rival.name}; this one waits until "
                             "that one is deleted or points elsewhere", generation, uid,
                             reason="AmbiguousTarget")
                return
            rmeta = self._objects[rival].get("metadata") or {}
            self._reject(rival, f"Deployment {key.namespace}/{dep} is also targeted by the "
                         f"older PredictiveAutoscaler {key.name}, which scales it; this one "
                         "waits until that one is deleted or points elsewhere",
                         rmeta.get("generation"),
                         str(rmeta["uid"]) if rmeta.get("uid") else None,
                         reason="AmbiguousTarget")
        try:
            self.upsert(key, res.spec, generation, uid)
        except (ConfigError, ValueError, KeyError) as exc:
            self._reject(key, str(exc), generation, uid)
            return
        if before is not None and _target_of(before) != dep:  # the old Deployment is free
            self._admit_waiting(key.namespace, _target_of(before))

    def _rival(self, key: TargetKey, deployment: str) -> TargetKey | None:
        """Another resource whose runner scales ``deployment`` in ``key``'s namespace."""
        with self._lock:
            for k, r in self.runners.items():
                if (k != key and k.namespace == key.namespace
                        and r.spec.scale_target_ref.name == deployment and k in self._objects):
                    return k
        return None

    def _admit_waiting(self, namespace: str, deployment: str | None) -> None:
        """Admit the oldest resource refused as ambiguous for ``deployment`` (now free)."""
        if deployment is None:
            return
        with self._lock:
            waiting = sorted(
                (_order(self._objects[k]), k) for k, why in self._invalid_reason.items()
                if why == "AmbiguousTarget" and k.namespace == namespace
                and k in self._objects and _target_of(self._objects[k]) == deployment)
            if not waiting:
                return
            key = waiting[0][1]
            obj = self._objects[key]
            self.invalid.pop(key, None)  # re-validated from scratch
            self._invalid_reason.pop(key, None)
        log.info("Deployment %s/%s is free: admitting %s", namespace, deployment, key)
        self.upsert_resource(obj)

    def _reject(self, key: TargetKey, message: str, generation: Any,
                uid: str | None = None, *, reason: str = "InvalidSpec") -> None:
        log.error("PredictiveAutoscaler %s is not run (%s): %s", key, reason, message)
        self.remove(key, deleted=False)
        with self._lock:
            self.invalid[key] = (generation, message, uid)
            self._invalid_reason[key] = reason
        if self.metrics is not None:
            self.metrics.count_error(str(key), reason)
        self._write_invalid(key)

    def _write_invalid(self, key: TargetKey) -> None:
        """Write the ``InvalidSpec`` (or ``AmbiguousTarget``) condition of ``key`` if this
        replica leads."""
        with self._lock:
            bad = self.invalid.get(key)
            why = self._invalid_reason.get(key, "InvalidSpec")
            self._invalid_written.discard(key)
        if bad is None or self.status_writer is None or not self.can_write():
            return
        generation, message, _ = bad
        conds = ConditionSet()
        conds.set("Ready", False, why, message, self.clock())
        status: dict[str, Any] = {"conditions": conds.to_wire()}
        if isinstance(generation, int):
            status["observedGeneration"] = generation
        if self.status_writer.write(key.namespace, key.name, status) is None:
            with self._lock:
                if self.invalid.get(key) == bad:
                    self._invalid_written.add(key)

    def _invalid_status_job(self) -> None:
        """Write the InvalidSpec conditions not written yet (rejected while a standby, or
        the write failed): leadership gained, or the API server back."""
        if not self.can_write():
            return
        with self._lock:
            pending = [k for k in self.invalid if k not in self._invalid_written]
        for key in pending:
            self._write_invalid(key)

    # ------------------------------------------------------------------ jobs
    def _tick_job(self, key: TargetKey) -> None:
        with self._lock:
            runner = self.runners.get(key)
        if runner is None:
            return
        try:
            runner.tick(self.clock())
        except Exception:  # a bug must not kill the job: count it, log it, go on
            self.internal_errors += 1
            log.exception("tick of %s failed", key)
            if self.metrics is not None:
                self.metrics.count_error(str(key), "Internal")

    def _refit_job(self, key: TargetKey) -> None:
        with self._lock:
            runner = self.runners.get(key)
        if runner is None:
            return
        try:
            runner.refit(self.clock())
        except Exception:
            self.internal_errors += 1
            log.exception("refit of %s failed", key)
            if self.metrics is not None:
                self.metrics.count_error(str(key), "Internal")
        n = runner.refit_failures
        if n > 0 and not self._stop.is_set() and not runner.closed:
            delay = min(self.refit_retry_s * 2 ** (n - 1), 300.0, runner.refit_every_s)
            log.info("%s: history fetch failed %d time(s); refit again in %g s", key, n, delay)
            with contextlib.suppress(SchedulerNotRunningError):
                self.scheduler.add_job(
                    self._refit_job, DateTrigger(datetime.now(tz=UTC)
                                                 + timedelta(seconds=delay), timezone=UTC),
                    args=[key], id=f"refit-retry:{key}", name=f"refit retry {key}",
                    replace_existing=True, executor="refit", misfire_grace_time=None)

    # ------------------------------------------------------------------ watch
    def _objects_api(self) -> Any:
        from kubernetes import client as k8s

        return k8s.CustomObjectsApi(self.api_client)

    def _list(self) -> tuple[list[dict[str, Any]], str]:
        api = self._objects_api()
        timeout = (10.0, self.watch_read_timeout_s)
        if self.namespace:
            res = api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                    _request_timeout=timeout)
        else:
            res = api.list_cluster_custom_object(GROUP, VERSION, PLURAL,
                                                 _request_timeout=timeout)
        return list(res.get("items") or []), str((res.get("metadata") or {}).get(
            "resourceVersion") or "")

    def sync_once(self) -> str:
        """List every resource, upsert them, drop runners whose resource is gone.

        Returns the list's ``resourceVersion`` (to watch from).
        """
        items, rv = self._list()
        seen = set()
        for obj in items:
            meta = obj.get("metadata") or {}
            seen.add(TargetKey(str(meta.get("namespace") or "default"), str(meta.get("name"))))
            self.upsert_resource(obj)
        with self._lock:
            gone = [k for k in (*self.runners, *self.invalid) if k not in seen]
        for k in gone:
            self.remove(k)
        self._watch_progress_s = self.clock()
        self._synced.set()
        return rv

    def _watch_loop(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import ReadTimeoutError

        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._watch_call_since = self.clock()
                rv = self.sync_once()
                backoff = 1.0
                w: Any = watch.Watch()  # type: ignore[no-untyped-call]
                api = self._objects_api()
                args: tuple[str, ...]
                if self.namespace:
                    fn, args = api.list_namespaced_custom_object, (GROUP, VERSION,
                                                                   self.namespace, PLURAL)
                else:
                    fn, args = api.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
                self._watch_call_since = self.clock()
                for ev in w.stream(fn, *args, resource_version=rv,
                                   timeout_seconds=self.watch_timeout_s,
                                   _request_timeout=(10.0, self.watch_read_timeout_s)):
                    self._watch_progress_s = self._watch_call_since = self.clock()
                    if self._stop.is_set():
                        w.stop()
                        break
                    obj = ev.get("object") or {}
                    meta = obj.get("metadata") or {}
                    if ev.get("type") == "DELETED":
                        self.remove(TargetKey(str(meta.get("namespace") or "default"),
                                              str(meta.get("name"))))
                    elif ev.get("type") in ("ADDED", "MODIFIED"):
                        self.upsert_resource(obj)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch expired (410 Gone); re-listing")
                    continue
                log.warning("watch of %s failed (%s): %s; retrying in %.0f s", PLURAL,
                            exc.status, exc.reason, backoff)
                self._watch_call_since = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            except Exception as exc:
                if _timed_out(exc, ReadTimeoutError):
                    log.info("watch of %s silent for %g s (connection dropped?); re-listing",
                             PLURAL, self.watch_read_timeout_s)
                    continue
                log.warning("watch of %s failed: %s; retrying in %.0f s", PLURAL, exc, backoff)
                self._watch_call_since = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            finally:
                self._watch_call_since = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, watch: bool = True) -> None:
        """Start the scheduler and (with an API client) the watch thread."""
        self.scheduler.start()
        if self.status_writer is not None:
            self.scheduler.add_job(self._invalid_status_job,
                                   IntervalTrigger(seconds=self.invalid_status_every_s,
                                                   timezone=UTC),
                                   id="invalid-status", name="InvalidSpec conditions",
                                   replace_existing=True)
        if watch and self.api_client is not None:
            self._watch_thread = threading.Thread(target=self._watch_loop, name="pa-watch",
                                                  daemon=True)
            self._watch_thread.start()
        else:
            self._synced.set()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop scheduling (waits for running ticks: the SIGTERM path) and watching.

        The watch thread is a daemon blocked in a streaming read; it is given
        ``timeout_s`` to notice and otherwise ends with the process or its stream."""
        self._stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self._watch_thread is not None:
            self._watch_thread.join(timeout_s)

    def ready(self) -> tuple[bool, str]:
        """``/readyz``: scheduler running and the resources listed at least once."""
        if not self.scheduler.running:
            return False, "scheduler not running"
        if not self._synced.is_set():
            return False, "PredictiveAutoscalers not listed yet"
        if self._watch_thread is not None:
            quiet_s = self.clock() - self._watch_progress_s
            if quiet_s > self.watch_stall_s:
                return False, (f"no watch event or list of {PLURAL} for {quiet_s:.0f} s "
                               f"(> {self.watch_stall_s:.0f} s)")
        return True, f"{len(self.runners)} target(s)"

    def healthy(self) -> tuple[bool, str]:
        """``/healthz``: the scheduler and the watch thread are alive."""
        if self._stop.is_set():
            return True, "stopping"
        if not self.scheduler.running:
            return False, "scheduler not running"
        if self._watch_thread is not None and not self._watch_thread.is_alive():
            return False, "watch thread died"
        now = self.clock()
        since = self._watch_call_since
        if (self._watch_thread is not None and since is not None
                and now - max(since, self._watch_progress_s) > self.watch_stall_s):
            return False, (f"watch of {PLURAL} stuck in one request for "
                           f"{now - since:.0f} s (read timeout {self.watch_read_timeout_s:g} s)")
        with self._lock:
            runners = list(self.runners.values())
        for r in runners:  # a tick stuck for 10 intervals (and a minute) is a wedged loop
            last = r.last.now_s if r.last is not None else r.created_s
            if now - last > max(60.0, 10 * r.settings.interval_s):
                return False, f"no tick of {r.key} for {now - last:.0f} s"
        return True, "ok"

    def wait_synced(self, timeout_s: float) -> bool:
        """Block until the first list completed (tests, ``--once``)."""
        return self._synced.wait(timeout_s)


def _timed_out(exc: BaseException, read_timeout: type[BaseException]) -> bool:
    """Whether ``exc`` (or what it wraps) is a socket read timeout."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, (read_timeout, TimeoutError)):
            return True
        args = [a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)]
        seen = seen.__cause__ or seen.__context__ or (args[0] if args else None)
    return False


def spec_interval_s(spec: PredictiveAutoscalerSpec) -> float:
    """The target's tick interval, seconds."""
    return parse_duration(spec.interval)
