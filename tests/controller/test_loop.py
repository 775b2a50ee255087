"""The controller loop: APScheduler jobs per target, targets from watched
PredictiveAutoscalers on the fake API server (CRD applied, real watch), status written,
invalid specs reported, deletions honoured, only the leader writes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from fake_kube import FakeKube
from kubernetes import client as k8s
from replay_source import ReplaySource

from autoscaler.adapters.kubernetes import KubernetesActuator
from autoscaler.config import crd
from autoscaler.controller.loop import Controller, TargetKey
from autoscaler.controller.metrics import ControllerMetrics
from autoscaler.controller.status import GROUP, PLURAL, VERSION
from autoscaler.errors import ConfigError
from forecasting.series import Series

NS, DEP = "llm", "worker"


@pytest.fixture(scope="module")
def trace(load_trace: Callable[[str], Series]) -> Series:
    """NASA req/s placed so that the wall clock is at midday of its fourth day."""
    s = load_trace("nasa_http_1995").slice(0, 5 * 1440).as_rate()
    day4_noon = s.start_s + 3 * 86400 + 12 * 3600
    grid_now = math.floor(time.time() / 60) * 60
    return s.replace(start_s=s.start_s + (grid_now - day4_noon))


def resource(name: str = "pa", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scaleTargetRef": {"name": DEP},
        "minReplicas": 1, "maxReplicas": 60,
        "warmPool": {"minReplicas": 0, "maxReplicas": 2},
        "forecast": {"model": "seasonal_naive", "history": "3d", "step": "1m"},
        "capacity": {"requestsPerSecondPerReplica": 0.05},
        "leadTime": {"mode": "Fixed", "coldStart": "120s"},
        "interval": "1s",
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PredictiveAutoscaler",
            "metadata": {"name": name, "namespace": NS}, "spec": body}


def wait(cond: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or cond}")


@pytest.fixture
def cluster(kube: FakeKube) -> tuple[FakeKube, Any]:
    api = kube.api_client()
    k8s.ApiextensionsV1Api(api).create_custom_resource_definition(crd())
    kube.add_deployment(NS, DEP, replicas=1)
    return kube, api


def controller(api: Any, trace: Series, *, can_write: Callable[[], bool] = lambda: True,
               metrics: ControllerMetrics | None = None) -> Controller:
    return Controller(
        lambda key, spec: ReplaySource(trace),
        lambda ns, dep: KubernetesActuator(api, ns, dep, sleep=lambda s: None),
        api_client=api, can_write=can_write, metrics=metrics, watch_timeout_s=5,
    )


def get_pa(api: Any, name: str = "pa") -> dict[str, Any]:
    obj: dict[str, Any] = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, name)
    return obj


def replicas(kube: FakeKube) -> int:
    return int(kube.objects[("deployments", NS, DEP)]["spec"]["replicas"])


def test_watched_resource_is_scaled_changed_and_removed(cluster: tuple[FakeKube, Any],
                                                        trace: Series) -> None:
    kube, api = cluster
    objs = k8s.CustomObjectsApi(api)
    metrics = ControllerMetrics()
    ctl = controller(api, trace, metrics=metrics)
    ctl.start()
    try:
        assert ctl.wait_synced(10)
        assert ctl.ready()[0] and ctl.healthy()[0]
        objs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, resource())
        # the watch adds the target; the refit job fits; a tick scales ahead of midday
        wait(lambda: replicas(kube) > 1, what="scale-up")
        st = wait(lambda: get_pa(api).get("status", {}).get("desiredReplicas"), what="status")
        assert st >= 2
        status = get_pa(api)["status"]
        conds = {c["type"]: c["status"] for c in status["conditions"]}
        assert conds["Ready"] == "True"
        wait(lambda: {c["type"]: c["status"] for c in get_pa(api)["status"]["conditions"]}
             .get("PredictionReady") == "True", what="prediction ready")
        assert status["observedGeneration"] == 1
        body, _ = metrics.render()
        assert b'surgecast_controller_desired_replicas{target="llm/pa"}' in body
        # a spec change (generation 2) replaces the runner: the new bound holds
        objs.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "pa",
                                            {"spec": {"maxReplicas": 2}})
        wait(lambda: replicas(kube) <= 2, what="new maxReplicas")
        wait(lambda: get_pa(api)["status"].get("observedGeneration") == 2, what="gen 2")
        key = TargetKey(NS, "pa")
        assert ctl.runners[key].spec.max_replicas == 2
        assert ctl.scheduler.get_job(f"tick:{key}") is not None
        # deleting the resource stops its jobs and drops its metrics
        objs.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "pa")
        wait(lambda: key not in ctl.runners, what="removal")
        assert ctl.scheduler.get_job(f"tick:{key}") is None
        body, _ = metrics.render()
        assert b'target="llm/pa"' not in body
    finally:
        ctl.stop()
    assert ctl.internal_errors == 0


def test_invalid_spec_gets_a_condition_not_a_crash(cluster: tuple[FakeKube, Any],
                                                   trace: Series) -> None:
    kube, api = cluster
    ctl = controller(api, trace)
    ctl.start()
    try:
        assert ctl.wait_synced(10)
        # valid for the CRD's schema, invalid for the controller: min > max
        bad = resource("bad", minReplicas=10, maxReplicas=3)
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                                  bad)
        conds = wait(lambda: get_pa(api, "bad").get("status", {}).get("conditions"),
                     what="InvalidSpec condition")
        assert conds[0]["type"] == "Ready" and conds[0]["status"] == "False"
        assert conds[0]["reason"] == "InvalidSpec"
        assert "minReplicas" in conds[0]["message"]
        assert TargetKey(NS, "bad") in ctl.invalid and TargetKey(NS, "bad") not in ctl.runners
        assert ctl.healthy()[0]
        # its own status write comes back as a MODIFIED event: no write loop
        time.sleep(2.0)
        writes = [w for w in kube.writes() if w[1] == f"{PLURAL}/status" and w[2] == "bad"]
        assert len(writes) == 1, writes
    finally:
        ctl.stop()
    assert replicas(kube) == 1


def test_standby_never_writes(cluster: tuple[FakeKube, Any], trace: Series) -> None:
    kube, api = cluster
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                              resource())
    before = len(kube.writes())
    ctl = controller(api, trace, can_write=lambda: False)
    ctl.start()
    try:
        key = TargetKey(NS, "pa")
        wait(lambda: key in ctl.runners and ctl.runners[key].ticks >= 3, what="3 ticks")
        last = ctl.runners[key].last
        assert last is not None and last.decision is not None and last.decision.total > 1
    finally:
        ctl.stop()
    assert len(kube.writes()) == before
    assert replicas(kube) == 1
    assert "status" not in get_pa(api)


def test_watch_survives_expiry_and_stream_ends(trace: Series) -> None:
    with FakeKube(watch_history=2) as kube:
        api = kube.api_client()
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(crd())
        for i in range(4):  # one Deployment each: two on one would be ambiguous
            kube.add_deployment(NS, f"{DEP}-{i}", replicas=1)
        ctl = controller(api, trace, can_write=lambda: False)
        ctl.start()
        try:
            assert ctl.wait_synced(10)
            kube.close_watches()  # the server drops every watch: the loop re-lists
            objs = k8s.CustomObjectsApi(api)
            for i in range(4):
                objs.create_namespaced_custom_object(
                    GROUP, VERSION, NS, PLURAL,
                    resource(f"pa{i}", scaleTargetRef={"name": f"{DEP}-{i}"}))
            wait(lambda: len(ctl.runners) == 4, what="4 targets")
        finally:
            ctl.stop()


def test_target_key_parsing() -> None:
    assert str(TargetKey.parse("llm/w")) == "llm/w"
    for bad in ("llm", "/w", "llm/", "a/b/c"):
        with pytest.raises(ConfigError):
            TargetKey.parse(bad)


def test_a_wedged_tick_makes_the_controller_unhealthy(trace: Series) -> None:
    """/healthz fails when a target's tick has not completed for 10 intervals (>= 60 s)."""
    import threading

    from autoscaler.config import validate_resource

    release = threading.Event()
    now = [time.time()]

    class Stuck(ReplaySource):
        def signals(self, now_s: float) -> Any:
            release.wait(10)
            return super().signals(now_s)

    ctl = Controller(lambda key, spec: Stuck(trace), None, clock=lambda: now[0])
    ctl.upsert(TargetKey(NS, "pa"), validate_resource(resource()).spec)
    ctl.start(watch=False)
    try:
        assert ctl.ready()[0]
        assert ctl.healthy()[0]
        now[0] += 120  # two minutes pass with the first tick still blocked
        ok, why = ctl.healthy()
        assert not ok and "no tick of llm/pa" in why
    finally:
        release.set()
        ctl.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_refit_workers_let_targets_refit_side_by_side(trace: Series, workers: int) -> None:
    """Each target's first history fetch (its refit) waits until the other target's refit
    has started too: with two refit workers they run side by side; with one, the second
    refit starts only after the first gave up waiting (2 s)."""
    import threading

    from autoscaler.config import validate_resource

    both = threading.Event()
    started: dict[str, float] = {}

    class Slow(ReplaySource):
        def __init__(self, name: str) -> None:
            super().__init__(trace)
            self.name = name

        def history(self, start_s: float, end_s: float, step_s: float) -> Series:
            if self.name not in started:  # the refit's big fetch, not later ones
                started[self.name] = time.monotonic()
                if len(started) == 2:
                    both.set()
                both.wait(2.0)
            return super().history(start_s, end_s, step_s)

    ctl = Controller(lambda key, spec: Slow(key.name), None, refit_workers=workers)
    for name in ("a", "b"):
        ctl.upsert(TargetKey(NS, name), validate_resource(resource(name)).spec)
    ctl.start(watch=False)
    try:
        wait(lambda: len(started) == 2, what="both refits started")
        apart = abs(started["a"] - started["b"])
        if workers == 2:
            assert apart < 1.0, apart  # side by side
        else:
            assert apart >= 1.9, apart  # one after the other
    finally:
        both.set()
        ctl.stop()


def test_a_target_that_never_ticks_still_has_a_last_tick_time(trace: Series) -> None:
    """The stalled-target alert needs the series from the moment the target is added: a
    target whose every tick fails (Deployment gone, RBAC) never completes one."""
    from autoscaler.config import validate_resource

    m = ControllerMetrics()
    ctl = Controller(lambda key, spec: ReplaySource(trace), None, metrics=m)
    before = time.time()
    ctl.upsert(TargetKey(NS, "pa"), validate_resource(resource()).spec)  # not started
    got = m.registry.get_sample_value("surgecast_controller_last_tick_timestamp_seconds",
                                      {"target": f"{NS}/pa"})
    assert got is not None and before <= got <= time.time()
    ctl.remove(TargetKey(NS, "pa"))
    assert m.registry.get_sample_value("surgecast_controller_last_tick_timestamp_seconds",
                                       {"target": f"{NS}/pa"}) is None
