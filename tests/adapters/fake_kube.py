"""A stateful fake Kubernetes API server for tests (a stand-in, not a cluster).

It speaks real Kubernetes JSON over real HTTP on a loopback port, so the official
``kubernetes`` client talks to it unchanged. It covers what surgecast's adapters use:

- ``apps/v1`` Deployments: create, get, list, patch (strategic/merge/JSON patch), replace,
  delete; the ``deployments/scale`` subresource: get, patch, replace.
- ``core/v1`` Pods: list (``labelSelector``), get, patch (labels/annotations), delete;
  Events: create, list.
- ``coordination.k8s.io/v1`` Leases: get, create, replace, with MicroTime fields checked.
- ``resourceVersion`` on every object, bumped on every write; a write that carries a stale
  ``metadata.resourceVersion`` gets ``409 Conflict`` with a ``Status`` body.
- Faults injected per verb and resource (:meth:`FakeKube.inject`): 403 (with the API
  server's RBAC message), 404, 409, 429 (with ``Retry-After``), 500.
- A ReplicaSet stand-in: raising ``spec.replicas`` creates pods that become Ready after
  ``ready_delay_s`` on the fake's clock (:meth:`FakeKube.advance`); lowering it deletes
  not-ready pods first, then lowest ``controller.kubernetes.io/pod-deletion-cost``, then
  newest, as the ReplicaSet controller does.

Not covered: watch, admission, field selectors, server-side apply, RBAC itself (403s are
injected), rollouts (template changes do not replace pods), pod scheduling.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["ApiError", "FakeKube", "Fault"]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"

#: resource -> (group, apiVersion, kind, list kind)
_KINDS: dict[str, tuple[str, str, str]] = {
    "deployments": ("apps", "apps/v1", "Deployment"),
    "pods": ("", "v1", "Pod"),
    "events": ("", "v1", "Event"),
    "leases": ("coordination.k8s.io", "coordination.k8s.io/v1", "Lease"),
}

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)/namespaces/(?P<ns>[a-z0-9-]+)/"
    r"(?P<resource>[a-z]+)(?:/(?P<name>[a-z0-9.-]+))?(?:/(?P<sub>[a-z]+))?$"
)
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


@dataclass
class _Pod:
    obj: dict[str, Any]
    created_s: float
    ready_at_s: float


@dataclass
class FakeKube:
    """The fake API server. Use as a context manager; ``.host`` is its URL.

    Args:
        ready_delay_s: seconds on the fake clock from pod creation to Ready.
        user: the user named in injected 403 messages.
    """

    ready_delay_s: float = 30.0
    user: str = "system:serviceaccount:surgecast:surgecast-controller"
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], _Pod] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    clock_offset_s: float = 0.0

    def __post_init__(self) -> None:
        self._rv = 0
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._pod_seq = 0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeKube:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
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
        """Move the fake clock forward (pods become Ready on it)."""
        with self._lock:
            self.clock_offset_s += seconds

    def inject(self, code: int, *, verb: str = "*", resource: str = "*", times: int = 1,
               retry_after_s: int | None = None, message: str | None = None) -> Fault:
        """Fail the next ``times`` matching requests with ``code``.

        ``verb`` is the Kubernetes verb (get, list, create, update, patch, delete);
        ``resource`` e.g. ``deployments``, ``deployments/scale``, ``pods``, ``events``.
        """
        f = Fault(code, verb, resource, times, retry_after_s, message)
        with self._lock:
            self.faults.append(f)
        return f

    def writes(self) -> list[tuple[str, str, str]]:
        """Requests so far that were not get/list."""
        return [r for r in self.requests if r[0] not in ("get", "list")]

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
            obj = self._create("deployments", namespace, body)
            for p in self._pods_of(obj):
                p.ready_at_s = p.created_s
                self._refresh_pod(p)
            self._update_status(obj)
            return json.loads(json.dumps(obj))

    def pod_list(self, namespace: str) -> list[dict[str, Any]]:
        """Current pods (copies), oldest first."""
        with self._lock:
            for p in self.pods.values():
                self._refresh_pod(p)
            return [json.loads(json.dumps(p.obj)) for (ns, _), p in
                    sorted(self.pods.items(), key=lambda kv: kv[1].created_s) if ns == namespace]

    def events(self, namespace: str) -> list[dict[str, Any]]:
        """Events created so far in ``namespace``."""
        with self._lock:
            return [json.loads(json.dumps(o)) for (r, ns, _), o in self.objects.items()
                    if r == "events" and ns == namespace]

    # ------------------------------------------------------------------ HTTP
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        extra: dict[str, str] = {}
        try:
            body = json.loads(raw) if raw else None
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

    def _route(self, method: str, path: str, query: dict[str, str], body: Any,
               ctype: str) -> tuple[int, Any]:
        m = _PATH.match(path)
        if not m or m.group("resource") not in _KINDS:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                                            f"({method} {path})")
        ns, resource, name, sub = m.group("ns"), m.group("resource"), m.group("name"), \
            m.group("sub")
        group = m.group("group") or ""
        if group != _KINDS[resource][0]:
            raise ApiError(404, "NotFound", f"{resource} is not served by group {group!r}")
        if sub not in (None, "scale") or (sub == "scale" and resource != "deployments"):
            raise ApiError(404, "NotFound", f"no subresource {sub!r} on {resource}")
        if query.get("watch") in ("1", "true"):
            raise ApiError(400, "BadRequest", "watch is not supported by the fake API server")
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}[method]
        res = f"{resource}/{sub}" if sub else resource
        with self._lock:
            self.requests.append((verb, res, name or ""))
            self._fault(verb, res, ns, name or "")
            return self._dispatch(verb, resource, sub, ns, name, query, body, ctype)

    def _fault(self, verb: str, res: str, ns: str, name: str) -> None:
        for f in self.faults:
            if f.times > 0 and f.matches(verb, res):
                f.times -= 1
                group = _KINDS[res.split("/")[0]][0]
                kind = res.split("/")[0]
                details = {"name": name, "group": group, "kind": kind}
                msg = f.message
                if msg is None and f.code == 403:
                    gdesc = f'API group "{group}"'
                    msg = (f'{kind}{"." + group if group else ""} "{name}" is forbidden: User '
                           f'"{self.user}" cannot {verb} resource "{res}" in {gdesc} in the '
                           f'namespace "{ns}"')
                if msg is None:
                    msg = {404: f'{kind} "{name}" not found', 409: "conflict (injected)",
                           429: "too many requests, please try again later",
                           }.get(f.code, "Internal error occurred: injected fault")
                hdrs = {"Retry-After": str(f.retry_after_s)} if f.retry_after_s else {}
                raise ApiError(f.code, _REASONS.get(f.code, "InternalError"), msg,
                               details=details, headers=hdrs)

    # ------------------------------------------------------------------ store
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _get(self, resource: str, ns: str, name: str) -> dict[str, Any]:
        if resource == "pods":
            p = self.pods.get((ns, name))
            if p is None:
                raise ApiError(404, "NotFound", f'pods "{name}" not found',
                               details={"name": name, "kind": "pods"})
            self._refresh_pod(p)
            return p.obj
        obj = self.objects.get((resource, ns, name))
        if obj is None:
            group = _KINDS[resource][0]
            full = f"{resource}.{group}" if group else resource
            raise ApiError(404, "NotFound", f'{full} "{name}" not found',
                           details={"name": name, "group": group, "kind": resource})
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

    def _create(self, resource: str, ns: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "body must be a JSON object")
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
        if not name:
            raise ApiError(422, "Invalid", f"{resource}: metadata.name: Required value")
        key = (resource, ns, name)
        if key in self.objects or (resource == "pods" and (ns, name) in self.pods):
            raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists',
                           details={"name": name, "kind": resource})
        if resource == "leases":
            self._check_microtime(body)
        _, api_version, kind = _KINDS[resource]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), resourceVersion=self._next_rv(),
                    creationTimestamp=_ts(self.now()))
        body["apiVersion"], body["kind"] = api_version, kind
        if resource == "deployments":
            spec = body.setdefault("spec", {})
            sel = (spec.get("selector") or {}).get("matchLabels")
            tpl = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not sel or any(tpl.get(k) != v for k, v in sel.items()):
                raise ApiError(422, "Invalid", "spec.template.metadata.labels: Invalid value: "
                                               "`selector` does not match template `labels`")
            spec.setdefault("replicas", 1)
            meta["generation"] = 1
            self.objects[key] = body
            self._reconcile(body)
            return body
        self.objects[key] = body
        return body

    def _check_microtime(self, body: dict[str, Any]) -> None:
        spec = body.get("spec") or {}
        for f in ("acquireTime", "renewTime"):
            v = spec.get(f)
            if v is not None and not (isinstance(v, str) and _MICROTIME.match(v)):
                raise ApiError(400, "BadRequest",
                               f"Lease in version \"v1\" cannot be handled as a Lease: "
                               f"spec.{f}: {v!r} is not a MicroTime (RFC 3339)")

    def _dispatch(self, verb: str, resource: str, sub: str | None, ns: str, name: str | None,
                  query: dict[str, str], body: Any, ctype: str) -> tuple[int, Any]:
        if verb == "list":
            return 200, self._list(resource, ns, query.get("labelSelector", ""))
        if verb == "create":
            if resource == "pods":
                raise ApiError(405, "MethodNotAllowed", "the fake creates pods only via "
                                                        "Deployments")
            return 201, self._create(resource, ns, body)
        assert name is not None
        cur = self._get(resource, ns, name)
        if sub == "scale":
            return self._scale(verb, cur, body, ctype)
        if verb == "get":
            if resource == "deployments":
                self._update_status(cur)
            return 200, cur
        if verb == "delete":
            if resource == "pods":
                del self.pods[(ns, name)]
                for d in self._deployments(ns):
                    self._reconcile(d)
                return 200, cur  # the API server answers with the deleted pod
            else:
                del self.objects[(resource, ns, name)]
                if resource == "deployments":
                    for k in [k for k, p in self.pods.items() if k[0] == ns
                              and self._owned_by(p.obj, cur)]:
                        del self.pods[k]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                         "details": {"name": name, "kind": resource}}
        if verb == "patch":
            self._check_rv(cur, body if isinstance(body, dict) else None, resource)
            new = self._apply_patch(cur, body, ctype)
        else:  # update
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "body must be a JSON object")
            self._check_rv(cur, body, resource)
            new = json.loads(json.dumps(body))
        return 200, self._store(resource, cur, new)

    def _apply_patch(self, cur: dict[str, Any], body: Any, ctype: str) -> dict[str, Any]:
        if "json-patch" in ctype:
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "JSON patch body must be a list")
            return _json_patch(cur, body)  # type: ignore[no-any-return]
        if "merge-patch" in ctype:
            return _merge_patch(cur, body)  # type: ignore[no-any-return]
        raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")

    def _store(self, resource: str, cur: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        meta = new.setdefault("metadata", {})
        for k in ("name", "namespace", "uid", "creationTimestamp"):
            meta[k] = cur["metadata"][k]
        if resource == "leases":
            self._check_microtime(new)
        if resource == "pods":
            meta["resourceVersion"] = self._next_rv()
            pod = self.pods[(meta["namespace"], meta["name"])]
            new["status"] = cur["status"]  # status is not written through the main resource
            pod.obj = new
            return new
        meta["resourceVersion"] = self._next_rv()
        new["apiVersion"], new["kind"] = cur["apiVersion"], cur["kind"]
        if resource == "deployments":
            if new.get("spec") != cur.get("spec"):
                meta["generation"] = int(cur["metadata"].get("generation", 1)) + 1
            else:
                meta["generation"] = cur["metadata"].get("generation", 1)
            new["status"] = cur.get("status", {})
            self.objects[("deployments", meta["namespace"], meta["name"])] = new
            self._reconcile(new)
            return new
        self.objects[(resource, meta["namespace"], meta["name"])] = new
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
            new = json.loads(json.dumps(dep))
            new["spec"]["replicas"] = replicas
            dep = self._store("deployments", dep, new)
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

    def _list(self, resource: str, ns: str, selector: str) -> dict[str, Any]:
        preds = _parse_selector(selector)
        if resource == "pods":
            items = []
            for (pns, _), p in sorted(self.pods.items(), key=lambda kv: kv[1].created_s):
                self._refresh_pod(p)
                labels = p.obj["metadata"].get("labels") or {}
                if pns == ns and all(f(labels) for f in preds):
                    items.append(p.obj)
        else:
            items = [o for (r, ons, _), o in self.objects.items() if r == resource and ons == ns
                     and all(f(o["metadata"].get("labels") or {}) for f in preds)]
            if resource == "deployments":
                for o in items:
                    self._update_status(o)
        _, api_version, kind = _KINDS[resource]
        return {"kind": f"{kind}List", "apiVersion": api_version,
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

    def _reconcile(self, dep: dict[str, Any]) -> None:
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
                "spec": json.loads(json.dumps(tpl.get("spec") or {})),
                "status": {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": _ts(now)},
                    {"type": "Ready", "status": "False", "lastTransitionTime": _ts(now)}]},
            }
            p = _Pod(obj, created_s=float(int(now)), ready_at_s=float(int(now))
                     + self.ready_delay_s)
            self.pods[(obj["metadata"]["namespace"], name)] = p
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
