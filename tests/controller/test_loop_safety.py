"""Controller safety across changes: a spec edit or a restart keeps the scale-down
stabilization, a failed scale write does not spend the rate limit, a silently dropped
watch is noticed, a re-created resource is picked up, a removed target stays removed.

Demand comes from :class:`Manual` (set by the test); the cluster is the fake API server
over real HTTP."""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from typing import Any

import numpy as np
import pytest
from fake_kube import FakeKube
from kubernetes import client as k8s
from test_loop import wait

from autoscaler.adapters.kubernetes import KubernetesActuator
from autoscaler.config import crd, validate_spec
from autoscaler.controller.loop import Controller, TargetKey
from autoscaler.controller.metrics import ControllerMetrics
from autoscaler.controller.status import GROUP, PLURAL, VERSION
from autoscaler.controller.target import TargetRunner
from autoscaler.core.signals import Signals
from autoscaler.errors import MetricsUnavailable
from forecasting.series import Series

NS = "llm"


class Manual:
    """A metrics source whose demand the test sets; the history is all gaps."""

    def __init__(self, demand: float | None = 1.0) -> None:
        self.demand = demand
        self.down = False
        self.history_down = False
        self.history_calls = 0
        self.gate: threading.Event | None = None  # signals() waits on it when set
        self.in_signals = threading.Event()

    def signals(self, now_s: float) -> Signals:
        self.in_signals.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.down:
            raise MetricsUnavailable("Prometheus did not answer")
        d = self.demand
        return Signals(now_s=now_s, demand_rps=d, observed_at_s=now_s if d is not None else None,
                       errors={} if d is not None else {"demand_rps": "matched no series"})

    def history(self, start_s: float, end_s: float, step_s: float) -> Series:
        self.history_calls += 1
        if self.down or self.history_down:
            raise MetricsUnavailable("Prometheus did not answer")
        t0 = math.ceil(start_s / step_s) * step_s
        n = max(0, math.ceil((end_s - t0) / step_s))
        return Series(start_s=t0, step_s=step_s, values=np.full(n, np.nan), kind="rate")


def body(dep: str = "worker", **over: Any) -> dict[str, Any]:
    """A spec: 1 req/s per replica at 50 %, so demand D wants 2 D replicas."""
    b: dict[str, Any] = {
        "scaleTargetRef": {"name": dep}, "minReplicas": 1, "maxReplicas": 30,
        "forecast": {"model": "seasonal_naive", "history": "1h", "step": "1m",
                     "refitEvery": "1h"},
        "capacity": {"requestsPerSecondPerReplica": 1.0, "targetUtilization": 0.5},
        "leadTime": {"mode": "Fixed", "coldStart": "10s"},
        "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 100,
                                               "periodSeconds": 1}]}},
        "interval": "1s",
    }
    b.update(over)
    return b


def resource(name: str = "pa", dep: str = "worker", **over: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PredictiveAutoscaler",
            "metadata": {"name": name, "namespace": NS}, "spec": body(dep, **over)}


def replicas(kube: FakeKube, dep: str = "worker") -> int:
    return int(kube.objects[("deployments", NS, dep)]["spec"]["replicas"])


def objs(api: Any) -> Any:
    return k8s.CustomObjectsApi(api)


@pytest.fixture
def api(kube: FakeKube) -> Any:
    a = kube.api_client(retries=False)
    k8s.ApiextensionsV1Api(a).create_custom_resource_definition(crd())
    return a


def make(api: Any, source: Manual, **kw: Any) -> Controller:
    return Controller(lambda key, spec: source,
                      lambda ns, dep: KubernetesActuator(api, ns, dep, sleep=lambda s: None),
                      api_client=api, watch_timeout_s=5, **kw)


