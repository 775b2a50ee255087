"""The monitoring manifests (``manifests/monitoring/``) checked with Prometheus' own tools.

- Structure: the PodMonitors select the pods of our Deployments, name ports those pods
  have, scrape often enough for the sample's rate window, and turn the pod label into the
  series label that the sample PredictiveAutoscaler's selector matches.
- ``promtool check rules`` and ``promtool test rules`` (``alerts_test.yaml``): every alert
  fires when it should, with its labels and rendered summary, and not on the standby
  replica's copies, in Observe mode, or on errors that stopped. A mutated rules file (the
  leader filter removed) must fail those tests, so they can fail.
- Live: a real Prometheus loads the rules and scrapes two real controller servers (the
  leader and a standby, their ``ControllerMetrics`` written as the loop writes them) and two
  real worker expositions (``WorkerMetrics``; one with the worker's NVML collector over a
  stand-in driver, since there is no GPU here), labelled as the PodMonitors label them.
  Every rule evaluates without error, the alerts for the state written are pending with the
  leader's labels only, every dashboard query returns series (and none of the standby's),
  the dashboard's variables find their values, and the sample's signal queries read the
  workers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "adapters"))
from prom_fixture import PrometheusServer, find_binaries

from autoscaler.adapters.prometheus import PrometheusSource
from autoscaler.config import source_kwargs, validate_resource
from autoscaler.controller.metrics import ControllerMetrics
from autoscaler.controller.server import ControllerServer
from model_worker.metrics import MetricsServer, WorkerMetrics, _NvmlCollector

REPO = Path(__file__).resolve().parents[2]
MON = REPO / "manifests" / "monitoring"
RULE = MON / "prometheusrule.yaml"
DASHBOARD = MON / "dashboards" / "surgecast.json"
SAMPLE = REPO / "manifests" / "samples" / "predictiveautoscaler.yaml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
LEADER_FILTER = " and on(instance) (surgecast_controller_leader == 1)"
TARGET = "llm/surgecast-worker"
#: controller series with a ``target`` label: both replicas export them (the standby ticks too)
PER_TARGET = re.compile(r"surgecast_controller_(desired_replicas|ready_replicas|active_replicas"
                        r"|warm_replicas|fallback_active|errors_total|last_tick|applying"
                        r"|prediction_enabled|forecast_|demand_|decisions_total"
                        r"|scaling_quantile|simpler_model)")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _by_name(path: Path) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _docs(path)}


def _rules() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(RULE.read_text())["spec"]
    return spec


def _alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in _rules()["groups"] for r in g["rules"] if "alert" in r}


def _promtool() -> str:
    bins = find_binaries()
    if bins is None:
        pytest.skip("prometheus/promtool not found on PATH: run `make system-deps` (Debian)")
    return bins[1]


def _label(name: str) -> str:
    """A Kubernetes label as the Prometheus Operator writes it on series (podTargetLabels)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


# ------------------------------------------------------------------ structure
def test_kustomization_lists_every_file_and_the_dashboard() -> None:
    kust = yaml.safe_load((MON / "kustomization.yaml").read_text())
    for f in kust["resources"]:
        assert (MON / f).is_file(), f
    gen = kust["configMapGenerator"]
    assert [g["name"] for g in gen] == ["surgecast-dashboard"]
    assert [MON / f for f in gen[0]["files"]] == [DASHBOARD]
    # Grafana's dashboard sidecar picks ConfigMaps by this label; a stable name for overlays
    assert kust["generatorOptions"]["labels"]["grafana_dashboard"] == "1"
    assert kust["generatorOptions"]["disableNameSuffixHash"] is True


@pytest.mark.parametrize(("monitor", "manifest"), [
    ("surgecast-worker", REPO / "manifests" / "worker" / "deployment.yaml"),
    ("surgecast-controller", REPO / "manifests" / "controller" / "deployment.yaml"),
])
def test_podmonitor_selects_the_deployment_pods_on_a_port_they_have(
        monitor: str, manifest: Path) -> None:
    pm = _by_name(MON / "podmonitors.yaml")[monitor]
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["kind"] == "PodMonitor"
    dep = _by_name(manifest)[monitor]
    tpl = dep["spec"]["template"]
    labels = tpl["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for c in tpl["spec"]["containers"]
             for p in c.get("ports", [])}
    ann = tpl["metadata"]["annotations"]
    for ep in pm["spec"]["podMetricsEndpoints"]:
        assert ep["port"] in ports
        # the same endpoint as the annotations that plain Prometheus setups scrape
        assert str(ports[ep["port"]]) == ann["prometheus.io/port"]
        assert ep["path"] == ann["prometheus.io/path"]


