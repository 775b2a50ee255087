"""A stateful fake Kubernetes API server for tests (a stand-in, not a cluster).

It speaks real Kubernetes JSON over real HTTP on a loopback port, so the official
``kubernetes`` client talks to it unchanged. It covers what surgecast's adapters and
controller use:

- Generic resources: the built-in kinds of :data:`BUILTIN` (core/v1, apps/v1, batch/v1,
  rbac, policy, coordination, apiextensions, ...), namespaced
  (``.../namespaces/NS/PLURAL[/NAME[/SUB]]``), cluster-scoped (``.../PLURAL[/NAME]``) and the
  cluster-wide list of a namespaced resource: create, get, list (``labelSelector``,
  ``fieldSelector`` on ``metadata.name``/``metadata.namespace``), replace, patch (merge,
  strategic treated as merge, JSON patch), delete. ``uid``, ``creationTimestamp``,
  ``resourceVersion`` (409 ``Conflict`` on a stale one), ``metadata.generation`` bumped when
  anything but metadata/status changes. Unknown resources get the real server's 404.
- Custom resources: creating an ``apiextensions.k8s.io/v1`` CustomResourceDefinition makes its
  group/version/plural servable (scope as declared). Objects are defaulted, pruned and
  validated against the version's ``openAPIV3Schema`` (``jsonschema``, OpenAPI v3.0 =
  draft 4 semantics); an invalid one gets ``422 Invalid`` naming the field as the real server
  does. With ``subresources.status``: writes to the object ignore ``status``, writes to
  ``.../NAME/status`` change only ``status`` and never bump the generation.
- Watch: ``?watch=true`` (or ``1``) on any list endpoint streams newline-delimited
  ``{"type": ADDED|MODIFIED|DELETED|ERROR, "object": ...}`` with chunked framing, as
  ``kubernetes.watch.Watch().stream()`` expects: synthetic ADDED events for the current
  objects when ``resourceVersion`` is absent or ``"0"``, else the retained history after it;
  ``timeoutSeconds`` closes the stream; a ``resourceVersion`` older than the retained history
  (``watch_history`` events) gets an ERROR event with a ``410 Expired`` Status.
  :meth:`FakeKube.close_watches` ends every open stream (clients resume); leaving the context
  manager ends them too.
- ``apps/v1`` Deployments with the ``deployments/scale`` subresource and a ReplicaSet
  stand-in: raising ``spec.replicas`` creates pods that become Ready after ``ready_delay_s``
  on the fake's clock (:meth:`FakeKube.advance`); lowering it deletes not-ready pods first,
  then lowest ``controller.kubernetes.io/pod-deletion-cost``, then newest, as the ReplicaSet
  controller does. ``core/v1`` Pods: list, get, patch (labels/annotations), delete (pods are
  only created through Deployments). Events: create, list.
- ``coordination.k8s.io/v1`` Leases with MicroTime fields checked.
- Faults injected per verb and resource (:meth:`FakeKube.inject`): 403 (with the API
  server's RBAC message), 404, 409, 429 (with ``Retry-After``), 500.
- :func:`apply_manifests` creates YAML manifests (files, kustomize folders, dicts) through
  the official client, as ``kubectl create`` would.

Not covered: discovery (``/api``, ``/apis``), admission, server-side apply, RBAC itself (403s
are injected), rollouts (template changes do not replace pods), pod scheduling, garbage
collection other than a Deployment's pods, namespace lifecycle (objects may be created in a
namespace that does not exist), bookmarks. Pod readiness that comes from the passing of wall
time shows up (and is watched) when the fake is next read or :meth:`FakeKube.advance`\\ d.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["BUILTIN", "ApiError", "FakeKube", "Fault", "apply_manifests"]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass(frozen=True)
class _Res:
    """One servable resource (group/version/plural) and how it behaves."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_sub: bool = False
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    list_kind: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Store key: the plural for core and the legacy kinds, else ``plural.group``."""
        if not self.group or (self.group, self.plural) in _LEGACY:
            return self.plural
        return f"{self.plural}.{self.group}"

    @property
    def full(self) -> str:
        """``plural.group`` as the API server names it in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


_LEGACY = {("apps", "deployments"), ("coordination.k8s.io", "leases")}

#: Built-in resources served from the start: (group, version, plural, kind, namespaced, status)
BUILTIN: tuple[tuple[str, str, str, str, bool, bool], ...] = (
    ("", "v1", "namespaces", "Namespace", False, True),
    ("", "v1", "nodes", "Node", False, True),
    ("", "v1", "pods", "Pod", True, True),
    ("", "v1", "services", "Service", True, True),
    ("", "v1", "endpoints", "Endpoints", True, False),
    ("", "v1", "configmaps", "ConfigMap", True, False),
    ("", "v1", "secrets", "Secret", True, False),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, False),
    ("", "v1", "events", "Event", True, False),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, True),
    ("", "v1", "persistentvolumes", "PersistentVolume", False, True),
    ("apps", "v1", "deployments", "Deployment", True, True),
    ("apps", "v1", "replicasets", "ReplicaSet", True, True),
    ("apps", "v1", "statefulsets", "StatefulSet", True, True),
    ("apps", "v1", "daemonsets", "DaemonSet", True, True),
    ("batch", "v1", "jobs", "Job", True, True),
    ("batch", "v1", "cronjobs", "CronJob", True, True),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, True),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, True),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", True, True),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, False),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", True, False),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, False),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, False),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False,
     False),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, False),
    ("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, False),
    ("events.k8s.io", "v1", "events", "Event", True, False),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
     False, True),
)

_SEG = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_MICROTIME = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$"
)


class ApiError(Exception):
    """Raised inside handlers; becomes a ``Status`` response."""

    def __init__(self, code: int, reason: str, message: str, *,
                 details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details or {}
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details,
                "code": self.code}


@dataclass
class Fault:
    """An injected failure: ``times`` responses of ``code`` for (verb, resource)."""

    code: int
    verb: str = "*"
    resource: str = "*"
    times: int = 1
    retry_after_s: int | None = None
    message: str | None = None

    def matches(self, verb: str, resource: str) -> bool:
        return self.verb in ("*", verb) and self.resource in ("*", resource)


