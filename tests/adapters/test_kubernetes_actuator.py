"""KubernetesActuator against the fake API server, through the official client over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_kube import DELETION_COST, FakeKube

from autoscaler.adapters.kubernetes import (
    ROLE_LABEL,
    KubernetesActuator,
    UnsupportedSelector,
    label_selector,
    load_api_client,
)
from autoscaler.core.signals import PodCounts
from autoscaler.errors import (
    ActuationConflict,
    ActuationForbidden,
    ConfigError,
    TargetNotFound,
)
from autoscaler.ports import Actuator

NS = "llm"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(ready_delay_s=45.0) as fk:
        yield fk


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def act(kube: FakeKube, sleeps: list[float]) -> KubernetesActuator:
    # three ready pods that are warm (as the controller leaves them after demoting)
    kube.add_deployment(NS, "worker", replicas=3, pod_labels={ROLE_LABEL: "warm"})
    # retries=False: no urllib3 retries inside the client, so our own backoff is what runs
    return KubernetesActuator(kube.api_client(retries=False), NS, "worker",
                              sleep=sleeps.append, backoff_s=0.5)


def _roles(kube: FakeKube) -> dict[str, str | None]:
    return {p["metadata"]["name"]: p["metadata"]["labels"].get(ROLE_LABEL)
            for p in kube.pod_list(NS)}


def _reasons(kube: FakeKube) -> list[str]:
    return [e["reason"] for e in kube.events(NS)]


def test_is_an_actuator(act: KubernetesActuator) -> None:
    assert isinstance(act, Actuator)


def test_pod_counts_by_role(kube: FakeKube, act: KubernetesActuator) -> None:
    assert act.pod_counts() == PodCounts(active=0, warm=3, starting=0, desired=3)
    from kubernetes import client

    names = list(_roles(kube))

    core = client.CoreV1Api(kube.api_client())
    core.patch_namespaced_pod(names[0], NS, {"metadata": {"labels": {ROLE_LABEL: "active"}}})
    # an unlabelled ready pod receives no traffic (the Service selects role=active): warm
    core.patch_namespaced_pod(names[1], NS, {"metadata": {"labels": {ROLE_LABEL: None}}})
    client.AppsV1Api(kube.api_client()).patch_namespaced_deployment_scale(
        "worker", NS, {"spec": {"replicas": 5}})
    assert act.pod_counts() == PodCounts(active=1, warm=2, starting=2, desired=5)


def test_scale_up_promotes_warm_and_records_events(kube: FakeKube,
                                                   act: KubernetesActuator) -> None:
    act.apply(2, 3, reason="ForecastLead", message="p90 212 req/s in 3 min")
    roles = _roles(kube)
    assert len(roles) == 5
    assert sorted(r for r in roles.values()) == ["active", "active", "warm", "warm", "warm"]
    assert act.pod_counts() == PodCounts(active=2, warm=1, starting=2, desired=5)
    events = kube.events(NS)
    rescale = next(e for e in events if e["reason"] == "SuccessfulRescale")
    assert rescale["message"].startswith("New size: 5; reason: ForecastLead")
    assert "p90 212 req/s" in rescale["message"]
    assert rescale["involvedObject"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                         "name": "worker", "namespace": NS}
    assert rescale["type"] == "Normal" and rescale["source"]["component"] == "surgecast"
    assert "WarmPoolPromoted" in _reasons(kube)
    # (this fixture's template starts pods warm, the protocol before the fail-safe start
    # role: still handled) new pods become ready as warm; the next apply promotes them
    kube.advance(46)
    act.apply(4, 1)
    assert act.pod_counts() == PodCounts(active=4, warm=1, starting=0, desired=5)


def test_new_pods_serve_without_the_controller_and_excess_ones_are_demoted(
        kube: FakeKube) -> None:
    """The fail-safe start role: pods of a template labelled ``active`` serve once Ready
    with no controller write at all (mode Observe, a deleted CR, a controller that is down);
    the controller makes warm only the excess it plans, newest first."""
    from kubernetes import client

    kube.add_deployment(NS, "w", replicas=2, pod_labels={ROLE_LABEL: "active"})
    act = KubernetesActuator(kube.api_client(retries=False), NS, "w", sleep=lambda s: None)
    assert act.pod_counts() == PodCounts(active=2, warm=0, starting=0, desired=2)
    kube.advance(2)  # creation times are whole seconds: keep the generations apart
    # someone else (a person, a rollout) raises replicas: the controller writes nothing
    client.AppsV1Api(kube.api_client()).patch_namespaced_deployment_scale(
        "w", NS, {"spec": {"replicas": 4}})
    kube.advance(46)
    assert act.pod_counts() == PodCounts(active=4, warm=0, starting=0, desired=4)
    oldest = [p["metadata"]["name"] for p in kube.pod_list(NS)][:2]
    n = len(kube.writes())
    act.apply(2, 2)  # the plan wants 2 of them warm: the two newest are demoted
    assert act.pod_counts() == PodCounts(active=2, warm=2, starting=0, desired=4)
    assert {n_ for n_, r in _roles(kube).items() if r == "active"} == set(oldest)
    assert [w[:2] for w in kube.writes()[n:]].count(("patch", "pods")) == 2
    assert "WarmPoolDemoted" in _reasons(kube)


def test_release_hands_the_warm_pool_back(kube: FakeKube, act: KubernetesActuator) -> None:
    """When the controller stops writing (CR deleted or set to Observe), warm pods it made
    go back to active; a second release writes nothing."""
    act.apply(1, 2)
    assert act.pod_counts() == PodCounts(active=1, warm=2, starting=0, desired=3)
    released = act.release(reason="PredictiveAutoscaler deleted")
    assert len(released) == 2
    assert act.pod_counts() == PodCounts(active=3, warm=0, starting=0, desired=3)
    assert "WarmPoolReleased" in _reasons(kube)
    n = len(kube.writes())
    assert act.release() == []
    assert kube.writes()[n:] == []


def test_unlabelled_starting_pods_get_the_active_start_role(kube: FakeKube) -> None:
    """A template without the role label: starting pods are labelled active (the start
    role), ready ones count as warm (no traffic) and are labelled as planned."""
    kube.add_deployment(NS, "bare", replicas=2)
    act = KubernetesActuator(kube.api_client(retries=False), NS, "bare", sleep=lambda s: None)
    assert act.pod_counts() == PodCounts(active=0, warm=2, starting=0, desired=2)
    act.apply(1, 3)  # promote one unlabelled ready pod, keep one warm, add two
    # the first two were created in the same second: which one is promoted is a tie
    roles = [p["metadata"]["labels"].get(ROLE_LABEL) for p in kube.pod_list(NS)]
    assert sorted(roles[:2]) == ["active", "warm"] and roles[2:] == [None, None]  # new: unseen
    act.apply(1, 3)
    roles = [p["metadata"]["labels"].get(ROLE_LABEL) for p in kube.pod_list(NS)]
    assert sorted(roles[:2]) == ["active", "warm"] and roles[2:] == ["active", "active"]


@pytest.mark.parametrize(("selector", "query"), [
    ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["w", "v"]}]},
     "app in (v,w)"),
    ({"matchLabels": {"app": "w"},
      "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["canary"]},
                           {"key": "gpu", "operator": "Exists"},
                           {"key": "debug", "operator": "DoesNotExist"}]},
     "app=w,tier notin (canary),gpu,!debug"),
])
def test_label_selector_from_match_labels_and_expressions(selector: dict[str, object],
                                                          query: str) -> None:
    assert label_selector(selector) == query


@pytest.mark.parametrize(("selector", "words"), [
    ({}, "empty spec.selector"),
    (None, "empty spec.selector"),
    ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
     r"matchExpressions\[0\]: operator 'Gt' is not one of In, NotIn, Exists, DoesNotExist"),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "needs values"),
    ({"matchExpressions": [{"operator": "Exists"}]}, "has no key"),
])
def test_unusable_selector_is_reported_like_a_missing_target(selector: object,
                                                             words: str) -> None:
    """The runner turns TargetNotFound (and so UnsupportedSelector) into a condition: an odd
    selector must not escape as a ConfigError that crashes every tick."""
    with pytest.raises(UnsupportedSelector, match=words) as ei:
        label_selector(selector, "Deployment llm/w")
    assert isinstance(ei.value, TargetNotFound)


def test_match_expressions_select_the_target_pods(kube: FakeKube) -> None:
    """A Deployment selecting with matchExpressions only is read and scaled; with matchLabels
    and matchExpressions the expressions are not ignored (another Deployment's pods that
    share the matchLabels are not counted or labelled)."""
    kube.add_deployment(NS, "exprs", replicas=2, labels={"app": "exprs"})
    kube.add_deployment(NS, "main", replicas=2, labels={"app": "w", "tier": "main"})
    kube.add_deployment(NS, "canary", replicas=3, labels={"app": "w", "tier": "canary"})
    with kube._lock:  # valid in Kubernetes, but the fake creates only matchLabels selectors
        kube.objects[("deployments", NS, "exprs")]["spec"]["selector"] = {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["exprs"]}]}
        kube.objects[("deployments", NS, "main")]["spec"]["selector"] = {
            "matchLabels": {"app": "w"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["canary"]}]}
    api = kube.api_client(retries=False)
    exprs = KubernetesActuator(api, NS, "exprs", sleep=lambda s: None)
    assert exprs.pod_counts() == PodCounts(active=0, warm=2, starting=0, desired=2)
    exprs.apply(2, 0)
    assert exprs.pod_counts() == PodCounts(active=2, warm=0, starting=0, desired=2)
    main = KubernetesActuator(api, NS, "main", sleep=lambda s: None)
    assert main.pod_counts() == PodCounts(active=0, warm=2, starting=0, desired=2)
    main.apply(2, 0)
    canary = [p for p in kube.pod_list(NS) if p["metadata"]["labels"].get("tier") == "canary"]
    assert [p["metadata"]["labels"].get(ROLE_LABEL) for p in canary] == [None] * 3


def test_demotion_and_scale_down_remove_warm_pods_first(kube: FakeKube,
                                                       act: KubernetesActuator) -> None:
    act.apply(3, 0)
    assert act.pod_counts().active == 3
    kube.advance(2)  # creation times are whole seconds: keep the generations apart
    act.apply(3, 3)
    kube.advance(46)
    act.apply(3, 3)
    active_before = {n for n, r in _roles(kube).items() if r == "active"}
    assert len(active_before) == 3
    # demote one active (the newest), keep 2 active + 1 warm: 3 warm pods must go
    act.apply(2, 1)
    roles = _roles(kube)
    assert len(roles) == 3
    assert sorted(roles.values()) == ["active", "active", "warm"]
    survivors_active = {n for n, r in roles.items() if r == "active"}
    assert survivors_active <= active_before  # no busy pod was deleted
    # the demoted pod survives as warm: it carried the same -100 cost as other warm pods
    # but the ReplicaSet deletes the newest of equal cost first
    demoted = next(n for n, r in roles.items() if r == "warm")
    assert demoted in active_before
    costs = {p["metadata"]["annotations"].get(DELETION_COST) for p in kube.pod_list(NS)}
    assert costs == {"100", "-100"}
    assert "WarmPoolDemoted" in _reasons(kube) and "SuccessfulRescale" in _reasons(kube)


def test_no_op_writes_nothing(kube: FakeKube, act: KubernetesActuator) -> None:
    act.apply(1, 2)
    n = len(kube.writes())
    act.apply(1, 2)
    assert kube.writes()[n:] == []


def test_lead_time_samples(kube: FakeKube, act: KubernetesActuator) -> None:
    first = act.lead_time_samples()  # the three pods that already ran
    assert len(first) == 3
    act.apply(0, 5)
    assert act.lead_time_samples() == []  # not Ready yet
    kube.advance(46)
    samples = act.lead_time_samples()
    assert [s.lead_s for s in samples] == [45.0, 45.0]
    assert act.lead_time_samples() == []  # each pod reported once


def test_conflict_is_reread_and_retried(kube: FakeKube, act: KubernetesActuator,
                                        sleeps: list[float]) -> None:
    kube.inject(409, verb="update", resource="deployments/scale", times=2)
    act.apply(1, 3)
    assert act.pod_counts().desired == 4
    assert sleeps == [0.5, 1.0]
    reads = [r for r in kube.requests if r[:2] == ("get", "deployments/scale")]
    assert len(reads) == 3  # re-read before every retry


def test_stale_resource_version_conflict_from_a_racing_writer(kube: FakeKube,
                                                              sleeps: list[float]) -> None:
    """A real race: another writer changes the Deployment between our read and write."""
    from kubernetes import client

    kube.add_deployment(NS, "w2", replicas=1)
    other = client.AppsV1Api(kube.api_client())
    act = KubernetesActuator(kube.api_client(retries=False), NS, "w2", sleep=sleeps.append)
    real = act.apps.read_namespaced_deployment_scale
    raced = []

    def racing_read(*a: object, **k: object) -> object:
        out = real(*a, **k)
        if not raced:
            raced.append(1)
            other.patch_namespaced_deployment("w2", NS, {"metadata": {"labels": {"x": "y"}}})
        return out

    act.apps.read_namespaced_deployment_scale = racing_read  # type: ignore[method-assign]
    act.apply(0, 3)
    assert len(sleeps) == 1 and act.pod_counts().desired == 3


def test_persistent_conflict_gives_up(kube: FakeKube, act: KubernetesActuator,
                                      sleeps: list[float]) -> None:
    kube.inject(409, verb="update", resource="deployments/scale", times=100)
    with pytest.raises(ActuationConflict, match="after 4 attempts") as ei:
        act.apply(1, 4)
    assert ei.value.delay_s > 0 and len(sleeps) == 3


def test_target_gone_is_target_not_found(kube: FakeKube, sleeps: list[float]) -> None:
    act = KubernetesActuator(kube.api_client(), NS, "missing", sleep=sleeps.append)
    with pytest.raises(TargetNotFound, match="llm/missing"):
        act.pod_counts()
    with pytest.raises(TargetNotFound):
        act.apply(1, 0)
    assert sleeps == []


def test_pod_gone_mid_promotion_is_skipped(kube: FakeKube, act: KubernetesActuator) -> None:
    """A 404 on one pod's label patch (it was deleted meanwhile) promotes the next one."""
    kube.inject(404, verb="patch", resource="pods")
    act.apply(1, 2)
    assert act.pod_counts() == PodCounts(active=1, warm=2, starting=0, desired=3)