def test_worker_podmonitor_gives_series_the_labels_the_sample_selects_on() -> None:
    pm = _by_name(MON / "podmonitors.yaml")["surgecast-worker"]
    sample = validate_resource(yaml.safe_load(SAMPLE.read_text()))
    matchers = dict(re.findall(r'(\w+)="([^"]*)"', sample.spec.signals.selector))
    assert matchers, sample.spec.signals.selector
    # the operator adds namespace; the rest must come from podTargetLabels
    carried = {_label(k): k for k in pm["spec"]["podTargetLabels"]}
    dep = _by_name(REPO / "manifests" / "worker" / "deployment.yaml")["surgecast-worker"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for name, value in matchers.items():
        if name == "namespace":
            assert value in pm["spec"]["namespaceSelector"]["matchNames"]
        else:
            assert name in carried, f"no podTargetLabel becomes {name}"
            assert pod_labels[carried[name]] == value
    # the role label flips on promotion: carrying it would start new series (and rate())
    assert "surgecast.io/role" not in pm["spec"]["podTargetLabels"]
    # at least 4 scrapes per rate window, as docs/configuration.md asks
    window_s = {"s": 1, "m": 60}[sample.spec.signals.window[-1]] * int(
        sample.spec.signals.window[:-1])
    for ep in pm["spec"]["podMetricsEndpoints"]:
        assert 4 * int(ep["interval"].rstrip("s")) <= window_s


def test_every_alert_is_documented_and_leader_filtered_where_both_replicas_report() -> None:
    alerts = _alerts()
    assert len(alerts) >= 10
    for name, r in alerts.items():
        assert name.startswith("Surgecast"), name
        assert r["labels"]["severity"] in ("critical", "warning", "info")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        # descriptions are static (the test fills them in as promtool's expected values)
        assert "{{" not in r["annotations"]["description"], name
        if PER_TARGET.search(r["expr"]):
            assert ("surgecast_controller_leader == 1" in r["expr"]
                    or "surgecast_controller_applying == 1" in r["expr"]), name


# ------------------------------------------------------------------ promtool
def _write_rules(tmp: Path, rules: dict[str, Any]) -> Path:
    path = tmp / "surgecast.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def _write_alert_tests(tmp: Path) -> Path:
    """alerts_test.yaml with each expected alert's static description filled in."""
    desc = {n: r["annotations"]["description"] for n, r in _alerts().items()}
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            for exp in check["exp_alerts"]:
                exp["exp_annotations"]["description"] = desc[check["alertname"]]
    path = tmp / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    return path


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    path = _write_rules(tmp_path, _rules())
    out = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in out.stdout


def test_every_alert_has_a_promtool_unit_test() -> None:
    tested = {c["alertname"] for t in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
              for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert tested == set(_alerts())


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    _write_rules(tmp_path, _rules())
    out = subprocess.run([_promtool(), "test", "rules", str(_write_alert_tests(tmp_path))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_catch_a_rule_without_its_leader_filter(tmp_path: Path) -> None:
    rules = _rules()
    for g in rules["groups"]:
        for r in g["rules"]:
            r["expr"] = r["expr"].replace("and on(instance) (surgecast_controller_leader == 1)",
                                          "")
    _write_rules(tmp_path, rules)
    out = subprocess.run([_promtool(), "test", "rules", str(_write_alert_tests(tmp_path))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    for alert in ("SurgecastTargetStalled", "SurgecastTargetErrors", "SurgecastFallbackActive"):
        assert f"alertname: {alert}" in out.stdout + out.stderr


# ------------------------------------------------------------------ live
class _Nvml:
    """A stand-in NVML driver (no GPU here) for the worker's real collector."""

    class _Util:
        gpu = 63

    class _Mem:
        used = 30 * 2**30

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return self._Util()

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return self._Mem()


@dataclass
class Live:
    prom: PrometheusServer
    leader: str  # instance (host:port) of the leader's controller server
    standby: str

    def get(self, path: str, **params: Any) -> Any:
        url = f"{self.prom.url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result


def _controller(leader: bool) -> ControllerMetrics:
    """One controller replica's metrics, written as the loop writes them for one target."""
    m = ControllerMetrics()
    m.set_leader(leader)
    m.set_targets(1)
    m.observe_tick(TARGET, reason="ForecastLead", desired=6, active=5, warm=1, ready=4,
                   demand_rps=12.5, forecast_rps={0.5: 14.0, 0.9: 18.0}, duration_s=0.004,
                   fetch_s=0.002)
    m.observe_forecast_quality(TARGET, mae=1.2, reactive_mae=2.5, coverage=0.91,
                               prediction_enabled=True, quantile=0.9)
    m.set_fallback(TARGET, True)  # the state the alert test expects pending
    m.set_applying(TARGET, leader)
    m.count_error(TARGET, "MetricsUnavailable")
    m.count_refit(TARGET, ok=True, duration_s=0.8)
    return m


def _traffic(workers: list[WorkerMetrics], ctls: list[ControllerMetrics],
             stop: threading.Event) -> None:
    """Counters and histograms that move between scrapes, so rate() has something to see."""
    i = 0
    while not stop.is_set():
        i += 1
        for w in workers:
            w.count_request("/v1/chat/completions", 429 if i % 5 == 0 else 200)
            w.e2e.observe(0.8)
            w.queue_time.observe(0.05)
            w.ttft.observe(0.3)
            w.tpot.observe(0.02)
            w.batch_size.observe(8)
            w.prompt_tokens.inc(120)
            w.generation_tokens.inc(40)
            (w.cache_hits if i % 3 == 0 else w.cache_misses).inc()
        for c in ctls:
            c.observe_tick(TARGET, reason="ForecastLead" if i % 4 else "ReactiveFloor",
                           desired=6, active=5, warm=1, ready=4, demand_rps=12.5,
                           forecast_rps={0.5: 14.0, 0.9: 18.0}, duration_s=0.004,
                           fetch_s=0.002)
            c.count_error(TARGET, "MetricsUnavailable")
            c.count_refit(TARGET, ok=True, duration_s=0.8)
        stop.wait(0.1)


def _config(rules: Path, ctl: dict[str, str], workers: dict[str, str]) -> str:
    """Scrape jobs labelled as the PodMonitors label them (namespace, pod, podTargetLabels)."""
    def job(name: str, ns: str, app: str, pods: dict[str, str]) -> dict[str, Any]:
        return {"job_name": f"surgecast-system/{name}", "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [addr], "labels": {
                    "namespace": ns, "pod": pod, "app_kubernetes_io_name": app}}
                    for pod, addr in pods.items()]}
    return yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            job("surgecast-controller", "surgecast-system", "surgecast-controller", ctl),
            job("surgecast-worker", "llm", "surgecast-worker", workers)],
    })


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    bins = find_binaries()
    if bins is None:
        pytest.skip("prometheus/promtool not found on PATH: run `make system-deps` (Debian)")
    tmp = tmp_path_factory.mktemp("monitoring")
    rules = _write_rules(tmp, _rules())
    ctls = [_controller(True), _controller(False)]
    servers = [ControllerServer(c, host="127.0.0.1", port=0) for c in ctls]
    for s in servers:
        s.start()
    active, warm = WorkerMetrics("m", gpu=False), WorkerMetrics("m", gpu=False)
    active.set_state("active")
    warm.set_state("warm")
    warm.registry.register(_NvmlCollector(_Nvml(), 1))
    worker_servers = [MetricsServer(w, "127.0.0.1", 0) for w in (active, warm)]
    stop = threading.Event()
    mover = threading.Thread(target=_traffic, args=([active, warm], ctls, stop), daemon=True)
    mover.start()
    addr = [f"127.0.0.1:{s.port}" for s in servers]
    config = _config(rules, {"ctl-a": addr[0], "ctl-b": addr[1]},
                     {"w-0": f"127.0.0.1:{worker_servers[0].port}",
                      "w-1": f"127.0.0.1:{worker_servers[1].port}"})
    prom = PrometheusServer(bins[0], tmp / "tsdb", config=config)
    try:
        with prom:
            lv = Live(prom, leader=addr[0], standby=addr[1])
            # rates need two scrapes of both jobs, alerts one evaluation after that
            for counter in ("surgecast_worker_requests_total",
                            "surgecast_controller_decisions_total"):
                prom.wait_for(f"count(sum by (pod) (rate({counter}[10s])) > 0) == 2")
            prom.wait_for('ALERTS{alertname="SurgecastFallbackActive"}')
            yield lv
    finally:
        stop.set()
        mover.join(timeout=5)
        for s in servers:
            s.stop()
        for w in worker_servers:
            w.close()