_REASONS = {403: "Forbidden", 404: "NotFound", 409: "Conflict", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable"}


def _ts(t: float) -> str:
    return datetime.fromtimestamp(int(t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _copy(obj: Any) -> Any:
    return copy.deepcopy(obj)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (also used for strategic merge: maps merge, lists replace)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out


def _json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch: add, replace, remove, test."""
    doc = json.loads(json.dumps(doc))
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op["op"]
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                if kind == "add":
                    parent.insert(len(parent) if last == "-" else int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise ApiError(422, "Invalid", f"replace: {op['path']} does not exist")
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            elif parent.pop(last, None) is None:
                raise ApiError(422, "Invalid", f"remove: {op['path']} does not exist")
        elif kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if cur != op["value"]:
                raise ApiError(422, "Invalid", f"test failed at {op['path']}")
        else:
            raise ApiError(415, "UnsupportedMediaType", f"JSON patch op {kind!r} not supported")
    return doc


def _parse_selector(sel: str) -> list[Callable[[dict[str, str]], bool]]:
    """``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``."""
    terms: list[str] = []
    depth, cur = 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur)
    preds: list[Callable[[dict[str, str]], bool]] = []
    for raw in terms:
        t = raw.strip()
        m = re.match(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$", t)
        if m:
            k, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                preds.append(lambda lab, k=k, vals=vals: lab.get(k) in vals)
            else:
                preds.append(lambda lab, k=k, vals=vals: lab.get(k) not in vals)
        elif "!=" in t:
            k, v = (s.strip() for s in t.split("!=", 1))
            preds.append(lambda lab, k=k, v=v: lab.get(k) != v)
        elif "=" in t:
            k, v = (s.strip() for s in t.replace("==", "=").split("=", 1))
            preds.append(lambda lab, k=k, v=v: lab.get(k) == v)
        elif t.startswith("!"):
            key = t[1:].strip()
            preds.append(lambda lab, k=key: k not in lab)
        elif re.match(r"^[\w./-]+$", t):
            preds.append(lambda lab, k=t: k in lab)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {t!r}")
    return preds


def _parse_field_selector(sel: str) -> list[Callable[[dict[str, Any]], bool]]:
    """``metadata.name=x``, ``metadata.namespace!=y`` (the fields every resource supports)."""
    preds: list[Callable[[dict[str, Any]], bool]] = []
    for t in (s.strip() for s in sel.split(",") if s.strip()):
        m = re.match(r"^(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*)$", t)
        if not m:
            raise ApiError(400, "BadRequest",
                           f'"{t.split("=")[0].rstrip("!")}" is not a known field selector: '
                           "only metadata.name and metadata.namespace are supported")
        fld, op, val = m.group(1).split(".")[1], m.group(2), m.group(3)
        if op == "!=":
            preds.append(lambda o, f=fld, v=val: (o.get("metadata") or {}).get(f, "") != v)
        else:
            preds.append(lambda o, f=fld, v=val: (o.get("metadata") or {}).get(f, "") == v)
    return preds


# ---------------------------------------------------------------------- OpenAPI v3 schema
def _apply_defaults(node: Any, schema: dict[str, Any]) -> Any:
    """Fill ``default``\\ s of absent properties (apiextensions defaulting), recursively."""
    if isinstance(node, dict):
        props = schema.get("properties") or {}
        for name, sub in props.items():
            if name not in node and "default" in sub:
                node[name] = _copy(sub["default"])
            if name in node:
                node[name] = _apply_defaults(node[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in list(node):
                if name not in props:
                    node[name] = _apply_defaults(node[name], extra)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        return [_apply_defaults(v, schema["items"]) for v in node]
    return node


def _prune(node: Any, schema: dict[str, Any], *, root: bool = False) -> Any:
    """Drop fields the structural schema does not specify (unless it preserves them)."""
    if isinstance(node, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
            return node
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for name, value in node.items():
            if root and name in ("apiVersion", "kind", "metadata"):
                out[name] = value
            elif name in props:
                out[name] = _prune(value, props[name])
            elif isinstance(extra, dict):
                out[name] = _prune(value, extra)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                out[name] = value
        return out
    if isinstance(node, list) and isinstance(schema.get("items"), dict):
        return [_prune(v, schema["items"]) for v in node]
    return node


def _field_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _json_type(val: Any) -> str:
    if val is None:
        return "null"
    if isinstance(val, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "array",
            dict: "object"}.get(type(val), type(val).__name__)


def _schema_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for every violation, worded like the API server's."""
    import jsonschema

    body = {k: v for k, v in obj.items() if k != "metadata"}
    sch = dict(schema)
    if "properties" in sch:
        sch["properties"] = {k: v for k, v in sch["properties"].items() if k != "metadata"}
    out: list[tuple[str, str]] = []
    for err in sorted(jsonschema.Draft4Validator(sch).iter_errors(body),
                      key=lambda e: [str(p) for p in e.absolute_path]):
        path = _field_path(err.absolute_path)
        v, val = err.validator, err.instance
        shown = json.dumps(val) if not isinstance(val, dict | list) else "..."
        if v == "required":
            miss = str(err.message).split("'")[1] if "'" in err.message else "?"
            fpath = f"{path}.{miss}" if path else miss
            out.append((fpath, f"{fpath}: Required value"))
        elif v == "type":
            out.append((path, f"{path}: Invalid value: {json.dumps(_json_type(val))}: "
                              f"{path} in body must be of type {err.validator_value}: {shown}"))
        elif v == "enum":
            allowed = ", ".join(json.dumps(x) for x in err.validator_value)
            out.append((path, f"{path}: Unsupported value: {shown}: supported values: "
                              f"{allowed}"))
        elif v in ("minimum", "maximum"):
            excl = err.schema.get("exclusiveMinimum" if v == "minimum" else "exclusiveMaximum")
            word = "greater" if v == "minimum" else "less"
            rel = "than" if excl else "than or equal to"
            out.append((path, f"{path}: Invalid value: {shown}: {path} in body should be "
                              f"{word} {rel} {err.validator_value}"))
        elif v == "pattern":
            out.append((path, f"{path}: Invalid value: {shown}: {path} in body should match "
                              f"'{err.validator_value}'"))
        else:
            out.append((path, f"{path}: Invalid value: {shown}: {err.message}"))
    return out


@dataclass
class _Pod:
    obj: dict[str, Any]
    created_s: float
    ready_at_s: float


@dataclass
class _Event:
    rv: int
    type: str
    key: str
    ns: str
    obj: dict[str, Any]


@dataclass
class FakeKube:
    """The fake API server. Use as a context manager; ``.host`` is its URL.

    Args:
        ready_delay_s: seconds on the fake clock from pod creation to Ready.
        user: the user named in injected 403 messages.
        watch_history: watch events retained for resuming; a watch from an older
            ``resourceVersion`` gets ``410 Expired`` (make it small to test that).
        watch_timeout_s: how long a watch without ``timeoutSeconds`` stays open.
    """

    ready_delay_s: float = 30.0
    user: str = "system:serviceaccount:surgecast:surgecast-controller"
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], _Pod] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    clock_offset_s: float = 0.0
    watch_history: int = 1000
    watch_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        self._rv = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._pod_seq = 0
        self._resources: dict[tuple[str, str, str], _Res] = {
            (g, v, p): _Res(g, v, p, k, nsd, st) for g, v, p, k, nsd, st in BUILTIN
        }
        self._history: deque[_Event] = deque()
        self._history_floor = 0  # resourceVersion of the newest event no longer retained
        self._watch_epoch = 0
        self._closing = False
        self._open_watches = 0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeKube:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40-ms delayed-ACK stall per response

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self._closing = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._changed:
            self._closing = True  # ends every open watch
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def host(self) -> str:
        """``http://127.0.0.1:PORT``."""
        assert self._server is not None, "use FakeKube as a context manager"
        return f"http://127.0.0.1:{self._server.server_port}"

    def api_client(self, *, retries: Any = None) -> Any:
        """An official ``kubernetes.client.ApiClient`` pointed at this server.

        ``retries`` goes to urllib3 (``False``: none). By default urllib3 itself retries a
        429/503 that carries ``Retry-After`` (sleeping for it), as against a real server.
        """
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.host
        cfg.retries = retries
        return client.ApiClient(cfg)

    # ------------------------------------------------------------------ test controls
    def now(self) -> float:
        """The fake clock: wall time plus :meth:`advance`\\ d seconds."""
        return time.time() + self.clock_offset_s

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward (pods become Ready on it; watches see it at once)."""
        with self._lock:
            self.clock_offset_s += seconds
            for p in list(self.pods.values()):
                self._refresh_pod(p)

    def inject(self, code: int, *, verb: str = "*", resource: str = "*", times: int = 1,
               retry_after_s: int | None = None, message: str | None = None) -> Fault:
        """Fail the next ``times`` matching requests with ``code``.

        ``verb`` is the Kubernetes verb (get, list, watch, create, update, patch, delete);
        ``resource`` e.g. ``deployments``, ``deployments/scale``, ``pods``, ``events``,
        ``predictiveautoscalers/status``.
        """
        f = Fault(code, verb, resource, times, retry_after_s, message)
        with self._lock:
            self.faults.append(f)
        return f

    def writes(self) -> list[tuple[str, str, str]]:
        """Requests so far that were not get/list/watch."""
        return [r for r in self.requests if r[0] not in ("get", "list", "watch")]

    def close_watches(self) -> None:
        """End every open watch stream cleanly (as an API server restart or timeout would)."""
        with self._changed:
            self._watch_epoch += 1
            self._changed.notify_all()

    @property
    def open_watches(self) -> int:
        """Watch streams being served right now."""
        with self._lock:
            return self._open_watches

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion handed out."""
        with self._lock:
            return str(self._rv)

    def served(self) -> list[str]:
        """``group/version/plural`` of every resource served now (built-in and custom)."""
        with self._lock:
            return sorted(f"{r.api_version}/{r.plural}" for r in self._resources.values())

    def add_deployment(self, namespace: str, name: str, *, replicas: int = 1,
                       labels: dict[str, str] | None = None,
                       pod_labels: dict[str, str] | None = None) -> dict[str, Any]:
        """Create a Deployment directly (pods Ready at once, as if long running)."""
        sel = labels or {"app": name}
        body = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(sel)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(sel)},
                     "template": {"metadata": {"labels": {**sel, **(pod_labels or {})}},
                                  "spec": {"containers": [{"name": "worker",
                                                           "image": "surgecast/worker"}]}}},
        }
        with self._lock:
            obj = self._create(self._resources[("apps", "v1", "deployments")], namespace, body)
            for p in self._pods_of(obj):
                p.ready_at_s = p.created_s
                self._refresh_pod(p)
            self._update_status(obj)
            return _copy(obj)  # type: ignore[no-any-return]

    def pod_list(self, namespace: str) -> list[dict[str, Any]]:
        """Current pods (copies), oldest first."""
        with self._lock:
            for p in self.pods.values():
                self._refresh_pod(p)
            return [_copy(p.obj) for (ns, _), p in
                    sorted(self.pods.items(), key=lambda kv: kv[1].created_s) if ns == namespace]

    def events(self, namespace: str) -> list[dict[str, Any]]:
        """Events created so far in ``namespace``."""
        with self._lock:
            return [_copy(o) for (r, ns, _), o in self.objects.items()
                    if r == "events" and ns == namespace]

    def stored(self, api_version: str, plural: str, name: str,
               namespace: str = "") -> dict[str, Any] | None:
        """A copy of one stored object (``namespace`` empty for cluster-scoped), or None."""
        group, _, version = api_version.rpartition("/")
        with self._lock:
            res = self._resources.get((group, version, plural))
            if res is None:
                return None
            if res.key == "pods":
                p = self.pods.get((namespace, name))
                return None if p is None else dict(_copy(p.obj))
            obj = self.objects.get((res.key, namespace, name))
            return None if obj is None else dict(_copy(obj))

    # ------------------------------------------------------------------ HTTP
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        extra: dict[str, str] = {}
        try:
            body = json.loads(raw) if raw else None
            if h.command == "GET" and query.get("watch") in ("1", "true"):
                self._watch(h, url.path, query)
                return
            code, out = self._route(h.command, url.path, query, body,
                                    h.headers.get("Content-Type") or "")
        except json.JSONDecodeError as exc:
            code, out = 400, ApiError(400, "BadRequest", f"invalid JSON: {exc}").status()
        except ApiError as exc:
            code, out, extra = exc.code, exc.status(), exc.headers
        data = json.dumps(out).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _resolve(self, method: str, path: str) -> tuple[_Res, str | None, str | None,
                                                          str | None]:
        """(resource, namespace or None for cluster-wide/-scoped, name, subresource)."""
        not_found = ApiError(404, "NotFound", "the server could not find the requested "
                                              f"resource ({method} {path})")
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 2 and segs[0] == "api" and segs[1] == "v1":
            group, version, rest = "", "v1", segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise not_found
        if not rest or any(not _SEG.match(s) for s in rest):
            raise not_found
        with self._lock:
            ns: str | None = None
            if len(rest) >= 3 and rest[0] == "namespaces":
                inner = self._resources.get((group, version, rest[2]))
                if inner is not None and inner.namespaced:
                    ns, rest = rest[1], rest[2:]
            res = self._resources.get((group, version, rest[0]))
        if res is None or len(rest) > 3:
            raise not_found
        if res.namespaced and ns is None and len(rest) > 1:
            raise not_found
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not ((sub == "status" and res.status_sub)
                                    or (sub == "scale" and res.key == "deployments")):
            raise not_found
        if not res.namespaced:
            ns = ""
        return res, ns, name, sub

    def _route(self, method: str, path: str, query: dict[str, str], body: Any,
               ctype: str) -> tuple[int, Any]:
        res, ns, name, sub = self._resolve(method, path)
        if method == "POST" and name is not None:
            raise ApiError(405, "MethodNotAllowed", f"POST is not supported on {path}")
        if name is None and method not in ("GET", "POST"):
            raise ApiError(405, "MethodNotAllowed",
                           f"{method} on a collection is not supported by the fake ({path})")
        if method == "POST" and ns is None:
            raise ApiError(404, "NotFound", f"{res.full} is namespaced: POST to "
                                            f".../namespaces/NS/{res.plural}")
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}[method]
        rname = f"{res.plural}/{sub}" if sub else res.plural
        with self._lock:
            self.requests.append((verb, rname, name or ""))
            self._fault(verb, res, rname, ns or "", name or "")
            return self._dispatch(verb, res, sub, ns, name, body, ctype, query)

    def _fault(self, verb: str, res: _Res, rname: str, ns: str, name: str) -> None:
        for f in self.faults:
            if f.times > 0 and f.matches(verb, rname):
                f.times -= 1
                group, kind = res.group, res.plural
                details = {"name": name, "group": group, "kind": kind}
                msg = f.message
                if msg is None and f.code == 403:
                    gdesc = f'API group "{group}"'
                    where = f' in the namespace "{ns}"' if res.namespaced else \
                        " at the cluster scope"
                    msg = (f'{kind}{"." + group if group else ""} "{name}" is forbidden: User '
                           f'"{self.user}" cannot {verb} resource "{rname}" in {gdesc}{where}')
                if msg is None:
                    msg = {404: f'{kind} "{name}" not found', 409: "conflict (injected)",
                           429: "too many requests, please try again later",
                           }.get(f.code, "Internal error occurred: injected fault")
                hdrs = {"Retry-After": str(f.retry_after_s)} if f.retry_after_s else {}
                raise ApiError(f.code, _REASONS.get(f.code, "InternalError"), msg,
                               details=details, headers=hdrs)

    # ------------------------------------------------------------------ watch
    def _emit(self, typ: str, res: _Res, obj: dict[str, Any]) -> None:
        """Record a watch event (call with the lock held, after the write)."""
        meta = obj["metadata"]
        self._history.append(_Event(int(meta["resourceVersion"]), typ, res.key,
                                    meta.get("namespace", ""), _copy(obj)))
        while len(self._history) > max(self.watch_history, 0):
            self._history_floor = self._history.popleft().rv
        self._changed.notify_all()

    def _current(self, res: _Res) -> list[tuple[str, dict[str, Any]]]:
        """(namespace, object) of every stored object of ``res``, oldest first."""
        if res.key == "pods":
            for p in list(self.pods.values()):
                self._refresh_pod(p)
            return [(ns, p.obj) for (ns, _), p in
                    sorted(self.pods.items(), key=lambda kv: kv[1].created_s)]
        out = [(ns, o) for (r, ns, _), o in self.objects.items() if r == res.key]
        if res.key == "deployments":
            for _, o in out:
                self._update_status(o)
        return out

    def _watch(self, h: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> None:
        res, ns, name, _sub = self._resolve("GET", path)
        if name is not None:
            raise ApiError(400, "BadRequest", "watch a single object with a list call and "
                                              "fieldSelector=metadata.name=NAME")
        labels = _parse_selector(query.get("labelSelector", ""))
        fields = _parse_field_selector(query.get("fieldSelector", ""))

        def match(key: str, ons: str, obj: dict[str, Any]) -> bool:
            return (key == res.key and (not ns or ons == ns)
                    and all(f(obj["metadata"].get("labels") or {}) for f in labels)
                    and all(f(obj) for f in fields))

        try:
            timeout = float(query.get("timeoutSeconds") or self.watch_timeout_s)
        except ValueError:
            raise ApiError(400, "BadRequest", "timeoutSeconds must be an integer") from None
        since = query.get("resourceVersion", "")
        with self._changed:
            self.requests.append(("watch", res.plural, ""))
            self._fault("watch", res, res.plural, ns or "", "")
            epoch = self._watch_epoch
            lines: list[dict[str, Any]] = []
            expired = False
            if since in ("", "0"):
                lines = [{"type": "ADDED", "object": _copy(o)}
                         for ons, o in self._current(res) if match(res.key, ons, o)]
                cursor = self._rv
            else:
                try:
                    n = int(since)
                except ValueError:
                    raise ApiError(400, "BadRequest",
                                   f"invalid resource version {since!r}") from None
                if n < self._history_floor:
                    lines, expired = [self._expired(n)], True
                else:
                    lines = [{"type": e.type, "object": _copy(e.obj)} for e in self._history
                             if e.rv > n and match(e.key, e.ns, e.obj)]
                cursor = max(n, self._rv)
            self._open_watches += 1
        deadline = time.monotonic() + timeout
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Transfer-Encoding", "chunked")
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            self._send_events(h, lines)
            while not expired:
                with self._changed:
                    while (self._rv <= cursor and not self._closing
                           and self._watch_epoch == epoch and time.monotonic() < deadline):
                        self._changed.wait(max(0.0, deadline - time.monotonic()))
                    if self._closing or self._watch_epoch != epoch \
                            or time.monotonic() >= deadline:
                        break
                    if cursor < self._history_floor:  # fell behind the retained history
                        lines, expired = [self._expired(cursor)], True
                    else:
                        lines = [{"type": e.type, "object": _copy(e.obj)}
                                 for e in self._history
                                 if e.rv > cursor and match(e.key, e.ns, e.obj)]
                    cursor = self._rv
                self._send_events(h, lines)
            h.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away (Watch.stop(), closed socket)
            pass
        finally:
            with self._lock:
                self._open_watches -= 1

    def _expired(self, since: int) -> dict[str, Any]:
        return {"type": "ERROR", "object": ApiError(
            410, "Expired", f"too old resource version: {since} ({self._history_floor + 1})"
        ).status()}

    @staticmethod
    def _send_events(h: BaseHTTPRequestHandler, events: list[dict[str, Any]]) -> None:
        for ev in events:
            data = json.dumps(ev).encode() + b"\n"
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        h.wfile.flush()

    # ------------------------------------------------------------------ store
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _get(self, res: _Res, ns: str, name: str) -> dict[str, Any]:
        if res.key == "pods":
            p = self.pods.get((ns, name))
            if p is None:
                raise ApiError(404, "NotFound", f'pods "{name}" not found',
                               details={"name": name, "kind": "pods"})
            self._refresh_pod(p)
            return p.obj
        obj = self.objects.get((res.key, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{res.full} "{name}" not found',
                           details={"name": name, "group": res.group, "kind": res.plural})
        return obj

    def _check_rv(self, current: dict[str, Any], body: Any, what: str) -> None:
        want = ((body or {}).get("metadata") or {}).get("resourceVersion")
        have = current["metadata"]["resourceVersion"]
        if want not in (None, "") and want != have:
            raise ApiError(
                409, "Conflict",
                f'Operation cannot be fulfilled on {what} "{current["metadata"]["name"]}": '
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
                details={"name": current["metadata"]["name"], "kind": what},
            )

    def _validate_custom(self, res: _Res, obj: dict[str, Any]) -> dict[str, Any]:
        """Prune, default and validate a custom object against its CRD's schema (422)."""
        assert res.schema is not None
        obj = _prune(obj, res.schema, root=True)
        obj = _apply_defaults(obj, res.schema)
        errs = _schema_errors(obj, res.schema)
        if errs:
            name = obj["metadata"].get("name", "")
            msgs = [m for _, m in errs]
            joined = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
            raise ApiError(
                422, "Invalid", f'{res.kind}.{res.group} "{name}" is invalid: {joined}',
                details={"name": name, "group": res.group, "kind": res.kind,
                         "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f}
                                    for f, m in errs]})
        return obj

    def _crd_resources(self, crd: dict[str, Any]) -> list[_Res]:
        """The resources a CustomResourceDefinition serves; 422 when it is not valid."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        scope, versions = spec.get("scope"), spec.get("versions") or []
        name = crd["metadata"].get("name", "")
        errs: list[str] = []
        for fld, v in (("spec.group", group), ("spec.names.plural", plural),
                       ("spec.names.kind", kind)):
            if not v:
                errs.append(f"{fld}: Required value")
        if scope not in ("Namespaced", "Cluster"):
            errs.append(f'spec.scope: Unsupported value: {json.dumps(scope)}: supported values: '
                        '"Cluster", "Namespaced"')
        if group and plural and name != f"{plural}.{group}":
            errs.append(f'metadata.name: Invalid value: "{name}": must be '
                        'spec.names.plural+"."+spec.group')
        if sum(1 for v in versions if v.get("storage")) != 1:
            errs.append("spec.versions: Invalid value: must have exactly one version marked "
                        "as storage version")
        out: list[_Res] = []
        for i, v in enumerate(versions):
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(schema, dict):
                errs.append(f"spec.versions[{i}].schema.openAPIV3Schema: Required value")
                continue
            if v.get("served") and not errs:
                out.append(_Res(str(group), str(v.get("name", "")), str(plural), str(kind),
                                scope == "Namespaced", "status" in (v.get("subresources") or {}),
                                schema, names.get("listKind") or f"{kind}List"))
        for r in out:
            known = self._resources.get((r.group, r.version, r.plural))
            if known is not None and known.schema is None:
                errs.append(f"spec.group: Invalid value: {group!r}: {r.full} is built in")
        if errs:
            raise ApiError(422, "Invalid", f'CustomResourceDefinition.apiextensions.k8s.io '
                                           f'"{name}" is invalid: ' + ", ".join(errs),
                           details={"name": name, "group": "apiextensions.k8s.io",
                                    "kind": "CustomResourceDefinition"})
        return out

    def _register_crd(self, crd: dict[str, Any], old: dict[str, Any] | None) -> None:
        new = self._crd_resources(crd)
        if old is not None:
            for r in self._crd_resources(old):
                self._resources.pop((r.group, r.version, r.plural), None)
        for r in new:
            self._resources[(r.group, r.version, r.plural)] = r
        names = (crd.get("spec") or {}).get("names") or {}
        storage = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]
        ts = _ts(self.now())
        crd["status"] = {
            "acceptedNames": {k: names[k] for k in ("plural", "singular", "kind", "listKind",
                                                     "shortNames", "categories") if k in names},
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": ts},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": ts},
            ],
            "storedVersions": storage,
        }

    def _create(self, res: _Res, ns: str, body: Any) -> Any:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "body must be a JSON object")
        if body.get("apiVersion") not in (None, res.api_version) or \
                body.get("kind") not in (None, res.kind):
            raise ApiError(400, "BadRequest",
                           f"the API version in the data ({body.get('apiVersion')}) and kind "
                           f"({body.get('kind')}) do not match the expected "
                           f"{res.api_version} {res.kind}")
        meta = body.setdefault("metadata", {})
        if res.namespaced and meta.get("namespace") not in (None, "", ns):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not "
                                              "match the namespace sent on the request")
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
        if not name:
            raise ApiError(422, "Invalid", f"{res.plural}: metadata.name: Required value")
        key = (res.key, ns, name)
        if key in self.objects or (res.key == "pods" and (ns, name) in self.pods):
            raise ApiError(409, "AlreadyExists", f'{res.full} "{name}" already exists',
                           details={"name": name, "group": res.group, "kind": res.plural})
        if res.key == "leases":
            self._check_microtime(body)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_ts(self.now()))
        if res.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        body["apiVersion"], body["kind"] = res.api_version, res.kind
        if res.status_sub:
            body.pop("status", None)  # status is written through the status subresource
            meta["generation"] = 1
        if res.schema is not None:
            meta["generation"] = 1
            body = self._validate_custom(res, body)
            meta = body["metadata"]
        if res.key == "namespaces":
            body["status"] = {"phase": "Active"}
        if res.key == "customresourcedefinitions.apiextensions.k8s.io":
            self._register_crd(body, None)
        meta["resourceVersion"] = self._next_rv()
        if res.key == "deployments":
            spec = body.setdefault("spec", {})
            sel = (spec.get("selector") or {}).get("matchLabels")
            tpl = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not sel or any(tpl.get(k) != v for k, v in sel.items()):
                raise ApiError(422, "Invalid", "spec.template.metadata.labels: Invalid value: "
                                               "`selector` does not match template `labels`")
            spec.setdefault("replicas", 1)
            self.objects[key] = body
            self._emit("ADDED", res, body)
            self._reconcile(body)
            return body
        self.objects[key] = body
        self._emit("ADDED", res, body)
        return body

    def _check_microtime(self, body: dict[str, Any]) -> None:
        spec = body.get("spec") or {}
        for f in ("acquireTime", "renewTime"):
            v = spec.get(f)
            if v is not None and not (isinstance(v, str) and _MICROTIME.match(v)):
                raise ApiError(400, "BadRequest",
                               f"Lease in version \"v1\" cannot be handled as a Lease: "
                               f"spec.{f}: {v!r} is not a MicroTime (RFC 3339)")

    def _dispatch(self, verb: str, res: _Res, sub: str | None, ns: str | None,
                  name: str | None, body: Any, ctype: str, query: dict[str, str]
                  ) -> tuple[int, Any]:
        if verb == "list":
            return 200, self._list(res, ns, query)
        assert ns is not None
        if verb == "create":
            if res.key == "pods":
                raise ApiError(405, "MethodNotAllowed", "the fake creates pods only via "
                                                        "Deployments")
            return 201, self._create(res, ns, body)
        assert name is not None
        cur = self._get(res, ns, name)
        if sub == "scale":
            return self._scale(verb, cur, body, ctype)
        if verb == "get":
            if res.key == "deployments":
                self._update_status(cur)
            return 200, cur
        if sub == "status" and res.key == "pods":
            raise ApiError(405, "MethodNotAllowed", "the fake's pods get their status from "
                                                    "its ReplicaSet stand-in")
        if verb == "delete":
            return 200, self._delete(res, ns, name, cur)
        if verb == "patch":
            self._check_rv(cur, body if isinstance(body, dict) else None, res.full)
            new = self._apply_patch(cur, body, ctype)
        else:  # update
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "body must be a JSON object")
            self._check_rv(cur, body, res.full)
            new = _copy(body)
        return 200, self._store(res, cur, new, status_only=sub == "status")

    def _delete(self, res: _Res, ns: str, name: str, cur: dict[str, Any]) -> Any:
        if res.key == "pods":
            del self.pods[(ns, name)]
            self._emit_deleted(res, cur)
            for d in self._deployments(ns):
                self._reconcile(d)
            return cur  # the API server answers with the deleted pod
        del self.objects[(res.key, ns, name)]
        self._emit_deleted(res, cur)
        if res.key == "deployments":
            for pk in [pk for pk, p in self.pods.items() if pk[0] == ns
                       and self._owned_by(p.obj, cur)]:
                self._emit_deleted(self._resources[("", "v1", "pods")], self.pods.pop(pk).obj)
        if res.key == "customresourcedefinitions.apiextensions.k8s.io":
            for r in self._crd_resources(cur):
                self._resources.pop((r.group, r.version, r.plural), None)
                for k in [k for k in self.objects if k[0] == r.key]:
                    self._emit_deleted(r, self.objects.pop(k))
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": res.group, "kind": res.plural,
                            "uid": cur["metadata"]["uid"]}}

    def _emit_deleted(self, res: _Res, obj: dict[str, Any]) -> None:
        gone = _copy(obj)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("DELETED", res, gone)

    def _apply_patch(self, cur: dict[str, Any], body: Any, ctype: str) -> dict[str, Any]:
        if "json-patch" in ctype:
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "JSON patch body must be a list")
            return _json_patch(cur, body)  # type: ignore[no-any-return]
        if "merge-patch" in ctype:  # merge-patch+json and strategic-merge-patch+json
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "merge patch body must be a JSON object")
            return _merge_patch(cur, body)  # type: ignore[no-any-return]
        raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")

    @staticmethod
    def _content(obj: dict[str, Any], status_sub: bool) -> dict[str, Any]:
        """What ``metadata.generation`` tracks: everything but metadata (and status)."""
        skip = {"metadata", "apiVersion", "kind"} | ({"status"} if status_sub else set())
        return {k: v for k, v in obj.items() if k not in skip}

    def _store(self, res: _Res, cur: dict[str, Any], new: dict[str, Any], *,
               status_only: bool = False) -> dict[str, Any]:
        if not isinstance(new.get("metadata", {}), dict):
            raise ApiError(400, "BadRequest", "metadata must be a JSON object")
        if status_only:  # only status changes through the status subresource
            status = new.get("status")
            new = _copy(cur)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        meta = new.setdefault("metadata", {})
        for k in ("name", "namespace", "uid", "creationTimestamp"):
            if k in cur["metadata"]:
                meta[k] = cur["metadata"][k]
            else:
                meta.pop(k, None)
        if res.key == "leases":
            self._check_microtime(new)
        if res.key == "pods":
            meta["resourceVersion"] = self._next_rv()
            pod = self.pods[(meta["namespace"], meta["name"])]
            new["status"] = cur["status"]  # status is not written through the main resource
            pod.obj = new
            self._emit("MODIFIED", res, new)
            return new
        new["apiVersion"], new["kind"] = cur["apiVersion"], cur["kind"]
        if res.status_sub and not status_only:
            if "status" in cur:
                new["status"] = cur["status"]
            else:
                new.pop("status", None)
        if res.schema is not None:
            new = self._validate_custom(res, new)
            meta = new["metadata"]
        if res.key == "customresourcedefinitions.apiextensions.k8s.io":
            self._register_crd(new, cur)
        if "generation" in cur["metadata"]:
            gen = int(cur["metadata"]["generation"])
            changed = self._content(new, res.status_sub) != self._content(cur, res.status_sub)
            meta["generation"] = gen + 1 if changed and not status_only else gen
        meta["resourceVersion"] = self._next_rv()
        self.objects[(res.key, meta.get("namespace", ""), meta["name"])] = new
        if res.key == "deployments":
            new["status"] = cur.get("status", {})
            self._emit("MODIFIED", res, new)
            self._reconcile(new)
            return new
        self._emit("MODIFIED", res, new)
        return new

    def _scale(self, verb: str, dep: dict[str, Any], body: Any, ctype: str
               ) -> tuple[int, Any]:
        if verb in ("patch", "update"):
            scale = self._scale_obj(dep)
            if verb == "patch":
                self._check_rv(dep, body if isinstance(body, dict) else None,
                               "deployments.apps")
                scale = self._apply_patch(scale, body, ctype)
            else:
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "body must be a JSON object")
                self._check_rv(dep, body, "deployments.apps")
                scale = body
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, "Invalid", f"spec.replicas: Invalid value: {replicas!r}: "
                                               "must be greater than or equal to 0")
            new = _copy(dep)
            new["spec"]["replicas"] = replicas
            dep = self._store(self._resources[("apps", "v1", "deployments")], dep, new)
        return 200, self._scale_obj(dep)

    def _scale_obj(self, dep: dict[str, Any]) -> dict[str, Any]:
        self._update_status(dep)
        m = dep["metadata"]
        sel = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                               "creationTimestamp")},
                "spec": {"replicas": dep["spec"]["replicas"]},
                "status": {"replicas": dep.get("status", {}).get("replicas", 0),
                           "selector": sel}}

    def _list(self, res: _Res, ns: str | None, query: dict[str, str]) -> dict[str, Any]:
        labels = _parse_selector(query.get("labelSelector", ""))
        fields = _parse_field_selector(query.get("fieldSelector", ""))
        items = [o for ons, o in self._current(res)
                 if (not ns or ons == ns)
                 and all(f(o["metadata"].get("labels") or {}) for f in labels)
                 and all(f(o) for f in fields)]
        return {"kind": res.list_kind or f"{res.kind}List", "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    # ------------------------------------------------------------------ ReplicaSet stand-in
    def _deployments(self, ns: str) -> Iterator[dict[str, Any]]:
        return iter([o for (r, ons, _), o in self.objects.items()
                     if r == "deployments" and ons == ns])

    @staticmethod
    def _owned_by(pod: dict[str, Any], dep: dict[str, Any]) -> bool:
        return any(o.get("uid") == dep["metadata"]["uid"]
                   for o in pod["metadata"].get("ownerReferences", []))

    def _pods_of(self, dep: dict[str, Any]) -> list[_Pod]:
        ns = dep["metadata"]["namespace"]
        return [p for (pns, _), p in self.pods.items() if pns == ns and self._owned_by(p.obj, dep)]

    def _refresh_pod(self, p: _Pod) -> None:
        ready = self.now() >= p.ready_at_s
        conds = p.obj["status"]["conditions"]
        rc = next(c for c in conds if c["type"] == "Ready")
        if ready and rc["status"] != "True":
            rc.update(status="True", lastTransitionTime=_ts(p.ready_at_s))
            p.obj["status"]["phase"] = "Running"
            p.obj["metadata"]["resourceVersion"] = self._next_rv()
            if (p.obj["metadata"]["namespace"], p.obj["metadata"]["name"]) in self.pods:
                self._emit("MODIFIED", self._resources[("", "v1", "pods")], p.obj)

    def _reconcile(self, dep: dict[str, Any]) -> None:
        pods_res = self._resources[("", "v1", "pods")]
        want = int(dep["spec"]["replicas"])
        pods = self._pods_of(dep)
        now = self.now()
        for p in pods:
            self._refresh_pod(p)
        while len(pods) < want:
            self._pod_seq += 1
            name = f"{dep['metadata']['name']}-{uuid.uuid4().hex[:5]}-{self._pod_seq}"
            tpl = dep["spec"]["template"]
            obj = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": name, "namespace": dep["metadata"]["namespace"],
                    "uid": str(uuid.uuid4()), "resourceVersion": self._next_rv(),
                    "creationTimestamp": _ts(now),
                    "labels": dict((tpl.get("metadata") or {}).get("labels") or {}),
                    "annotations": dict((tpl.get("metadata") or {}).get("annotations") or {}),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                         "name": dep["metadata"]["name"],
                                         "uid": dep["metadata"]["uid"], "controller": True}],
                },
                "spec": _copy(tpl.get("spec") or {}),
                "status": {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": _ts(now)},
                    {"type": "Ready", "status": "False", "lastTransitionTime": _ts(now)}]},
            }
            p = _Pod(obj, created_s=float(int(now)), ready_at_s=float(int(now))
                     + self.ready_delay_s)
            self.pods[(obj["metadata"]["namespace"], name)] = p
            self._emit("ADDED", pods_res, obj)
            self._refresh_pod(p)
            pods.append(p)
        if len(pods) > want:
            def rank(p: _Pod) -> tuple[int, int, float]:
                ready = 1 if self.now() >= p.ready_at_s else 0
                ann = p.obj["metadata"].get("annotations") or {}
                try:
                    cost = int(ann.get(DELETION_COST, "0"))
                except ValueError:
                    cost = 0
                return (ready, cost, -p.created_s)  # not ready, cheap, newest go first

            for p in sorted(pods, key=rank)[: len(pods) - want]:
                del self.pods[(p.obj["metadata"]["namespace"], p.obj["metadata"]["name"])]
                self._emit_deleted(pods_res, p.obj)
        self._update_status(dep)

    def _update_status(self, dep: dict[str, Any]) -> None:
        pods = self._pods_of(dep)
        for p in pods:
            self._refresh_pod(p)
        ready = sum(1 for p in pods if self.now() >= p.ready_at_s)
        dep["status"] = {"observedGeneration": dep["metadata"].get("generation", 1),
                         "replicas": len(pods), "updatedReplicas": len(pods),
                         "readyReplicas": ready, "availableReplicas": ready,
                         "unavailableReplicas": len(pods) - ready}


# ---------------------------------------------------------------------- applying manifests
#: API groups the official client has typed APIs for (everything else is a custom resource).
_BUILTIN_GROUPS = frozenset(
    {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io",
     "rbac.authorization.k8s.io", "apiextensions.k8s.io", "coordination.k8s.io",
     "storage.k8s.io", "events.k8s.io", "scheduling.k8s.io", "discovery.k8s.io",
     "node.k8s.io", "certificates.k8s.io", "admissionregistration.k8s.io"}
)
#: Kinds that never take a namespace.
_CLUSTER_KINDS = frozenset({k for _, _, _, k, nsd, _ in BUILTIN if not nsd})


def _quantities_as_strings(node: Any, parent: str = "") -> Any:
    """``nvidia.com/gpu: 1`` -> ``"1"`` in resource lists.

    kubectl and the API server take a number for a Quantity; the Python client's typed
    models only take strings, so numbers are rewritten (the value is unchanged).
    """
    if isinstance(node, dict):
        if parent in ("requests", "limits", "hard"):
            return {k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                    for k, v in node.items()}
        return {k: _quantities_as_strings(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_quantities_as_strings(v, parent) for v in node]
    return node


def _manifest_docs(item: str | Path | dict[str, Any], namespace: str | None
                   ) -> Iterator[tuple[dict[str, Any], str | None]]:
    """(document, namespace override) for a dict, a YAML file or a folder.

    A folder with a ``kustomization.yaml`` yields its ``resources`` in order with its
    ``namespace``; any other folder yields its ``*.yaml`` files in name order.
    """
    import yaml

    if isinstance(item, dict):
        yield item, namespace
        return
    path = Path(item)
    if path.is_dir():
        kfile = path / "kustomization.yaml"
        if kfile.is_file():
            kust = yaml.safe_load(kfile.read_text()) or {}
            ns = kust.get("namespace") or namespace
            for r in kust.get("resources") or []:
                yield from _manifest_docs(path / r, ns)
            return
        for p in sorted(path.glob("*.yaml")):
            yield from _manifest_docs(p, namespace)
        return
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") != "Kustomization":
            yield doc, namespace


def apply_manifests(api_client: Any, paths_or_docs: Iterable[str | Path | dict[str, Any]],
                    namespace: str = "default") -> list[dict[str, Any]]:
    """Create every document of ``paths_or_docs`` through the official client, in order.

    Built-in kinds go through ``kubernetes.utils.create_from_dict`` (the typed APIs),
    custom resources through ``CustomObjectsApi`` after looking up their plural and scope in
    the CustomResourceDefinitions on the server. Namespaced objects without
    ``metadata.namespace`` land in ``namespace`` (a kustomization's ``namespace`` wins, as
    with ``kubectl apply -k``). Numeric quantities in ``requests``/``limits`` are sent as
    strings (the typed models refuse numbers that kubectl accepts). Returns the created
    objects as the server stored them.

    Raises:
        kubernetes.client.ApiException: the server refused a document (the first failure).
        ValueError: a custom kind whose CustomResourceDefinition is not on the server.
    """
    from kubernetes import client, utils

    created: list[dict[str, Any]] = []
    for raw, override in (d for item in paths_or_docs for d in _manifest_docs(item, None)):
        doc = _copy(raw)
        kind = doc.get("kind", "")
        group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
        meta = doc.setdefault("metadata", {})
        if kind in _CLUSTER_KINDS and group in _BUILTIN_GROUPS:
            meta.pop("namespace", None)
        elif override:
            meta["namespace"] = override
        ns = meta.get("namespace") or namespace
        if group in _BUILTIN_GROUPS:
            try:
                objs = utils.create_from_dict(api_client, _quantities_as_strings(doc),
                                              namespace=ns)
            except utils.FailToCreateError as exc:
                raise exc.api_exceptions[0] from None
            created.extend(api_client.sanitize_for_serialization(o) for o in objs)
            continue
        crds = client.ApiextensionsV1Api(api_client).list_custom_resource_definition().items
        match = [c for c in crds if c.spec.group == group and c.spec.names.kind == kind
                 and any(v.name == version and v.served for v in c.spec.versions)]
        if not match:
            raise ValueError(f'no matches for kind "{kind}" in version "{group}/{version}": '
                             "apply its CustomResourceDefinition first")
        crd = match[0]
        custom = client.CustomObjectsApi(api_client)
        if crd.spec.scope == "Namespaced":
            meta["namespace"] = ns
            created.append(custom.create_namespaced_custom_object(
                group, version, ns, crd.spec.names.plural, doc))
        else:
            created.append(custom.create_cluster_custom_object(
                group, version, crd.spec.names.plural, doc))
    return created