# ---------------------------------------------------------------- stabilization (1)
def test_a_spec_edit_keeps_the_scale_down_stabilization(kube: FakeKube, api: Any) -> None:
    """Demand falls from 10 to 1 req/s (20 -> 2 replicas): the 300-s window holds 20, also
    after an edit of an unrelated field (a new generation, so a new runner)."""
    kube.add_deployment(NS, "worker", replicas=1)
    src = Manual(10.0)
    ctl = make(api, src)
    ctl.start()
    try:
        objs(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, resource())
        wait(lambda: replicas(kube) == 20, what="20 replicas")
        src.demand = 1.0
        key = TargetKey(NS, "pa")
        first = ctl.runners[key]
        wait(lambda: first.ticks >= 2 and first.last is not None
             and first.last.now_s > 0 and src.demand == 1.0 and first.last.decision is not None
             and first.last.decision.reason.value == "ScaleDownStabilized", what="held")
        objs(api).patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "pa",
                                                 {"spec": {"signals": {"window": "2m"}}})
        wait(lambda: ctl.runners[key] is not first, what="runner of generation 2")
        second = ctl.runners[key]
        assert first.closed
        wait(lambda: second.ticks >= 3, what="3 ticks of generation 2")
        assert replicas(kube) == 20
        last = second.last
        assert last is not None and last.decision is not None
        assert last.decision.reason.value == "ScaleDownStabilized"
    finally:
        ctl.stop()


def _runner(kube: FakeKube, source: Manual, **over: Any) -> TargetRunner:
    act = KubernetesActuator(kube.api_client(retries=False), NS, "worker", sleep=lambda s: None)
    return TargetRunner(f"{NS}/pa", validate_spec(body(**over)), source, act)


def test_a_fresh_runner_holds_the_current_replicas_for_the_window(kube: FakeKube) -> None:
    """A (re)started controller finds the Deployment at 20 while 2 would do: like the
    HPA's recordInitialRecommendation, it holds 20 for the 300-s window, then scales."""
    kube.add_deployment(NS, "worker", replicas=20)
    r = _runner(kube, Manual(1.0), interval="15s")
    t = 1_800_000_000.0
    out = r.tick(t)
    assert out.decision is not None and out.decision.total == 20
    assert out.decision.reason.value == "ScaleDownStabilized"
    r.tick(t + 290)
    assert replicas(kube) == 20
    r.tick(t + 301)
    assert replicas(kube) == 2


def test_a_carried_state_drops_estimates_learned_under_another_spec() -> None:
    from autoscaler.config import to_policy_settings
    from autoscaler.core.policy import Policy

    a = to_policy_settings(validate_spec(body()))
    b = to_policy_settings(validate_spec(body(capacity={"requestsPerSecondPerReplica": 2.0})))
    st = Policy(a).seed(Policy(a).initial_state(), 100.0, 7)
    carried = Policy(b).carry(st, a)
    assert carried.hpa == st.hpa  # the window and the events stay
    assert carried.capacity is not None and carried.capacity.rps == 2.0
    assert Policy(a).carry(st, a) == st


# ---------------------------------------------------------------- failed write (2)
def test_a_failed_scale_write_does_not_spend_the_scale_up_limit(kube: FakeKube) -> None:
    """+4 pods per 60 s: the first write fails (503 beyond the actuator's retries), so the
    next tick may still add the 4 pods."""
    kube.add_deployment(NS, "worker", replicas=2)
    r = _runner(kube, Manual(10.0), interval="15s", behavior={
        "scaleUp": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}]}})
    t = 1_800_000_000.0
    kube.inject(503, verb="update", resource="deployments/scale", times=4)
    out = r.tick(t)
    assert out.errors and replicas(kube) == 2
    assert r.state.hpa.events == ()
    r.tick(t + 15)
    assert replicas(kube) == 6


