"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

Only the leader writes to the cluster; standbys compute and wait. The algorithm is
client-go's ``leaderelection.tryAcquireOrRenew`` with KEDA's defaults (15 s lease, 10 s renew
deadline, 2 s retry period):

- **acquire** when the Lease does not exist (create; a 409 on create means another replica
  won the race), when it has no holder (released), or when it has *expired*;
- **expired** is judged by the local clock only: the elector remembers when it last saw the
  record change (holder, duration, times, transitions) and treats the lease as expired when
  the record has not changed for ``leaseDurationSeconds`` of *its own* clock. The remote
  ``renewTime`` is never compared with the local clock, so clock skew between replicas does
  not matter (only clock *rates* do);
- **renew** by replacing the Lease with the ``resourceVersion`` that was read (optimistic
  concurrency): a 409 means someone else wrote in between, and the elector is not leader
  for this round;
- **leadership** (:attr:`LeaderElector.is_leader`) holds only while the last successful renew
  is younger than ``renew_deadline_s``. Since a standby waits the full ``lease_duration_s``
  without seeing a change, a partitioned leader stops acting
  ``lease_duration_s - renew_deadline_s`` (5 s by default) before anyone else can start;
- **release** (on a clean stop) writes an empty holder and ``leaseDurationSeconds: 1``, like
  client-go's ``ReleaseOnCancel``, so a standby takes over on its next retry.

API errors (403/404/409/429/5xx, unreachable server) never raise from :meth:`step`: they are
logged, counted in :attr:`LeaderElector.errors` and leadership lapses by the renew deadline.

``renewTime``/``acquireTime`` are always written with six fractional digits
(``2026-11-29T03:00:00.000000+00:00``, see :class:`MicroTime`): the API server parses
MicroTime with Go's ``RFC3339Micro`` layout, which refuses the whole-second form that
``datetime.isoformat()`` produces when the microseconds happen to be zero.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from autoscaler.errors import ConfigError

__all__ = ["LeaderElector", "MicroTime", "default_identity"]

log = logging.getLogger(__name__)

#: client-go's JitterFactor: a standby waits retry_period * (1 + U[0, 0.2)) between tries.
JITTER = 0.2

_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            409: "Conflict", 422: "Invalid", 429: "TooManyRequests"}


def default_identity() -> str:
    """``$POD_NAME`` (or the host name) plus ``_`` and a short random suffix.

    The suffix keeps two processes on one host (or a restarted container) from ever
    sharing an identity, as controller-runtime does.
    """
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


class MicroTime(datetime):
    """A UTC ``datetime`` whose ``isoformat()`` always carries six fractional digits.

    The client serialises datetimes with ``isoformat()``, which drops the fraction when the
    microseconds are zero; the API server parses MicroTime with Go's ``RFC3339Micro`` layout
    and refuses that form.
    """

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return super().isoformat(sep, "microseconds" if timespec == "auto" else timespec)


def _micro(t: float | datetime) -> MicroTime:
    """``t`` (epoch seconds or a datetime; naive means UTC) as a UTC :class:`MicroTime`."""
    dt = t if isinstance(t, datetime) else datetime.fromtimestamp(t, tz=UTC)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return MicroTime(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second,
                     dt.microsecond, tzinfo=UTC)


@dataclass(frozen=True)
class _Record:
    """The leader-election record held in a Lease's spec (what client-go compares)."""

    holder: str
    duration_s: int
    acquire_time: Any
    renew_time: Any
    transitions: int

    @classmethod
    def of(cls, lease: Any) -> _Record:
        spec = lease.spec
        if spec is None:
            return cls("", 0, None, None, 0)
        return cls(spec.holder_identity or "", int(spec.lease_duration_seconds or 0),
                   spec.acquire_time, spec.renew_time, int(spec.lease_transitions or 0))


