"""The Kubernetes API as an :class:`autoscaler.ports.Actuator` (official ``kubernetes`` client).

Thin by design: it carries out ``apply(active, warm)`` decided by the pure core and reports
what the cluster holds; it decides nothing about *how many*.

Warm-pool protocol (DESIGN.md, made fail-safe): one Deployment holds active and warm pods;
the pod label ``surgecast.io/role`` (``active`` | ``warm``) decides who serves (the Service
selects ``active``); readiness means "loaded and able to serve" for both. New pods start
``active`` (the pod template's label), so they serve as soon as they are Ready, as in a
Deployment without surgecast: without a controller that writes (``mode: Observe``, a deleted
``PredictiveAutoscaler``, a controller that is down) every new pod serves. Only a writing
controller makes pods warm. ``apply``:

1. promotes ready warm pods (oldest first) or demotes the excess ready active ones (newest
   first: the least busy) by patching the role label, so that ``active`` ready pods serve;
2. before lowering replicas, annotates pods with ``controller.kubernetes.io/pod-deletion-cost``
   (warm ``-100``, active ``100``) so the ReplicaSet removes warm, then newest, pods first;
3. writes ``spec.replicas = active + warm`` through the ``scale`` subresource with optimistic
   concurrency (the read ``resourceVersion``; on 409 it re-reads and retries);
4. records a core/v1 Event (``SuccessfulRescale``, ``WarmPoolPromoted``, ...).

Ready pods **without** the role label count as *warm*: the Service selects
``role=active``, so an unlabelled pod receives no traffic; ``apply`` labels it ``active``
when it promotes it and ``warm`` otherwise. A starting pod without the label gets
``active``, the start role the template should have given it. Pods being deleted are
ignored; pods not Ready count as ``starting``. :meth:`KubernetesActuator.release` hands the
pool back (every pod ``active``) when the controller stops writing for a target.

Errors (:mod:`autoscaler.errors`): 404 -> :class:`TargetNotFound` (and a selector that
cannot be listed -> :class:`UnsupportedSelector`, a ``TargetNotFound``); 403 ->
:class:`ActuationForbidden` naming the verb and resource; 409 -> re-read and retry, then
:class:`ActuationConflict`; 429/5xx/unreachable -> back off (honouring ``Retry-After``)
and retry, then :class:`ActuationConflict` with ``delay_s``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from autoscaler.core.signals import PodCounts
from autoscaler.errors import (
    ActuationConflict,
    ActuationForbidden,
    ConfigError,
    TargetNotFound,
    UnsupportedSelector,
)

__all__ = [
    "ACTIVE",
    "DELETION_COST",
    "ROLE_LABEL",
    "WARM",
    "KubernetesActuator",
    "LeadTimeSample",
    "PodState",
    "ReadOnlyApiClient",
    "ReadOnlyViolation",
    "UnsupportedSelector",
    "label_selector",
    "load_api_client",
]

log = logging.getLogger(__name__)

ROLE_LABEL = "surgecast.io/role"
ACTIVE = "active"
WARM = "warm"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: Deletion costs set before a scale-down: lower goes first.
COST_WARM = -100
COST_ACTIVE = 100

T = TypeVar("T")


@dataclass(frozen=True)
class PodState:
    """One pod of the target as the actuator sees it."""

    name: str
    uid: str
    role: str  # "active" or "warm" (unlabelled pods read as warm)
    labelled: bool
    ready: bool
    created_s: float
    ready_s: float | None
    deletion_cost: int | None


@dataclass(frozen=True)
class LeadTimeSample:
    """Start-up lead time of one pod: creation to its Ready condition's transition."""

    pod: str
    created_s: float
    ready_s: float

    @property
    def lead_s(self) -> float:
        """Seconds from creation to Ready."""
        return self.ready_s - self.created_s


def _epoch(t: Any) -> float | None:
    if t is None:
        return None
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    return datetime.fromisoformat(str(t).replace("Z", "+00:00")).timestamp()


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


_SET_OPERATORS = {"In": "in", "NotIn": "notin"}