# ---------------------------------------------------------------- watch (3, 4)
class BlackholeProxy:
    """TCP proxy to the API server that, once ``drop`` is set, swallows everything on
    watch connections (no data, no FIN: a half-open connection) and passes the rest."""

    def __init__(self, upstream_port: int) -> None:
        self.up = upstream_port
        self.drop = False
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for s in (self.sock, *self.conns):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.up))
            self.conns += [c, u]
            state = {"watch": False}
            for a, b, up in ((c, u, True), (u, c, False)):
                threading.Thread(target=self._pipe, args=(a, b, state, up), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, state: dict[str, bool],
              upstream: bool) -> None:
        try:
            while data := a.recv(65536):
                if upstream and b"watch=true" in data:
                    state["watch"] = True
                if not (state["watch"] and self.drop):
                    b.sendall(data)
        except OSError:
            pass
        if not (state["watch"] and self.drop):
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_a_silently_dropped_watch_times_out_and_relists(kube: FakeKube, api: Any) -> None:
    kube.add_deployment(NS, "worker", replicas=1)
    proxy = BlackholeProxy(int(kube.host.rsplit(":", 1)[1]))
    cfg = k8s.Configuration()
    cfg.host = f"http://127.0.0.1:{proxy.port}"
    cfg.retries = False
    via_proxy = k8s.ApiClient(cfg)
    ctl = make(via_proxy, Manual(1.0), watch_read_timeout_s=1.5)
    ctl.start()
    try:
        objs(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, resource("a"))
        wait(lambda: TargetKey(NS, "a") in ctl.runners, what="a")
        proxy.drop = True
        time.sleep(0.3)
        objs(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, resource("b"))
        objs(api).delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
        # the server ends its watches after 5 s, but the FIN never arrives: only the
        # client's read timeout (1.5 s) gets the loop to list again
        wait(lambda: set(ctl.runners) == {TargetKey(NS, "b")}, timeout_s=10,
             what="b added and a removed by a re-list")
        assert ctl.healthy()[0] and ctl.ready()[0]
    finally:
        ctl.stop()
        via_proxy.close()
        proxy.close()


def test_a_watch_that_cannot_make_progress_is_not_ready(kube: FakeKube, api: Any) -> None:
    """Lists fail for good: after ``watch_stall_s`` without an event or a completed
    list, /readyz says so."""
    now = [time.time()]
    ctl = make(api, Manual(1.0), clock=lambda: now[0])
    ctl.start()
    try:
        assert ctl.wait_synced(10)
        kube.inject(500, verb="list", resource=PLURAL, times=10_000)
        kube.close_watches()
        time.sleep(0.5)
        assert ctl.ready()[0]
        now[0] += ctl.watch_stall_s + 1
        ok, why = ctl.ready()
        assert not ok and "no watch event or list" in why
    finally:
        ctl.stop()


def test_a_resource_recreated_while_the_watch_was_down_is_picked_up(kube: FakeKube,
                                                                     api: Any) -> None:
    """Deleted and re-created (generation 1 again, new uid) while the re-lists failed:
    the next list sees the new uid and runs the new spec."""
    kube.add_deployment(NS, "old", replicas=1)
    kube.add_deployment(NS, "new", replicas=1)
    ctl = make(api, Manual(3.0))
    ctl.start()
    try:
        assert ctl.wait_synced(10)
        objs(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                  resource("pa", "old"))
        wait(lambda: replicas(kube, "old") == 6, what="old scaled")
        kube.inject(500, verb="list", resource=PLURAL, times=1)
        kube.close_watches()
        objs(api).delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "pa")
        objs(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                  resource("pa", "new", maxReplicas=4))
        wait(lambda: replicas(kube, "new") == 4, what="new scaled")
        r = ctl.runners[TargetKey(NS, "pa")]
        assert r.spec.scale_target_ref.name == "new"
    finally:
        ctl.stop()


# ---------------------------------------------------------------- removal fence (5)
def test_a_tick_in_flight_at_removal_leaves_no_series_and_no_write(kube: FakeKube) -> None:
    kube.add_deployment(NS, "worker", replicas=2)
    api = kube.api_client(retries=False)
    src = Manual(10.0)
    src.gate = threading.Event()
    m = ControllerMetrics()
    ctl = Controller(lambda key, spec: src,
                     lambda ns, dep: KubernetesActuator(api, ns, dep, sleep=lambda s: None),
                     metrics=m)
    key = TargetKey(NS, "pa")
    ctl.upsert(key, validate_spec(body()))
    ctl.start(watch=False)
    try:
        assert src.in_signals.wait(10)
        ctl.remove(key)
        src.gate.set()  # the tick goes on, with a decision to scale 2 -> 20
        time.sleep(1.0)
        assert 'target="llm/pa"' not in m.render()[0].decode()
        assert replicas(kube) == 2
    finally:
        src.gate.set()
        ctl.stop()