def test_forbidden_names_verb_and_resource(kube: FakeKube, act: KubernetesActuator) -> None:
    kube.inject(403, verb="update", resource="deployments/scale")
    with pytest.raises(ActuationForbidden) as ei:
        act.apply(2, 2)
    assert ei.value.verb == "update" and ei.value.resource == "deployments/scale.apps"
    assert "'update'" in str(ei.value) and "deployments/scale.apps" in str(ei.value)
    kube.inject(403, verb="list", resource="pods")
    with pytest.raises(ActuationForbidden) as ei:
        act.pod_counts()
    assert (ei.value.verb, ei.value.resource) == ("list", "pods")


def test_throttled_backs_off_with_retry_after(kube: FakeKube, act: KubernetesActuator,
                                             sleeps: list[float]) -> None:
    kube.inject(429, verb="get", resource="deployments", retry_after_s=7)
    assert act.pod_counts().desired == 3
    assert sleeps == [7.0]


def test_server_errors_back_off_then_conflict(kube: FakeKube, act: KubernetesActuator,
                                              sleeps: list[float]) -> None:
    kube.inject(500, verb="update", resource="deployments/scale", times=1)
    act.apply(0, 4)
    assert sleeps == [0.5] and act.pod_counts().desired == 4
    kube.inject(503, times=100, retry_after_s=30)
    with pytest.raises(ActuationConflict) as ei:
        act.pod_counts()
    assert ei.value.delay_s == 10.0  # Retry-After capped at max_backoff_s