def label_selector(selector: Any, what: str = "the target") -> str:
    """A ``metav1.LabelSelector`` (``matchLabels`` and ``matchExpressions``, ANDed) as the
    ``labelSelector`` query string: ``k=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``.

    Raises:
        UnsupportedSelector: no requirement at all (it would select every pod of the
            namespace), or an expression the API server's LabelSelector would refuse.
    """
    sel = selector if isinstance(selector, dict) else {}
    terms = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for i, e in enumerate(sel.get("matchExpressions") or []):
        where = f"{what}: spec.selector.matchExpressions[{i}]"
        if not isinstance(e, dict) or not e.get("key"):
            raise UnsupportedSelector(f"{where} has no key")
        key, op, values = str(e["key"]), e.get("operator"), e.get("values") or []
        if op in _SET_OPERATORS:
            if not values:
                raise UnsupportedSelector(f"{where}: operator {op} needs values")
            terms.append(f"{key} {_SET_OPERATORS[op]} ({','.join(sorted(map(str, values)))})")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                raise UnsupportedSelector(f"{where}: operator {op} takes no values")
            terms.append(key if op == "Exists" else f"!{key}")
        else:
            raise UnsupportedSelector(
                f"{where}: operator {op!r} is not one of In, NotIn, Exists, DoesNotExist")
    if not terms:
        raise UnsupportedSelector(f"{what} has an empty spec.selector (it would select "
                                  "every pod of the namespace)")
    return ",".join(terms)


class _Retryable(Exception):
    def __init__(self, message: str, delay_s: float, conflict: bool) -> None:
        super().__init__(message)
        self.delay_s, self.conflict = delay_s, conflict