def test_prometheus_evaluates_every_rule_without_error(live: Live) -> None:
    deadline = time.monotonic() + 20
    while True:
        rules = [r for g in live.get("/api/v1/rules")["groups"] for r in g["rules"]]
        if all(r.get("lastEvaluation", "").startswith("20") for r in rules):
            break
        assert time.monotonic() < deadline, "rules not all evaluated within 20 s"
        time.sleep(0.5)
    assert {r["name"] for r in rules} == set(_alerts())
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad


def test_alerts_for_the_written_state_are_pending_for_the_leader_only(live: Live) -> None:
    deadline = time.monotonic() + 20
    want = {"SurgecastFallbackActive", "SurgecastReplicasNotReady", "SurgecastTargetErrors",
            "SurgecastWorkerShedding"}
    while True:
        alerts = live.get("/api/v1/alerts")["alerts"]
        names = {a["labels"]["alertname"] for a in alerts}
        if want <= names:
            break
        assert time.monotonic() < deadline, f"pending: {sorted(names)}, wanted {sorted(want)}"
        time.sleep(0.5)
    by = {a["labels"]["alertname"]: [x for x in alerts
                                     if x["labels"]["alertname"] == a["labels"]["alertname"]]
          for a in alerts}
    for name in ("SurgecastFallbackActive", "SurgecastReplicasNotReady",
                 "SurgecastTargetErrors"):
        (a,) = by[name]  # one: the standby's identical series are filtered out
        assert a["state"] == "pending"  # for: minutes
        assert a["labels"]["instance"] == live.leader
        assert a["labels"]["target"] == TARGET
    (shed,) = by["SurgecastWorkerShedding"]
    assert shed["labels"]["namespace"] == "llm"
    assert "of requests in llm are refused with 429" in shed["annotations"]["summary"]
    # one leader, everything fast, nothing loading: these stay quiet
    for quiet in ("SurgecastLeaderCount", "SurgecastControllerAbsent", "SurgecastTickSlow",
                  "SurgecastWorkerStuckLoading", "SurgecastTargetStalled",
                  "SurgecastPredictionOff", "SurgecastForecastUnderCovers",
                  "SurgecastSimplerModel"):
        assert quiet not in by


