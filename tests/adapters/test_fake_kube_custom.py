"""The fake API server's generic resources, CRDs, custom objects and watch, through the client.

Everything goes over real HTTP through the official ``kubernetes`` client (CustomObjectsApi,
ApiextensionsV1Api, ``kubernetes.watch.Watch``), as the controller will use them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_kube import FakeKube
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"
NS = "llm"


def widget_crd(*, status: bool = True, scope: str = "Namespaced",
               plural: str = PLURAL, kind: str = "Widget") -> dict[str, Any]:
    """A small CRD with a validated spec and (optionally) a status subresource."""
    version: dict[str, Any] = {
        "name": VERSION, "served": True, "storage": True,
        "schema": {"openAPIV3Schema": {
            "type": "object",
            "required": ["spec"],
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 0, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "blue"],
                                  "default": "red"},
                        "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                           "properties": {"seen": {"type": "integer"}}},
            },
        }},
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {"group": GROUP, "scope": scope,
                 "names": {"plural": plural, "singular": plural[:-1], "kind": kind,
                           "listKind": f"{kind}List"},
                 "versions": [version]},
    }


def widget(name: str, size: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
            "metadata": {"name": name, "labels": {"app": "w"}},
            "spec": {"size": size, **spec}}


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(watch_timeout_s=10.0) as fk:
        yield fk


@pytest.fixture
def api(kube: FakeKube) -> client.ApiClient:
    return kube.api_client(retries=False)


@pytest.fixture
def co(api: client.ApiClient) -> client.CustomObjectsApi:
    client.ApiextensionsV1Api(api).create_custom_resource_definition(widget_crd())
    return client.CustomObjectsApi(api)


def _status(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


# ----------------------------------------------------------------------------- CRDs + CRUD
def test_unknown_resource_is_404_until_its_crd_exists(api: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as ei:
        co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("a"))
    assert ei.value.status == 404 and _status(ei.value)["reason"] == "NotFound"
    crd = client.ApiextensionsV1Api(api).create_custom_resource_definition(widget_crd())
    established = {c.type: c.status for c in crd.status.conditions}
    assert established == {"NamesAccepted": "True", "Established": "True"}
    assert crd.status.accepted_names.plural == PLURAL
    created = co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("a"))
    assert created["metadata"]["namespace"] == NS
    # deleting the CRD stops serving it and removes its objects
    client.ApiextensionsV1Api(api).delete_custom_resource_definition(f"{PLURAL}.{GROUP}")
    with pytest.raises(ApiException) as ei:
        co.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    assert ei.value.status == 404


def test_crd_name_must_match_its_group_and_plural(api: client.ApiClient) -> None:
    bad = widget_crd()
    bad["metadata"]["name"] = "widgets.other.io"
    with pytest.raises(ApiException) as ei:
        client.ApiextensionsV1Api(api).create_custom_resource_definition(bad)
    assert ei.value.status == 422
    assert 'must be spec.names.plural+"."+spec.group' in _status(ei.value)["message"]


def test_custom_object_crud_resource_version_and_generation(
        co: client.CustomObjectsApi) -> None:
    a = co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("a", 2))
    meta = a["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert a["spec"] == {"size": 2, "color": "red"}  # defaulted from the schema
    with pytest.raises(ApiException) as ei:
        co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("a"))
    assert ei.value.status == 409 and _status(ei.value)["reason"] == "AlreadyExists"
    got = co.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    assert got == a
    # metadata-only change: new resourceVersion, same generation
    p = co.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a",
                                          {"metadata": {"labels": {"x": "1"}}})
    assert p["metadata"]["labels"] == {"app": "w", "x": "1"}
    assert int(p["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert p["metadata"]["generation"] == 1
    # replace with the stale resourceVersion: 409 Conflict
    got["spec"]["size"] = 3
    with pytest.raises(ApiException) as ei:
        co.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a", got)
    assert ei.value.status == 409
    assert "the object has been modified" in _status(ei.value)["message"]
    p["spec"]["size"] = 3
    r = co.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a", p)
    assert r["spec"]["size"] == 3 and r["metadata"]["generation"] == 2
    # JSON patch with a failing test op changes nothing; a good one bumps the generation
    with pytest.raises(ApiException) as ei:
        co.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "a", [{"op": "test", "path": "/spec/size", "value": 9}],
            _content_type="application/json-patch+json")
    assert ei.value.status == 422
    j = co.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "a",
        [{"op": "replace", "path": "/spec/size", "value": 4}],
        _content_type="application/json-patch+json")
    assert j["spec"]["size"] == 4 and j["metadata"]["generation"] == 3
    # merge patch that carries a stale resourceVersion: 409
    with pytest.raises(ApiException) as ei:
        co.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "a",
            {"metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": {"size": 5}})
    assert ei.value.status == 409
    co.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    with pytest.raises(ApiException) as ei:
        co.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    assert ei.value.status == 404
    assert _status(ei.value)["message"] == f'{PLURAL}.{GROUP} "a" not found'


def test_status_subresource(co: client.CustomObjectsApi) -> None:
    body = widget("s")
    body["status"] = {"seen": 7}
    a = co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert "status" not in a  # ignored on create
    st = co.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "s", {"status": {"seen": 1, "note": "kept"},
                                          "spec": {"size": 9}})
    assert st["status"] == {"seen": 1, "note": "kept"}  # status preserves unknown fields
    assert st["spec"]["size"] == 1  # spec is not written through /status
    assert st["metadata"]["generation"] == 1  # status writes never bump it
    assert int(st["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    # writes to the main resource ignore status
    st["status"] = {"seen": 99}
    st["spec"]["size"] = 2
    r = co.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "s", st)
    assert r["status"] == {"seen": 1, "note": "kept"} and r["metadata"]["generation"] == 2
    m = co.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "s",
                                          {"status": {"seen": 5}})
    assert m["status"]["seen"] == 1
    # replace of /status with a stale resourceVersion: 409
    with pytest.raises(ApiException) as ei:
        co.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "s", st)
    assert ei.value.status == 409
    # status is validated too
    with pytest.raises(ApiException) as ei:
        co.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "s",
                                                 {"status": {"seen": "many"}})
    assert ei.value.status == 422 and "status.seen" in _status(ei.value)["message"]
    got = co.get_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "s")
    assert got["status"]["seen"] == 1


def test_without_status_subresource_status_is_plain_data(api: client.ApiClient) -> None:
    client.ApiextensionsV1Api(api).create_custom_resource_definition(widget_crd(status=False))
    co = client.CustomObjectsApi(api)
    body = widget("p")
    body["status"] = {"seen": 3}
    a = co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert a["status"] == {"seen": 3}
    with pytest.raises(ApiException) as ei:
        co.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "p",
                                                 {"status": {"seen": 4}})
    assert ei.value.status == 404


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"size": -1}, "spec.size", "should be greater than or equal to 0"),
        ({"size": 11}, "spec.size", "should be less than or equal to 10"),
        ({"size": "big"}, "spec.size", "must be of type integer"),
        ({"size": 1, "color": "green"}, "spec.color", 'supported values: "red", "blue"'),
        ({"size": 1, "ratio": 0}, "spec.ratio", "should be greater than 0"),
        ({"size": 1, "tags": [1]}, "spec.tags[0]", "must be of type string"),
        ({}, "spec.size", "Required value"),
    ],
)
def test_schema_validation_is_422_naming_the_field(
        co: client.CustomObjectsApi, spec: dict[str, Any], field: str, words: str) -> None:
    body = widget("bad")
    body["spec"] = spec
    with pytest.raises(ApiException) as ei:
        co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    st = _status(ei.value)
    assert ei.value.status == 422 and st["reason"] == "Invalid"
    assert st["message"].startswith(f'Widget.{GROUP} "bad" is invalid: {field}: ')
    assert words in st["message"]
    assert [c["field"] for c in st["details"]["causes"]] == [field]
    # nothing was stored
    assert co.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"] == []


def test_unknown_fields_are_pruned(co: client.CustomObjectsApi) -> None:
    body = widget("u", extra="dropped")
    body["junk"] = {"a": 1}
    a = co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert "junk" not in a and "extra" not in a["spec"]


def test_cluster_wide_list_and_selectors(co: client.CustomObjectsApi) -> None:
    co.create_namespaced_custom_object(GROUP, VERSION, "a", PLURAL, widget("one"))
    two = widget("two")
    two["metadata"]["labels"] = {"app": "other"}
    co.create_namespaced_custom_object(GROUP, VERSION, "b", PLURAL, two)
    every = co.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert every["kind"] == "WidgetList" and every["apiVersion"] == f"{GROUP}/{VERSION}"
    assert sorted((o["metadata"]["namespace"], o["metadata"]["name"])
                  for o in every["items"]) == [("a", "one"), ("b", "two")]
    assert int(every["metadata"]["resourceVersion"]) >= 2
    sel = co.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector="app=w")
    assert [o["metadata"]["name"] for o in sel["items"]] == ["one"]
    by_name = co.list_cluster_custom_object(GROUP, VERSION, PLURAL,
                                            field_selector="metadata.name=two")
    assert [o["metadata"]["namespace"] for o in by_name["items"]] == ["b"]
    assert co.list_namespaced_custom_object(GROUP, VERSION, "a", PLURAL)["items"][0][
        "metadata"]["name"] == "one"


def test_cluster_scoped_resources(api: client.ApiClient) -> None:
    client.ApiextensionsV1Api(api).create_custom_resource_definition(
        widget_crd(scope="Cluster", plural="gadgets", kind="Gadget"))
    co = client.CustomObjectsApi(api)
    g = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gadget", "metadata": {"name": "g"},
         "spec": {"size": 1}}
    made = co.create_cluster_custom_object(GROUP, VERSION, "gadgets", g)
    assert "namespace" not in made["metadata"]
    assert co.get_cluster_custom_object(GROUP, VERSION, "gadgets", "g")["spec"]["size"] == 1
    # built-in cluster-scoped kinds: Namespace, ClusterRole
    core = client.CoreV1Api(api)
    ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team")))
    assert ns.status.phase == "Active"
    assert [n.metadata.name for n in core.list_namespace().items] == ["team"]
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role(client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name="reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get"])]))
    assert rbac.read_cluster_role("reader").rules[0].verbs == ["get"]
    rbac.delete_cluster_role("reader")
    assert rbac.list_cluster_role().items == []


def test_builtin_namespaced_kinds_and_wrong_namespace(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="c"), data={"k": "v"}))
    cm = core.patch_namespaced_config_map("c", NS, {"data": {"k": "w"}})
    assert cm.data == {"k": "w"}
    assert [c.metadata.name for c in core.list_config_map_for_all_namespaces().items] == ["c"]
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_config_map(NS, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="d", namespace="elsewhere")))
    assert ei.value.status == 400


# ----------------------------------------------------------------------------- watch
def _collect(kube: FakeKube, co: client.CustomObjectsApi, stop_after: int,
             **kwargs: Any) -> list[tuple[str, str, Any]]:
    w = watch.Watch()
    seen: list[tuple[str, str, Any]] = []
    for ev in w.stream(co.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs):
        obj = ev["object"]
        seen.append((ev["type"], obj["metadata"]["name"], obj["spec"]["size"]))
        if len(seen) >= stop_after:
            w.stop()
    return seen


def test_watch_streams_added_modified_deleted(kube: FakeKube,
                                              co: client.CustomObjectsApi) -> None:
    co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("old", 1))

    def writer() -> None:
        deadline = time.monotonic() + 5
        while kube.open_watches == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        co.create_namespaced_custom_object(GROUP, VERSION, "other", PLURAL, widget("new", 2))
        co.patch_namespaced_custom_object(GROUP, VERSION, "other", PLURAL, "new",
                                          {"spec": {"size": 3}})
        co.patch_namespaced_custom_object_status(GROUP, VERSION, "other", PLURAL, "new",
                                                 {"status": {"seen": 1}})
        co.delete_namespaced_custom_object(GROUP, VERSION, "other", PLURAL, "new")

    t = threading.Thread(target=writer)
    t.start()
    t0 = time.monotonic()
    seen = _collect(kube, co, 5, timeout_seconds=5)
    t.join()
    assert seen == [("ADDED", "old", 1),  # synthetic ADDED for what exists (no resourceVersion)
                    ("ADDED", "new", 2), ("MODIFIED", "new", 3), ("MODIFIED", "new", 3),
                    ("DELETED", "new", 3)]
    assert time.monotonic() - t0 < 4


def test_watch_namespaced_with_label_selector(kube: FakeKube,
                                              co: client.CustomObjectsApi) -> None:
    rv = co.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["metadata"][
        "resourceVersion"]
    other = widget("x")
    other["metadata"]["labels"] = {"app": "other"}
    co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, other)
    co.create_namespaced_custom_object(GROUP, VERSION, "elsewhere", PLURAL, widget("y"))
    co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("z"))
    w = watch.Watch()
    names = [e["object"]["metadata"]["name"] for e in w.stream(
        co.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, label_selector="app=w",
        resource_version=rv, timeout_seconds=1)]
    assert names == ["z"]


def test_watch_resumes_from_resource_version(kube: FakeKube,
                                             co: client.CustomObjectsApi) -> None:
    co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("a", 1))
    rv = co.list_cluster_custom_object(GROUP, VERSION, PLURAL)["metadata"]["resourceVersion"]
    co.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a", {"spec": {"size": 2}})
    co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("b", 5))
    t0 = time.monotonic()
    seen = _collect(kube, co, 99, resource_version=rv, timeout_seconds=1)
    assert seen == [("MODIFIED", "a", 2), ("ADDED", "b", 5)]  # only what came after rv
    assert 0.9 <= time.monotonic() - t0 < 3  # timeoutSeconds closed the stream
    # resourceVersion "0": synthetic ADDED of the current state
    assert _collect(kube, co, 2, resource_version="0", timeout_seconds=1) == [
        ("ADDED", "a", 2), ("ADDED", "b", 5)]


def test_watch_is_resumed_by_the_client_after_the_server_ends_it(
        kube: FakeKube, co: client.CustomObjectsApi) -> None:
    co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("a", 1))

    def writer() -> None:
        deadline = time.monotonic() + 5
        while kube.open_watches == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        kube.close_watches()  # e.g. an API server restart: the client re-watches from its rv
        while kube.open_watches == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("b", 2))

    t = threading.Thread(target=writer)
    t.start()
    seen = _collect(kube, co, 2)  # no timeout_seconds: Watch reconnects by itself
    t.join()
    assert seen == [("ADDED", "a", 1), ("ADDED", "b", 2)]  # no duplicate ADDED for "a"
    assert [r for r in kube.requests if r[0] == "watch"] == [("watch", PLURAL, "")] * 2


def test_watch_from_expired_resource_version_is_410() -> None:
    with FakeKube(watch_history=3) as kube:
        api = kube.api_client(retries=False)
        client.ApiextensionsV1Api(api).create_custom_resource_definition(widget_crd())
        co = client.CustomObjectsApi(api)
        co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("a", 0))
        old = co.list_cluster_custom_object(GROUP, VERSION, PLURAL)["metadata"][
            "resourceVersion"]
        for size in range(1, 6):
            co.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a",
                                              {"spec": {"size": size}})
        # the raw stream: one ERROR event carrying a 410 Expired Status, then the end
        resp = co.list_cluster_custom_object(GROUP, VERSION, PLURAL, watch=True,
                                             resource_version=old, _preload_content=False)
        lines = [json.loads(x) for x in resp.data.decode().splitlines() if x]
        assert len(lines) == 1 and lines[0]["type"] == "ERROR"
        assert lines[0]["object"]["code"] == 410 and lines[0]["object"]["reason"] == "Expired"
        # Watch.stream retries once from the same version, then raises the 410
        with pytest.raises(ApiException) as ei:
            list(watch.Watch().stream(co.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                      resource_version=old))
        assert ei.value.status == 410
        # the last 3 events are still there to resume from
        newest = co.list_cluster_custom_object(GROUP, VERSION, PLURAL)["metadata"][
            "resourceVersion"]
        seen = [e["object"]["spec"]["size"] for e in watch.Watch().stream(
            co.list_cluster_custom_object, GROUP, VERSION, PLURAL,
            resource_version=str(int(newest) - 2), timeout_seconds=1)]
        assert seen == [4, 5]


def test_leaving_the_server_ends_open_watches() -> None:
    with FakeKube() as kube:
        api = kube.api_client(retries=False)
        resp = client.CoreV1Api(api).list_namespaced_config_map(
            NS, watch=True, _preload_content=False)
        deadline = time.monotonic() + 5
        while kube.open_watches == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kube.open_watches == 1
    t0 = time.monotonic()
    assert resp.data == b""  # the stream ended cleanly (no events), promptly
    assert time.monotonic() - t0 < 2


def test_watch_pods_of_a_scaled_deployment(kube: FakeKube) -> None:
    api = kube.api_client(retries=False)
    kube.add_deployment(NS, "worker", replicas=1)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": 2}})
    kube.advance(60)  # the new pod becomes Ready
    apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": 1}})
    events = [(e["type"], e["object"].status.phase) for e in watch.Watch().stream(
        core.list_namespaced_pod, NS, label_selector="app=worker", resource_version=rv,
        timeout_seconds=1)]
    assert events[0] == ("ADDED", "Pending")
    assert ("MODIFIED", "Running") in events
    assert events[-1][0] == "DELETED"
    with pytest.raises(ApiException) as ei:
        list(watch.Watch().stream(core.list_namespaced_pod, NS, field_selector="spec.x=1",
                                  timeout_seconds=1))
    assert ei.value.status == 400


def test_watch_faults_are_injectable(kube: FakeKube, co: client.CustomObjectsApi) -> None:
    kube.inject(403, verb="watch", resource=PLURAL)
    with pytest.raises(ApiException) as ei:
        list(watch.Watch().stream(co.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                  timeout_seconds=1))
    assert ei.value.status == 403
    assert f'cannot watch resource "{PLURAL}" in API group "{GROUP}"' in \
        _status(ei.value)["message"]