class KubernetesActuator:
    """Scale one Deployment and run its warm pool.

    Args:
        api_client: a ``kubernetes.client.ApiClient`` (see :func:`load_api_client`).
        namespace: the Deployment's namespace.
        deployment: the Deployment's name.
        component: the Events' ``source.component`` / ``reportingComponent``.
        max_retries: retries per call on 409/429/5xx before giving up.
        backoff_s: first backoff (doubles per retry, capped at ``max_backoff_s``).
        sleep: how to wait between retries (injectable for tests).
        clock: Unix time for Event timestamps.
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        deployment: str,
        *,
        component: str = "surgecast",
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not namespace or not deployment:
            raise ConfigError("namespace and deployment must be non-empty")
        if max_retries < 0 or backoff_s < 0:
            raise ConfigError("max_retries and backoff_s must be ≥ 0")
        self.apps = k8s.AppsV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.namespace, self.deployment = namespace, deployment
        self.component = component
        self.max_retries, self.backoff_s, self.max_backoff_s = (
            max_retries, backoff_s, max_backoff_s)
        self._sleep, self._clock = sleep, clock
        self._seen_ready: set[str] = set()
        self._observed: tuple[dict[str, Any], list[PodState]] | None = None
        self.event_errors: list[str] = []

    # ------------------------------------------------------------------ error mapping
    def _call(self, verb: str, resource: str, fn: Callable[..., T], *args: Any,
              **kwargs: Any) -> T:
        """One API call; maps 403/404 to permanent errors, 409/429/5xx to :class:`_Retryable`."""
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            body = _status_body(exc)
            msg = str(body.get("message") or exc.reason or exc)
            code = int(exc.status or 0)
            target = f"{self.namespace}/{self.deployment}"
            if code == 404:
                raise TargetNotFound(
                    f"{resource} of target {target} not found (404): {msg}"
                ) from exc
            if code == 403:
                m = re.search(r'cannot (\w+) resource "([^"]+)"(?: in API group "([^"]*)")?',
                              msg)
                v, r = (m.group(1), m.group(2)) if m else (verb, resource)
                group = m.group(3) if m and m.group(3) else ""
                full = f"{r}.{group}" if group else r
                raise ActuationForbidden(
                    f"RBAC forbids '{v}' on '{full}' in namespace {self.namespace} (403): "
                    f"grant the controller's Role the verb {v!r} on {full!r}. Server: {msg}",
                    verb=v, resource=full,
                ) from exc
            if code == 409:
                raise _Retryable(f"409 Conflict on {verb} {resource}: {msg}",
                                 self.backoff_s, True) from exc
            if code == 429 or code >= 500:
                delay = self.backoff_s
                ra = (exc.headers or {}).get("Retry-After") if exc.headers else None
                if ra is not None and ra.strip().replace(".", "", 1).isdigit():
                    delay = max(delay, float(ra))  # seconds form; an HTTP date is ignored
                raise _Retryable(f"{code} on {verb} {resource}: {msg}", delay, False) from exc
            raise ActuationConflict(f"{verb} {resource} failed ({code}): {msg}",
                                    delay_s=self.backoff_s) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise _Retryable(f"API server unreachable on {verb} {resource}: {exc}",
                             self.backoff_s, False) from exc

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (which re-reads what it needs) with bounded, growing backoff."""
        delay = self.backoff_s
        for i in range(self.max_retries + 1):
            try:
                return attempt()
            except _Retryable as exc:
                wait = min(max(delay, exc.delay_s), self.max_backoff_s)
                if i == self.max_retries:
                    raise ActuationConflict(
                        f"{what} failed after {i + 1} attempts: {exc}", delay_s=wait
                    ) from exc
                log.info("%s: %s; retrying in %.2f s", what, exc, wait)
                self._sleep(wait)
                delay = min(delay * 2 if delay else 0.0, self.max_backoff_s)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ reads
    def _read_json(self, verb: str, resource: str, fn: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> dict[str, Any]:
        """A read whose body is parsed as plain JSON: the client's model deserialisation
        costs ~0.5 ms per pod, too much for a list of every pod on every tick."""
        raw = self._call(verb, resource, fn, *args, _preload_content=False, **kwargs)
        try:
            data = json.loads(raw.data)
        except (TypeError, ValueError) as exc:
            raise _Retryable(f"unreadable {resource} response: {exc}", self.backoff_s,
                             False) from exc
        if not isinstance(data, dict):
            raise _Retryable(f"unexpected {resource} response", self.backoff_s, False)
        return data

    def _read_deployment(self) -> dict[str, Any]:
        return self._read_json("get", "deployments.apps", self.apps.read_namespaced_deployment,
                               self.deployment, self.namespace)

    def pods(self) -> list[PodState]:
        """The target's pods (not terminating), oldest first."""
        return self._retrying("list pods", lambda: self._pods(self._read_deployment()))

    @staticmethod
    def _replicas(dep: dict[str, Any]) -> int:
        return int((dep.get("spec") or {}).get("replicas") or 0)

    def _pods(self, dep: dict[str, Any]) -> list[PodState]:
        selector = label_selector((dep.get("spec") or {}).get("selector"),
                                  f"Deployment {self.namespace}/{self.deployment}")
        lst = self._read_json("list", "pods", self.core.list_namespaced_pod, self.namespace,
                              label_selector=selector)
        out: list[PodState] = []
        for p in lst.get("items") or []:
            meta = p.get("metadata") or {}
            if meta.get("deletionTimestamp") is not None:
                continue
            conds = (p.get("status") or {}).get("conditions") or []
            ready_cond = next((c for c in conds if c.get("type") == "Ready"), None)
            ready = ready_cond is not None and ready_cond.get("status") == "True"
            role = (meta.get("labels") or {}).get(ROLE_LABEL)
            cost = (meta.get("annotations") or {}).get(DELETION_COST)
            name = str(meta.get("name"))
            out.append(PodState(
                name=name, uid=str(meta.get("uid") or name),
                role=ACTIVE if role == ACTIVE else WARM, labelled=role in (ACTIVE, WARM),
                ready=ready, created_s=_epoch(meta.get("creationTimestamp")) or 0.0,
                ready_s=_epoch(ready_cond.get("lastTransitionTime"))
                if ready and ready_cond is not None else None,
                deletion_cost=int(cost) if cost is not None and cost.lstrip("-").isdigit()
                else None,
            ))
        out.sort(key=lambda s: (s.created_s, s.name))
        return out

    def pod_counts(self) -> PodCounts:
        """Ready pods by role, starting pods, and the Deployment's ``spec.replicas``."""
        def attempt() -> PodCounts:
            dep = self._read_deployment()
            return self._counts(dep, self._pods(dep))
        return self._retrying("read pod counts", attempt)

    def observe(self) -> tuple[PodCounts, list[LeadTimeSample]]:
        """Pod counts and the lead-time samples of pods that became Ready since the last
        call, from one Deployment read and one pod list (the controller's per-tick read)."""
        def attempt() -> tuple[dict[str, Any], list[PodState]]:
            dep = self._read_deployment()
            return dep, self._pods(dep)
        dep, pods = self._retrying("read pod counts", attempt)
        self._observed = (dep, pods)
        return self._counts(dep, pods), self._new_samples(pods)

    @staticmethod
    def _counts(dep: dict[str, Any], pods: list[PodState]) -> PodCounts:
        return PodCounts(
            active=sum(1 for p in pods if p.ready and p.role == ACTIVE),
            warm=sum(1 for p in pods if p.ready and p.role == WARM),
            starting=sum(1 for p in pods if not p.ready),
            desired=KubernetesActuator._replicas(dep),
        )

    def _new_samples(self, pods: list[PodState]) -> list[LeadTimeSample]:
        out = []
        for p in pods:
            if p.ready and p.ready_s is not None and p.uid not in self._seen_ready:
                self._seen_ready.add(p.uid)
                out.append(LeadTimeSample(p.name, p.created_s, p.ready_s))
        return out

    def lead_time_samples(self) -> list[LeadTimeSample]:
        """Start-up lead times of pods that became Ready since the last call (each once).

        A pod whose Ready condition flapped reports its latest transition, so its sample
        over-states the lead; the estimator should use a robust statistic.
        """
        return self._new_samples(self.pods())

    # ------------------------------------------------------------------ writes
    def _patch_pod(self, pod: str, meta: dict[str, Any]) -> bool:
        """Patch a pod's metadata; ``False`` when the pod is already gone (404)."""
        try:
            self._retrying(f"patch pod {pod}", lambda: self._call(
                "patch", "pods", self.core.patch_namespaced_pod, pod, self.namespace,
                {"metadata": meta}))
        except TargetNotFound:
            log.info("pod %s/%s disappeared before it could be patched", self.namespace, pod)
            return False
        return True

    def _set_role(self, pod: str, role: str) -> bool:
        return self._patch_pod(pod, {"labels": {ROLE_LABEL: role}})

    def _set_cost(self, pod: str, cost: int) -> bool:
        return self._patch_pod(pod, {"annotations": {DELETION_COST: str(cost)}})

    def apply(self, active: int, warm: int, *, reason: str = "", message: str = "",
              reuse_observation: bool = False) -> None:
        """Make the target hold ``active`` serving and ``warm`` standby pods.

        ``reason``/``message`` (the policy's) go into the Event. ``reuse_observation`` plans
        on the Deployment and pods read by the last :meth:`observe` (same tick) instead of
        reading them again; that is safe because the scale write carries the read
        ``resourceVersion`` of a fresh scale read (409 on a concurrent change) and patching
        a pod that vanished is skipped.

        Raises:
            ConfigError: negative counts.
            TargetNotFound, ActuationForbidden, ActuationConflict: see the module docstring.
        """
        if active < 0 or warm < 0:
            raise ConfigError(f"active and warm must be ≥ 0, got {active}, {warm}")
        want = active + warm
        obs, self._observed = self._observed, None
        if reuse_observation and obs is not None:
            dep, pods = obs
        else:
            dep = self._retrying("read target", self._read_deployment)
            pods = self._retrying("list pods", lambda: self._pods(dep))
        ready_active = [p for p in pods if p.ready and p.role == ACTIVE]
        ready_warm = [p for p in pods if p.ready and p.role == WARM]
        promoted: list[str] = []
        demoted: list[str] = []
        if len(ready_active) < active:
            need = active - len(ready_active)
            for p in ready_warm:  # oldest warm first; a vanished pod is skipped
                if len(promoted) == need:
                    break
                if self._set_role(p.name, ACTIVE):
                    promoted.append(p.name)
        elif len(ready_active) > active:
            for p in list(reversed(ready_active))[: len(ready_active) - active]:  # newest
                if self._set_role(p.name, WARM):
                    demoted.append(p.name)
        # an unlabelled ready pod was counted and planned as warm: say so; an unlabelled
        # starting pod gets the start role the pod template should have given it
        for p in pods:
            if not p.labelled and p.name not in promoted:
                self._set_role(p.name, WARM if p.ready else ACTIVE)
        current = self._replicas(dep)
        if want < current:
            roles = {p.name: p.role for p in pods}
            roles.update(dict.fromkeys(promoted, ACTIVE))
            roles.update(dict.fromkeys(demoted, WARM))
            for p in pods:
                cost = COST_ACTIVE if roles[p.name] == ACTIVE else COST_WARM
                if p.deletion_cost != cost:
                    self._set_cost(p.name, cost)
        if want != current:
            self._retrying(f"scale {self.namespace}/{self.deployment} to {want}",
                           lambda: self._write_scale(want))
            self.event("SuccessfulRescale",
                       f"New size: {want}; reason: {reason or 'desired'}"
                       f" (active {active}, warm {warm}){'; ' + message if message else ''}")
        if promoted:
            self.event("WarmPoolPromoted", f"Promoted {len(promoted)} warm pod(s) to active: "
                                           f"{', '.join(promoted)}")
        if demoted:
            self.event("WarmPoolDemoted", f"Demoted {len(demoted)} active pod(s) to warm: "
                                          f"{', '.join(demoted)}")

    def release(self, *, reason: str = "") -> list[str]:
        """Hand the warm pool back: label every warm or unlabelled pod ``active``.

        For the controller to call when it stops writing for a target (its
        ``PredictiveAutoscaler`` was deleted or set to ``mode: Observe``): pods it had made
        warm would otherwise stay out of the Service for good. Writes nothing when every pod
        is already active. Returns the pods it relabelled.

        Raises:
            TargetNotFound, ActuationForbidden, ActuationConflict: see the module docstring.
        """
        self._observed = None
        pods = self.pods()
        released = [p.name for p in pods
                    if p.role != ACTIVE and self._set_role(p.name, ACTIVE)]
        if released:
            self.event("WarmPoolReleased",
                       f"Released {len(released)} warm pod(s) to active"
                       f"{' (' + reason + ')' if reason else ''}: {', '.join(released)}")
        return released

    def _write_scale(self, replicas: int) -> None:
        scale: Any = self._call("get", "deployments/scale",
                           self.apps.read_namespaced_deployment_scale, self.deployment,
                           self.namespace)
        if scale.spec.replicas == replicas:
            return
        scale.spec.replicas = replicas  # keeps metadata.resourceVersion: 409 when stale
        self._call("update", "deployments/scale", self.apps.replace_namespaced_deployment_scale,
                   self.deployment, self.namespace, scale)

    def event(self, reason: str, message: str, *, type_: str = "Normal") -> None:
        """Record a core/v1 Event on the Deployment (e.g. ``PredictionFallback``, Warning).

        Failures are logged and kept in ``event_errors``, never raised: an Event must not
        stop a scaling action.
        """
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        body = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(
                name=f"{self.deployment}.{uuid.uuid4().hex[:16]}", namespace=self.namespace),
            involved_object=k8s.V1ObjectReference(
                api_version="apps/v1", kind="Deployment", name=self.deployment,
                namespace=self.namespace),
            reason=reason, message=message[:1024], type=type_,
            source=k8s.V1EventSource(component=self.component),
            reporting_component=self.component,
            reporting_instance=os.environ.get("HOSTNAME", self.component),
            first_timestamp=now, last_timestamp=now, count=1, action="Scale",
        )
        try:
            self._call("create", "events", self.core.create_namespaced_event, self.namespace,
                       body)
        except (ActuationForbidden, ActuationConflict, TargetNotFound, _Retryable) as exc:
            log.warning("could not record event %s: %s", reason, exc)
            self.event_errors.append(f"{reason}: {exc}")