def _dashboard() -> dict[str, Any]:
    d: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return d


def _panel_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _dashboard()["panels"] if p["type"] != "row"
            for t in p["targets"]]


def _substitute(expr: str) -> str:
    """Grafana's variables as Grafana fills them: All targets, the worker namespace."""
    return (expr.replace("$target", ".*").replace("$namespace", "llm")
            .replace("$__rate_interval", "10s"))


def test_dashboard_is_well_formed() -> None:
    d = _dashboard()
    assert d["uid"] == "surgecast" and d["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in d["templating"]["list"]}
    assert variables == {"datasource", "namespace", "target"}
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"]
            used = set(re.findall(r"\$(\w+)", json.dumps(p["targets"])))
            assert used <= variables | {"__rate_interval"}, (p["title"], used)


@pytest.mark.parametrize(("title", "expr"), _panel_exprs(), ids=[
    f"{t}/{i}" for i, (t, _) in enumerate(_panel_exprs())])
def test_every_dashboard_query_returns_series(live: Live, title: str, expr: str) -> None:
    result = live.query(_substitute(expr))
    assert result, f"{title}: {expr} returned nothing"
    if PER_TARGET.search(expr):  # the standby's copies of per-target series stay out
        assert LEADER_FILTER.strip() in expr, title
        assert {r["metric"].get("instance", live.leader) for r in result} == {live.leader}
    for r in result:
        v = float(r["value"][1])
        assert v == v, f"{title}: NaN from {expr}"  # 0/0 or an empty histogram


def test_dashboard_variables_find_their_values(live: Live) -> None:
    for var in _dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"])
        assert m, var["query"]
        # what Grafana sends for label_values(metric, label)
        values = live.get(f"/api/v1/label/{m.group(2)}/values", **{"match[]": m.group(1)})
        assert values == {"namespace": ["llm"], "target": [TARGET]}[var["name"]]


def test_the_sample_reads_the_workers_through_podmonitor_labels(live: Live) -> None:
    spec = validate_resource(yaml.safe_load(SAMPLE.read_text())).spec
    src = PrometheusSource(live.prom.url, **source_kwargs(spec))
    sig = src.signals(time.time())
    assert sig.demand_rps is not None and sig.demand_rps > 0, sig
    assert sig.gpu_util_ratio is not None and abs(sig.gpu_util_ratio - 0.63) < 1e-9, sig