# ---------------------------------------------------------------- flapping signal (6)
@pytest.mark.parametrize("down", [False, True])
def test_a_flapping_signal_makes_no_event_storm_and_no_status_storm(kube: FakeKube,
                                                                    down: bool) -> None:
    """Demand missing (or Prometheus down) every other tick, so failureThreshold 3 is
    never reached: no MetricsFallback Event, FallbackActive stays False, one status write
    (then the 60-s heartbeat). Three missing ticks in a row engage it: one Event, not one
    per flip."""
    kube.add_deployment(NS, "worker", replicas=2)
    src = Manual(1.0)
    statuses: list[dict[str, Any]] = []
    act = KubernetesActuator(kube.api_client(retries=False), NS, "worker", sleep=lambda s: None)
    r = TargetRunner(f"{NS}/pa", validate_spec(body(interval="5s")), src, act,
                     write_status=lambda st: statuses.append(st) or None)
    t = 1_800_000_000.0

    def fallback_events() -> int:
        return sum(int(e.get("count") or 1) for e in kube.events(NS)
                   if e["reason"] == "MetricsFallback")

    def flap(missing: bool) -> None:
        src.demand, src.down = (None, False) if missing and not down else (1.0, missing)

    for k in range(10):  # 50 s
        flap(bool(k % 2))
        r.tick(t + 5 * k)
    assert fallback_events() == 0
    assert r.conditions.status_of("FallbackActive") == "False"
    assert len(statuses) == 1
    for k in range(10, 13):  # missing three ticks in a row
        flap(True)
        r.tick(t + 5 * k)
    assert r.conditions.status_of("FallbackActive") == "True"
    assert fallback_events() == 1
    for k in range(13, 40):  # flapping again, then three in a row again, within 10 min
        flap(bool(k % 2) or 30 <= k < 33)
        r.tick(t + 5 * k)
    assert fallback_events() == 1


# ---------------------------------------------------------------- refit retry (7)
def test_a_failed_first_history_fetch_is_retried_soon(kube: FakeKube, api: Any) -> None:
    """Prometheus is down when the target is added: the refit is retried with backoff
    (0.2 s, 0.4 s, ... here) instead of after refitEvery (1 h)."""
    src = Manual(1.0)
    src.history_down = True
    ctl = Controller(lambda key, spec: src, None, refit_retry_s=0.2)
    key = TargetKey(NS, "pa")
    ctl.upsert(key, validate_spec(body()))
    ctl.start(watch=False)
    try:
        wait(lambda: src.history_calls >= 3, timeout_s=10, what="3 history fetches")
        src.history_down = False
        wait(lambda: ctl.runners[key].refit_failures == 0, timeout_s=10, what="a refit")
        assert ctl.scheduler.get_job(f"refit-retry:{key}") is None
    finally:
        ctl.stop()


# ---------------------------------------------------------------- InvalidSpec (9)
def test_an_invalid_spec_seen_as_standby_is_reported_once_leading(kube: FakeKube,
                                                                  api: Any) -> None:
    objs(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, resource(
        "bad", minReplicas=10, maxReplicas=3))
    leader = [False]
    ctl = make(api, Manual(1.0), can_write=lambda: leader[0])
    ctl.invalid_status_every_s = 0.2
    ctl.start()
    try:
        wait(lambda: TargetKey(NS, "bad") in ctl.invalid, what="validated")
        time.sleep(0.5)
        assert "status" not in objs(api).get_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "bad")
        leader[0] = True  # the Lease is acquired after the resource was validated
        conds = wait(lambda: objs(api).get_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "bad").get("status", {}).get("conditions"),
            timeout_s=5, what="InvalidSpec condition")
        assert (conds[0]["reason"], conds[0]["status"]) == ("InvalidSpec", "False")
        time.sleep(1.0)  # written once, not by every run of the job
        writes = [w for w in kube.writes() if w[1] == f"{PLURAL}/status" and w[2] == "bad"]
        assert len(writes) == 1, writes
    finally:
        ctl.stop()