class ReadOnlyViolation(ConfigError):
    """A write was attempted through a read-only API client (a bug, never a user error)."""


#: HTTP methods a read-only client lets through
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ReadOnlyApiClient(k8s.ApiClient):
    """An ``ApiClient`` that refuses every request but GET/HEAD/OPTIONS before it leaves
    the process: ``surgecast dry-run`` reads the cluster through it, so it provably cannot
    write: every call of the official client, watches included, ends in
    ``rest_client.request``, which this class guards."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        send = self.rest_client.request

        def guarded(method: str, url: str, *a: Any, **kw: Any) -> Any:
            if str(method).upper() not in READ_METHODS:
                raise ReadOnlyViolation(f"read-only client refused {method} {url}")
            return send(method, url, *a, **kw)  # type: ignore[no-untyped-call]

        self.rest_client.request = guarded  # type: ignore[method-assign]


def load_api_client(
    kubeconfig: str | None = None,
    *,
    context: str | None = None,
    in_cluster: bool | None = None,
    read_only: bool = False,
    token_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token",
    ca_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
) -> Any:
    """A ``kubernetes.client.ApiClient`` from a kubeconfig or the pod's service account.

    ``in_cluster=None`` picks in-cluster when ``KUBERNETES_SERVICE_HOST`` is set and no
    ``kubeconfig`` is given, else the kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``).
    ``read_only=True`` returns a :class:`ReadOnlyApiClient`.

    Raises:
        ConfigError: the chosen configuration cannot be loaded (the message says which).
    """
    if in_cluster is None:
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    cfg = k8s.Configuration()
    try:
        if in_cluster:
            from kubernetes.config.incluster_config import InClusterConfigLoader

            loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=token_path, cert_filename=ca_path)
            loader.load_and_set(cfg)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context,
                                        client_configuration=cfg)
    except (k8s_config.ConfigException, OSError) as exc:
        where = "in-cluster service account" if in_cluster else (kubeconfig or "~/.kube/config")
        raise ConfigError(f"cannot load Kubernetes configuration from {where}: {exc}") from exc
    return ReadOnlyApiClient(cfg) if read_only else k8s.ApiClient(cfg)