def test_unreachable_api_server_is_transient(sleeps: list[float]) -> None:
    from kubernetes import client
    from prom_fixture import free_port

    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{free_port()}"
    cfg.retries = False
    act = KubernetesActuator(client.ApiClient(cfg), NS, "w", sleep=sleeps.append,
                             max_retries=1)
    with pytest.raises(ActuationConflict, match="unreachable"):
        act.pod_counts()


def test_event_failure_does_not_block_scaling(kube: FakeKube, act: KubernetesActuator) -> None:
    kube.inject(403, verb="create", resource="events", times=10)
    act.apply(0, 4)
    assert act.pod_counts().desired == 4
    assert act.event_errors and "create" in act.event_errors[0]


def test_prediction_fallback_event(kube: FakeKube, act: KubernetesActuator) -> None:
    act.event("PredictionFallback", "forecast error above reactive rule; reactive only",
              type_="Warning")
    ev = kube.events(NS)[-1]
    assert (ev["reason"], ev["type"]) == ("PredictionFallback", "Warning")


def test_bad_counts_are_refused(act: KubernetesActuator) -> None:
    with pytest.raises(ConfigError):
        act.apply(-1, 0)


def test_kubeconfig_factory(kube: FakeKube, tmp_path: Path) -> None:
    kube.add_deployment(NS, "worker", replicas=2)
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{kube.host}"}}}}]
users: [{{name: me, user: {{token: abc}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: me, namespace: {NS}}}}}]
current-context: fake
""")
    act = KubernetesActuator(load_api_client(str(cfg)), NS, "worker")
    assert act.pod_counts().desired == 2
    with pytest.raises(ConfigError, match="nope"):
        load_api_client(str(tmp_path / "nope"))


def test_in_cluster_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    api = load_api_client(token_path=str(token), ca_path=str(ca))
    assert api.configuration.host == "https://10.96.0.1:443"
    auth = api.configuration.auth_settings()["BearerToken"]
    assert (auth["key"], auth["value"].lower()) == ("authorization", "bearer sa-token")
    assert api.configuration.ssl_ca_cert == str(ca)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(ConfigError, match="in-cluster"):
        load_api_client(in_cluster=True, token_path=str(token), ca_path=str(ca))