# ---------------------------------------------------------------- unusable demand (10)
@pytest.mark.parametrize(("why", "reason"), [
    ("query failed (PrometheusApiClientException: HTTP Status Code 400 (b'{\"status\":"
     "\"error\",\"errorType\":\"bad_data\",\"error\":\"1:47: parse error\"}')): sum(x) by",
     "MetricsInvalid"),
    ("value is inf (e.g. 0/0): missing: sum(demand_inf)", "MetricsInvalid"),
    ("returned 2 series (e.g. {'instance': 'a'}): demand_multi", "MetricsInvalid"),
    ("matched no series (missing data, not zero): sum(rate(typo[1m]))", "MetricsUnavailable"),
])
def test_an_unusable_demand_says_why_in_conditions_and_errors(why: str, reason: str) -> None:
    """Prometheus answers, but not with a usable demand (the source's errors, as the
    Prometheus adapter words them): the policy holds; once the fallback engages
    (3 ticks) Ready is False with the source's reason, and every such tick is counted."""

    class Bad(Manual):
        def signals(self, now_s: float) -> Signals:
            return Signals(now_s=now_s, demand_rps=None, errors={"demand_rps": why})

    m = ControllerMetrics()
    r = TargetRunner(f"{NS}/pa", validate_spec(body(interval="15s")), Bad(), None, metrics=m)
    t = 1_800_000_000.0
    r.tick(t)
    assert r.conditions.status_of("Ready") == "True"  # one bad tick: a plain hold
    for k in (1, 2):
        r.tick(t + 15 * k)
    assert (r.conditions.status_of("Ready"), r.conditions.reason_of("Ready")) == ("False",
                                                                                  reason)
    assert why[:40] in r.status()["conditions"][2]["message"]  # sorted by type: Ready last
    assert m.registry.get_sample_value("surgecast_controller_errors_total",
                                       {"target": f"{NS}/pa", "kind": reason}) == 3


# ---------------------------------------------------------------- the warm pool handed back
def _roles(kube: FakeKube) -> list[str]:
    return sorted(str((o["metadata"].get("labels") or {}).get("surgecast.io/role"))
                  for o in kube.pod_list(NS))


def test_the_warm_pool_is_handed_back_when_the_controller_stops_writing(
        kube: FakeKube, api: Any) -> None:
    """Pods start active and the controller demotes some to warm. When it stops writing
    for the target (spec moved to Observe, resource deleted) it labels them active again:
    otherwise they would stay out of the Service for good. An Observe runner writes
    nothing when it goes."""
    kube.add_deployment(NS, "worker", replicas=4)
    ctl = make(api, Manual(1.0))  # 1 req/s at 50 % of 1 req/s: 2 active
    key = TargetKey(NS, "pa")
    auto = validate_spec(body(warmPool={"minReplicas": 2, "maxReplicas": 2}))
    t = 1_800_000_000.0
    ctl.upsert(key, auto, 1, "uid-1").tick(t)
    assert _roles(kube) == ["active", "active", "warm", "warm"]
    ctl.upsert(key, validate_spec(body(warmPool={"minReplicas": 2, "maxReplicas": 2},
                                       mode="Observe")), 2, "uid-1").tick(t + 1)
    assert _roles(kube) == ["active"] * 4
    released = [e for e in kube.events(NS) if e["reason"] == "WarmPoolReleased"]
    assert len(released) == 1 and "mode Observe" in released[0]["message"]
    ctl.remove(key)  # an Observe runner gone: nothing more to write
    assert len([e for e in kube.events(NS) if e["reason"] == "WarmPoolReleased"]) == 1
    ctl.upsert(key, auto, 3, "uid-1").tick(t + 2)
    assert _roles(kube) == ["active", "active", "warm", "warm"]
    ctl.remove(key)  # deleted (or invalid): handed back
    assert _roles(kube) == ["active"] * 4
    assert len([e for e in kube.events(NS) if e["reason"] == "WarmPoolReleased"]) == 2
    ctl.scheduler.remove_all_jobs()