class LeaderElector:
    """Acquire and renew a Lease so that exactly one controller replica writes.

    Args:
        api_client: an official ``kubernetes.client.ApiClient``.
        namespace: where the Lease lives (usually the controller's own namespace).
        name: the Lease's name.
        identity: this replica's holder identity; default :func:`default_identity`.
        lease_duration_s: how long a standby waits, without seeing the record change, before
            it takes over (written as ``leaseDurationSeconds``, rounded up to whole seconds).
        renew_deadline_s: how long the leader keeps acting without a successful renew.
        retry_period_s: the wait between two attempts in :meth:`run`.
        clock: seconds since the epoch; tests pass a fake one.
        on_change: called with the new leadership on every transition (gained or lost),
            from the thread that runs :meth:`step`; it must not block for long.
        request_timeout_s: HTTP timeout of one Lease request (default half the renew
            deadline, so a hung request cannot outlive the deadline by itself).

    Raises:
        ConfigError: ``lease_duration_s > renew_deadline_s > 1.2 * retry_period_s > 0`` does
            not hold, or ``name``/``namespace``/``identity`` is empty.
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str = "surgecast-controller",
        identity: str | None = None,
        *,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[bool], None] | None = None,
        request_timeout_s: float | None = None,
    ) -> None:
        if not namespace or not name:
            raise ConfigError("leader election: the Lease namespace and name must be non-empty")
        if identity is not None and not identity:
            raise ConfigError("leader election: identity must be non-empty")
        if not retry_period_s > 0:
            raise ConfigError(f"leader election: retry_period_s must be > 0, "
                              f"got {retry_period_s!r}")
        if not renew_deadline_s > (1.0 + JITTER) * retry_period_s:
            raise ConfigError(
                f"leader election: renew_deadline_s ({renew_deadline_s}) must be greater than "
                f"{1.0 + JITTER} x retry_period_s ({retry_period_s})")
        if not lease_duration_s > renew_deadline_s:
            raise ConfigError(
                f"leader election: lease_duration_s ({lease_duration_s}) must be greater than "
                f"renew_deadline_s ({renew_deadline_s})")
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration_s = float(lease_duration_s)
        self.renew_deadline_s = float(renew_deadline_s)
        self.retry_period_s = float(retry_period_s)
        self.request_timeout_s = (float(request_timeout_s) if request_timeout_s is not None
                                  else max(0.5, self.renew_deadline_s / 2.0))
        #: API errors so far, by reason (``Conflict``, ``Forbidden``, ``TooManyRequests``,
        #: ``ServerError``, ``Unreachable``, ...).
        self.errors: Counter[str] = Counter()
        #: The message of the most recent error, ``None`` after a successful renew.
        self.last_error: str | None = None
        self._api = k8s.CoordinationV1Api(api_client)
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._observed: Any = None  # the last V1Lease read or written
        self._observed_record: _Record | None = None
        self._observed_at: float | None = None  # local time the record was last seen changing
        self._renewed_at: float | None = None  # local time of our last successful write
        self._reported = False  # leadership as last told to on_change
        self._stop = threading.Event()
        self._release_on_stop = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public API
    @property
    def is_leader(self) -> bool:
        """True while our last successful renew is younger than ``renew_deadline_s``."""
        renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self.renew_deadline_s

    @property
    def holder(self) -> str | None:
        """The holder identity last observed on the Lease (``None``: none seen or released)."""
        rec = self._observed_record
        return rec.holder or None if rec is not None else None

    @property
    def lease_duration_seconds(self) -> int:
        """``leaseDurationSeconds`` as written to the Lease (whole seconds, at least 1)."""
        return max(1, math.ceil(self.lease_duration_s))

    def step(self) -> bool:
        """One acquire-or-renew attempt; returns :attr:`is_leader` afterwards. Never raises
        for API errors."""
        with self._lock:
            self._try_acquire_or_renew()
            changed = self._transition()
        if changed is not None:
            self._notify(changed)
        return self.is_leader

    def release(self) -> None:
        """Give the Lease up at once if we hold it (empty holder, ``leaseDurationSeconds: 1``).

        The write carries the ``resourceVersion`` last seen, so it can never clobber a
        newer holder. Leadership ends here whether or not the write succeeds.
        """
        with self._lock:
            lease, rec = self._observed, self._observed_record
            if lease is not None and rec is not None and rec.holder == self.identity:
                now = self._clock()
                spec = copy.copy(lease.spec)
                spec.holder_identity = None
                spec.lease_duration_seconds = 1
                spec.acquire_time = _micro(now)
                spec.renew_time = _micro(now)
                spec.lease_transitions = rec.transitions
                body = k8s.V1Lease(metadata=lease.metadata, spec=spec)
                try:
                    out = self._api.replace_namespaced_lease(
                        self.name, self.namespace, body, _request_timeout=self.request_timeout_s)
                except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                    self._fail("release", exc)
                    self._observed = None
                    self._observed_record = None
                else:
                    self._observed = out
                    self._observed_record = _Record.of(out)
                    self._observed_at = now
                    log.info("released lease %s/%s (identity %s)", self.namespace, self.name,
                             self.identity)
            self._renewed_at = None
            changed = self._transition()
        if changed is not None:
            self._notify(changed)

    def run(self, stop: threading.Event) -> None:
        """Call :meth:`step` every retry period until ``stop`` is set, then :meth:`release`.

        A standby's wait is jittered by up to 20 % (client-go's ``JitterFactor``) so that
        replicas started together do not contend in lock step.
        """
        while not stop.is_set():
            try:
                leader = self.step()
            except Exception:  # a bug must not silently end leader election
                log.exception("leader election step failed unexpectedly")
                self.errors["Unexpected"] += 1
                leader = self.is_leader
            wait = self.retry_period_s
            if not leader:
                wait *= 1.0 + random.uniform(0.0, JITTER)
            stop.wait(wait)
        if self._release_on_stop:
            self.release()

    def start(self) -> threading.Thread:
        """Run :meth:`run` in a daemon thread (idempotent: returns the running thread)."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._release_on_stop = True
        self._thread = threading.Thread(target=self.run, args=(self._stop,),
                                        name=f"leader-election-{self.name}", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, release: bool = True, timeout_s: float = 5.0) -> None:
        """Stop the thread started by :meth:`start` (releasing the Lease unless told not to).

        Without a running thread it only releases (when ``release``).
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            if release:
                self.release()
            return
        self._release_on_stop = release
        self._stop.set()
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("leader election thread did not stop within %.1f s", timeout_s)

    # ------------------------------------------------------------------ internals
    def _try_acquire_or_renew(self) -> None:
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                self._create()
            else:
                self._fail("get", exc)
            return
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            self._fail("get", exc)
            return
        now = self._clock()
        rec = _Record.of(lease)
        if rec != self._observed_record:
            self._observed_record, self._observed_at = rec, now
        self._observed = lease
        assert self._observed_at is not None
        ours = rec.holder == self.identity
        if not ours:
            self._renewed_at = None  # someone else holds it (or it was released)
            if rec.holder and now < self._observed_at + rec.duration_s:
                return  # held by another replica and not expired by our clock
        spec = copy.copy(lease.spec) if lease.spec is not None else k8s.V1LeaseSpec()
        if ours and spec.acquire_time is not None:
            spec.acquire_time = _micro(spec.acquire_time)
        else:
            spec.acquire_time = _micro(now)
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.lease_duration_seconds
        spec.renew_time = _micro(now)
        spec.lease_transitions = rec.transitions if ours else rec.transitions + 1
        try:
            out = self._api.replace_namespaced_lease(
                self.name, self.namespace, k8s.V1Lease(metadata=lease.metadata, spec=spec),
                _request_timeout=self.request_timeout_s)
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if isinstance(exc, ApiException) and exc.status == 409:
                self._renewed_at = None  # someone else wrote in between: not leader now
            self._fail("update", exc)
            return
        self._written(out, now, acquired=not ours)

    def _create(self) -> None:
        now = self._clock()
        lease = k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=k8s.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.lease_duration_seconds,
                acquire_time=_micro(now), renew_time=_micro(now), lease_transitions=0),
        )
        try:
            out = self._api.create_namespaced_lease(
                self.namespace, lease, _request_timeout=self.request_timeout_s)
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            self._renewed_at = None
            self._fail("create", exc)
            return
        self._written(out, now, acquired=True)

    def _written(self, lease: Any, now: float, *, acquired: bool) -> None:
        self._observed = lease
        self._observed_record = _Record.of(lease)
        self._observed_at = now
        self._renewed_at = now
        self.last_error = None
        if acquired:
            log.info("acquired lease %s/%s as %s (transitions: %d)", self.namespace, self.name,
                     self.identity, self._observed_record.transitions)

    def _fail(self, verb: str, exc: BaseException) -> None:
        if isinstance(exc, ApiException):
            status = int(exc.status or 0)
            reason = _REASONS.get(status, "ServerError" if status >= 500 else f"HTTP{status}")
            detail = f"{status} {exc.reason}"
        else:
            reason, detail = "Unreachable", f"{type(exc).__name__}: {exc}"
        self.errors[reason] += 1
        msg = f"{verb} lease {self.namespace}/{self.name}: {detail}"
        if reason == "Forbidden":
            msg += (f" (RBAC: the controller needs get, create and update on "
                    f"leases.coordination.k8s.io in namespace {self.namespace!r})")
        self.last_error = msg
        if reason == "Conflict":
            log.info("leader election: %s (another replica wrote first)", msg)
        else:
            log.warning("leader election: %s", msg)

    def _transition(self) -> bool | None:
        """The new leadership if it differs from what ``on_change`` was last told."""
        now_leader = self.is_leader
        if now_leader == self._reported:
            return None
        self._reported = now_leader
        if not now_leader:
            log.info("lost leadership of lease %s/%s (identity %s)", self.namespace, self.name,
                     self.identity)
        else:
            log.info("leading: lease %s/%s held by %s", self.namespace, self.name,
                     self.identity)
        return now_leader

    def _notify(self, leader: bool) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(leader)
        except Exception:  # a faulty callback must not stop leader election
            log.exception("leader election on_change(%s) callback failed", leader)
