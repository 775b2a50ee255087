"""The fake API server behaves like the real one for the official client (over real HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fake_kube import DELETION_COST, FakeKube
from kubernetes import client
from kubernetes.client.exceptions import ApiException

NS = "llm"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(ready_delay_s=30.0) as fk:
        yield fk


@pytest.fixture
def apps(kube: FakeKube) -> client.AppsV1Api:
    return client.AppsV1Api(kube.api_client())


@pytest.fixture
def core(kube: FakeKube) -> client.CoreV1Api:
    return client.CoreV1Api(kube.api_client())


def _deployment(name: str = "worker", replicas: int = 2) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={**labels, "surgecast.io/role": "warm"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="w", image="img")]),
            ),
        ),
    )


def _status(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def test_deployment_crud_and_resource_version(apps: client.AppsV1Api) -> None:
    created = apps.create_namespaced_deployment(NS, _deployment())
    rv1 = created.metadata.resource_version
    assert rv1 and created.metadata.uid and created.metadata.generation == 1
    got = apps.read_namespaced_deployment("worker", NS)
    assert got.spec.replicas == 2 and got.status.replicas == 2
    assert got.status.ready_replicas == 0  # pods need 30 s to be Ready
    listed = apps.list_namespaced_deployment(NS, label_selector="app=worker")
    assert [d.metadata.name for d in listed.items] == ["worker"]
    assert apps.list_namespaced_deployment(NS, label_selector="app!=worker").items == []
    patched = apps.patch_namespaced_deployment("worker", NS, {"metadata": {"labels": {"x": "1"}}})
    assert patched.metadata.labels == {"app": "worker", "x": "1"}
    assert int(patched.metadata.resource_version) > int(rv1)
    assert patched.metadata.generation == 1  # metadata change: same generation
    # replace with the stale resourceVersion: 409 Conflict with a Status body
    got.spec.replicas = 5
    with pytest.raises(ApiException) as ei:
        apps.replace_namespaced_deployment("worker", NS, got)
    assert ei.value.status == 409
    st = _status(ei.value)
    assert st["kind"] == "Status" and st["reason"] == "Conflict"
    assert "the object has been modified" in st["message"]
    fresh = apps.read_namespaced_deployment("worker", NS)
    fresh.spec.replicas = 5
    done = apps.replace_namespaced_deployment("worker", NS, fresh)
    assert done.spec.replicas == 5 and done.metadata.generation == 2
    with pytest.raises(ApiException) as ei:
        apps.create_namespaced_deployment(NS, _deployment())
    assert ei.value.status == 409 and _status(ei.value)["reason"] == "AlreadyExists"


def test_scale_subresource(apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, _deployment(replicas=1))
    scale = apps.read_namespaced_deployment_scale("worker", NS)
    assert scale.spec.replicas == 1 and scale.status.selector == "app=worker"
    out = apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": 3}})
    assert out.spec.replicas == 3
    assert apps.read_namespaced_deployment("worker", NS).spec.replicas == 3
    # JSON patch (a list body) also works
    out = apps.patch_namespaced_deployment_scale(
        "worker", NS, [{"op": "replace", "path": "/spec/replicas", "value": 4}])
    assert out.spec.replicas == 4
    # replace with the old resourceVersion conflicts; with the new one succeeds
    scale.spec.replicas = 2
    with pytest.raises(ApiException) as ei:
        apps.replace_namespaced_deployment_scale("worker", NS, scale)
    assert ei.value.status == 409
    fresh = apps.read_namespaced_deployment_scale("worker", NS)
    fresh.spec.replicas = 2
    assert apps.replace_namespaced_deployment_scale("worker", NS, fresh).spec.replicas == 2
    with pytest.raises(ApiException) as ei:
        apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": -1}})
    assert ei.value.status == 422


def test_missing_objects_are_404_with_status(apps: client.AppsV1Api) -> None:
    with pytest.raises(ApiException) as ei:
        apps.read_namespaced_deployment("nope", NS)
    st = _status(ei.value)
    assert ei.value.status == 404 and st["reason"] == "NotFound"
    assert st["message"] == 'deployments.apps "nope" not found'


def test_replicaset_creates_pods_that_become_ready(kube: FakeKube, apps: client.AppsV1Api,
                                                    core: client.CoreV1Api) -> None:
    apps.create_namespaced_deployment(NS, _deployment(replicas=2))
    pods = core.list_namespaced_pod(NS, label_selector="app=worker").items
    assert len(pods) == 2
    for p in pods:
        ready = next(c for c in p.status.conditions if c.type == "Ready")
        assert ready.status == "False" and p.status.phase == "Pending"
        assert p.metadata.owner_references[0].kind == "Deployment"
        assert p.metadata.labels["surgecast.io/role"] == "warm"
    kube.advance(31)
    pods = core.list_namespaced_pod(NS, label_selector="app=worker").items
    for p in pods:
        ready = next(c for c in p.status.conditions if c.type == "Ready")
        assert ready.status == "True" and p.status.phase == "Running"
        lead = (ready.last_transition_time - p.metadata.creation_timestamp).total_seconds()
        assert lead == pytest.approx(30.0)
    assert apps.read_namespaced_deployment("worker", NS).status.ready_replicas == 2
    # a deleted pod is replaced, as the ReplicaSet does
    core.delete_namespaced_pod(pods[0].metadata.name, NS)
    names = {p.metadata.name for p in core.list_namespaced_pod(NS).items}
    assert len(names) == 2 and pods[0].metadata.name not in names


def test_scale_down_honours_pod_deletion_cost(kube: FakeKube, apps: client.AppsV1Api,
                                              core: client.CoreV1Api) -> None:
    apps.create_namespaced_deployment(NS, _deployment(replicas=4))
    kube.advance(31)
    pods = core.list_namespaced_pod(NS).items
    costs = {pods[0].metadata.name: "5", pods[1].metadata.name: "-10",
             pods[2].metadata.name: "0", pods[3].metadata.name: "7"}
    for name, cost in costs.items():
        out = core.patch_namespaced_pod(name, NS, {"metadata": {"annotations": {
            DELETION_COST: cost}}})
        assert out.metadata.annotations[DELETION_COST] == cost
    apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": 2}})
    left = {p.metadata.name for p in core.list_namespaced_pod(NS).items}
    assert left == {pods[0].metadata.name, pods[3].metadata.name}  # -10 and 0 went first


def test_scale_down_removes_not_ready_then_newest(kube: FakeKube, apps: client.AppsV1Api,
                                                   core: client.CoreV1Api) -> None:
    apps.create_namespaced_deployment(NS, _deployment(replicas=2))
    kube.advance(31)
    old = {p.metadata.name for p in core.list_namespaced_pod(NS).items}
    apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": 3}})
    apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": 2}})
    assert {p.metadata.name for p in core.list_namespaced_pod(NS).items} == old


def test_pod_label_patch_and_selectors(kube: FakeKube, apps: client.AppsV1Api,
                                       core: client.CoreV1Api) -> None:
    apps.create_namespaced_deployment(NS, _deployment(replicas=3))
    pods = core.list_namespaced_pod(NS).items
    core.patch_namespaced_pod(pods[0].metadata.name, NS,
                              {"metadata": {"labels": {"surgecast.io/role": "active"}}})
    sel = core.list_namespaced_pod(NS, label_selector="app=worker,surgecast.io/role=active")
    assert [p.metadata.name for p in sel.items] == [pods[0].metadata.name]
    assert len(core.list_namespaced_pod(
        NS, label_selector="surgecast.io/role in (warm,cold)").items) == 2
    assert len(core.list_namespaced_pod(NS, label_selector="!surgecast.io/role").items) == 0
    assert len(core.list_namespaced_pod("other").items) == 0
    # a label patch with a stale resourceVersion conflicts
    with pytest.raises(ApiException) as ei:
        core.patch_namespaced_pod(pods[0].metadata.name, NS, {"metadata": {
            "resourceVersion": pods[0].metadata.resource_version, "labels": {"a": "b"}}})
    assert ei.value.status == 409


def test_events_create_and_list(kube: FakeKube, core: client.CoreV1Api) -> None:
    ev = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="worker.1"),
        involved_object=client.V1ObjectReference(kind="Deployment", name="worker",
                                                 namespace=NS),
        reason="SuccessfulRescale", message="New size: 3", type="Normal",
    )
    out = core.create_namespaced_event(NS, ev)
    assert out.metadata.resource_version and out.reason == "SuccessfulRescale"
    assert [e.reason for e in core.list_namespaced_event(NS).items] == ["SuccessfulRescale"]


def test_lease_semantics_with_microtime(kube: FakeKube) -> None:
    coord = client.CoordinationV1Api(kube.api_client())
    t = datetime(2026, 11, 29, 3, 0, 0, 123456, tzinfo=UTC)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="surgecast-leader"),
        spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15,
                                acquire_time=t, renew_time=t, lease_transitions=0),
    )
    made = coord.create_namespaced_lease(NS, lease)
    assert made.spec.renew_time == t  # microseconds survive the round trip
    got = coord.read_namespaced_lease("surgecast-leader", NS)
    got.spec.renew_time = t + timedelta(seconds=10)
    renewed = coord.replace_namespaced_lease("surgecast-leader", NS, got)
    assert renewed.spec.renew_time == t + timedelta(seconds=10)
    # a competitor holding the old version loses: 409
    made.spec.holder_identity = "b"
    with pytest.raises(ApiException) as ei:
        coord.replace_namespaced_lease("surgecast-leader", NS, made)
    assert ei.value.status == 409
    # a whole-second time (the client drops ".000000") is still a valid MicroTime
    got = coord.read_namespaced_lease("surgecast-leader", NS)
    got.spec.renew_time = datetime(2026, 11, 29, 3, 1, tzinfo=UTC)
    coord.replace_namespaced_lease("surgecast-leader", NS, got)
    with pytest.raises(ApiException) as ei:
        coord.patch_namespaced_lease("surgecast-leader", NS, {"spec": {"renewTime": "soon"}})
    assert ei.value.status == 400 and "MicroTime" in _status(ei.value)["message"]


def test_injected_faults(kube: FakeKube, apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, _deployment())
    kube.inject(403, verb="patch", resource="deployments/scale")
    with pytest.raises(ApiException) as ei:
        apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": 3}})
    st = _status(ei.value)
    assert ei.value.status == 403 and st["reason"] == "Forbidden"
    assert 'cannot patch resource "deployments/scale" in API group "apps"' in st["message"]
    # one-shot: the next call goes through
    apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": 3}})
    # 429 + Retry-After: urllib3 (inside the official client) waits and retries by itself
    kube.inject(429, verb="get", resource="deployments", retry_after_s=1)
    n = len(kube.requests)
    assert apps.read_namespaced_deployment("worker", NS).spec.replicas == 3
    assert kube.requests[n:] == [("get", "deployments", "worker")] * 2
    # ... and without client retries the caller sees it, header included
    bare = client.AppsV1Api(kube.api_client(retries=False))
    kube.inject(429, verb="get", resource="deployments", retry_after_s=2)
    with pytest.raises(ApiException) as ei:
        bare.read_namespaced_deployment("worker", NS)
    assert ei.value.status == 429 and ei.value.headers["Retry-After"] == "2"
    kube.inject(500, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as ei:
            apps.read_namespaced_deployment_scale("worker", NS)
        assert ei.value.status == 500 and _status(ei.value)["reason"] == "InternalError"
    kube.inject(404, resource="deployments")
    with pytest.raises(ApiException) as ei:
        apps.read_namespaced_deployment("worker", NS)
    assert ei.value.status == 404
    assert apps.read_namespaced_deployment("worker", NS).spec.replicas == 3
    assert ("patch", "deployments/scale", "worker") in kube.writes()


def test_unknown_paths_are_refused(kube: FakeKube) -> None:
    api = kube.api_client()
    # a group the server does not serve (no CRD for it): 404 like the real API server
    with pytest.raises(ApiException) as ei:
        client.CustomObjectsApi(api).list_namespaced_custom_object(
            "example.com", "v1", NS, "widgets")
    assert ei.value.status == 404
    with pytest.raises(ApiException) as ei:
        client.CoreV1Api(api).read_namespaced_pod_log("p", NS)  # no pods/log subresource
    assert ei.value.status == 404