def test_an_unusable_selector_is_a_condition_named_invalid_selector(kube: FakeKube) -> None:
    kube.add_deployment(NS, "worker", replicas=2)
    dep = kube.objects[("deployments", NS, "worker")]
    dep["spec"]["selector"] = {"matchExpressions": [{"key": "app", "operator": "Near",
                                                     "values": ["x"]}]}
    r = _runner(kube, Manual(1.0))
    out = r.tick(1_800_000_000.0)
    assert out.decision is None
    ready = {c["type"]: c for c in r.status()["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSelector")
    assert "Near" in ready["message"]


# ---------------------------------------------------------------- two resources, one Deployment
def _ready_reason(api: Any, name: str) -> str | None:
    conds = (objs(api).get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
             .get("status", {}).get("conditions") or [])
    return next((c["reason"] for c in conds if c["type"] == "Ready"), None)


def test_two_resources_on_one_deployment_the_older_scales_the_other_waits(
        kube: FakeKube, api: Any) -> None:
    """Like the HPA's AmbiguousSelector: the older resource (creationTimestamp, then name)
    scales the Deployment; the other is refused with Ready=False/AmbiguousTarget, even when
    it is listed first, and is admitted once the older one is deleted. Before, both ran and
    the replicas flipped between their plans."""
    kube.add_deployment(NS, "worker", replicas=1)
    objs(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, resource(
        "pa-z", maxReplicas=4))  # older: 1 req/s wants 2, at most 4
    kube.advance(5)
    objs(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, resource(
        "pa-a", minReplicas=16, maxReplicas=30))  # newer, listed first: it wants 16
    ctl = make(api, Manual(1.0))
    ctl.invalid_status_every_s = 0.2
    ctl.start()
    try:
        wait(lambda: _ready_reason(api, "pa-a") == "AmbiguousTarget", what="pa-a refused")
        assert set(ctl.runners) == {TargetKey(NS, "pa-z")}
        wait(lambda: replicas(kube) == 2, what="pa-z's plan")
        time.sleep(2.0)  # several ticks: nobody flips it
        assert replicas(kube) == 2
        assert set(ctl.runners) == {TargetKey(NS, "pa-z")}
        objs(api).delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "pa-z")
        wait(lambda: TargetKey(NS, "pa-a") in ctl.runners, what="pa-a admitted")
        wait(lambda: replicas(kube) == 16, what="pa-a's plan")
    finally:
        ctl.stop()


# ---------------------------------------------------------------- forecaster carried (13)
def test_an_edit_the_forecast_does_not_depend_on_keeps_the_fitted_forecaster(
    kube: FakeKube,
) -> None:
    """A new maxReplicas or behavior keeps the fitted forecaster (its history, the adapted
    quantile) and the prediction guard's record; a new forecast model, step or demand
    query starts them afresh. Before, every edit refitted from an empty forecaster and
    the guard started with no record."""
    kube.add_deployment(NS, "worker", replicas=1)
    src = Manual(2.0)
    first = _runner(kube, src)
    first.tick(1_800_000_000.0)

    def edited(**over: Any) -> TargetRunner:
        new = _runner(kube, src, **over)
        new.carry_from(first)
        return new

    for same in (edited(maxReplicas=40), edited(minReplicas=2),
                 edited(behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 4,
                                                            "periodSeconds": 15}]}})):
        assert same.live is first.live and same.guard is first.guard
        assert same._lock is first._lock  # a refit of the old runner still holds it
    forecast = dict(body()["forecast"])
    for fresh in (edited(forecast={**forecast, "model": "nowcast"}),
                  edited(forecast={**forecast, "step": "2m"}),
                  edited(signals={"window": "2m"}),
                  edited(capacity={"requestsPerSecondPerReplica": 1.0,
                                   "targetUtilization": 0.7})):
        assert fresh.live is not first.live and fresh.guard is not first.guard
