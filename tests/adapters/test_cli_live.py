"""``surgecast dry-run`` live mode and ``surgecast run`` against a real Prometheus and the
fake API server (through a kubeconfig, as a user would point them at a cluster)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_kube import FakeKube
from kubernetes import client as k8s
from prom_fixture import PromEnv

from autoscaler.adapters.kubernetes import ReadOnlyViolation, load_api_client
from autoscaler.cli import main
from autoscaler.config import crd
from autoscaler.controller.status import GROUP, PLURAL, VERSION

NS, DEP = "llm", "worker"

SPEC: dict[str, Any] = {
    "scaleTargetRef": {"name": DEP},
    "minReplicas": 2, "maxReplicas": 20,
    "signals": {"preset": "surgecast", "gpu": "none", "selector": 'job="live"',
                "window": "15s"},
    "forecast": {"model": "seasonal_naive", "history": "1h", "step": "1m"},
    "capacity": {"requestsPerSecondPerReplica": 1.0},
    "interval": "2s",
}


def kubeconfig(tmp_path: Path, kube: FakeKube) -> Path:
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": kube.host}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
    }
    p = tmp_path / "kubeconfig"
    p.write_text(yaml.safe_dump(cfg))
    return p


def cluster_with_pa(kube: FakeKube, *, replicas: int, min_replicas: int) -> Any:
    """The CRD, the worker Deployment and a PredictiveAutoscaler ``pa`` on the fake; its
    API client."""
    api = kube.api_client()
    k8s.ApiextensionsV1Api(api).create_custom_resource_definition(crd())
    kube.add_deployment(NS, DEP, replicas=replicas)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PredictiveAutoscaler",
            "metadata": {"name": "pa", "namespace": NS},
            "spec": {**SPEC, "minReplicas": min_replicas}}
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    return api


def spec_file(tmp_path: Path, **over: Any) -> Path:
    p = tmp_path / "pa.yaml"
    p.write_text(yaml.safe_dump({**SPEC, **over}))
    return p


def test_dry_run_live_with_no_cluster_prints_a_decision(
        prom: PromEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prom.live.requests.inc(30)
    rc = main(["dry-run", "--prometheus", prom.url, "--target", f"{NS}/pa", "--config",
               str(spec_file(tmp_path)), "--once", "--no-cluster"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    lines = out.out.splitlines()
    assert "read-only" in lines[0] and "assuming 2 ready active pods" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("time (UTC)"))
    row = lines[header + 1].split()
    assert len(lines) == header + 2
    assert int(row[5]) >= 2  # active replicas, at least minReplicas


def test_dry_run_live_with_prometheus_down_holds_and_says_why(
        dead_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["dry-run", "--prometheus", dead_url, "--target", f"{NS}/pa", "--config",
               str(spec_file(tmp_path)), "--once", "--no-cluster", "--replicas", "5",
               "--prometheus-timeout", "0.5"])
    out = capsys.readouterr()
    assert rc == 0
    row = out.out.splitlines()[-1]
    assert "StaleMetricsHold" in row or "Fallback" in row, row
    assert row.split()[5] == "5"  # held at the 5 pods it was told exist, never lower
    assert "MetricsUnavailable" in out.err


def test_dry_run_reads_the_cluster_and_never_writes(
        prom: PromEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeKube() as kube:
        cluster_with_pa(kube, replicas=3, min_replicas=6)
        writes = len(kube.writes())
        rc = main(["dry-run", "--prometheus", prom.url, "--target", f"{NS}/pa",
                   "--kubeconfig", str(kubeconfig(tmp_path, kube)), "--ticks", "2"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "cluster (read-only)" in out.out
        rows = out.out.splitlines()[-2:]
        # spec from the cluster (minReplicas 6) against the cluster's 3 pods: it would
        # scale up, and says so, but writes nothing
        assert all(int(r.split()[7]) >= 6 for r in rows), rows  # total
        assert len(kube.writes()) == writes
        assert kube.objects[("deployments", NS, DEP)]["spec"]["replicas"] == 3
        # the read-only client refuses a write before it leaves the process
        ro = load_api_client(str(kubeconfig(tmp_path, kube)), read_only=True)
        with pytest.raises(ReadOnlyViolation):
            k8s.AppsV1Api(ro).patch_namespaced_deployment_scale(
                DEP, NS, {"spec": {"replicas": 9}})
        assert len(kube.writes()) == writes


def test_dry_run_bad_input_is_a_usage_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dry-run", "--prometheus", "http://x", "--target", "nope", "--config",
                 str(spec_file(tmp_path)), "--no-cluster"]) == 2
    assert "NAMESPACE/NAME" in capsys.readouterr().err
    assert main(["dry-run", "--prometheus", "http://x", "--target", "a/b",
                 "--no-cluster"]) == 2
    assert "--config" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("scaleTargetRef: {name: w}\ncapacity: {requestsPerSecondPerReplica: -1}\n")
    assert main(["dry-run", "--prometheus", "http://x", "--target", "a/b", "--config",
                 str(bad), "--no-cluster"]) == 2
    assert "requestsPerSecondPerReplica" in capsys.readouterr().err
    # a missing CA file or a non-finite timeout used to crash in the first query
    for flag, value, message in [
            ("--prometheus-ca-file", str(tmp_path / "ca.pem"), "ca.pem: not found"),
            ("--prometheus-timeout", "inf", "--prometheus-timeout must be a finite number")]:
        assert main(["dry-run", "--prometheus", "http://x", "--target", "a/b", "--config",
                     str(spec_file(tmp_path)), "--no-cluster", flag, value]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_run_scales_serves_health_and_stops_cleanly_on_sigterm(
        prom: PromEnv, tmp_path: Path) -> None:
    """`surgecast run` as a process: leader election, watch, scaling, /readyz, /metrics,
    SIGTERM -> exit 0 with the Lease released."""
    from prom_fixture import free_port

    with FakeKube() as kube:
        api = cluster_with_pa(kube, replicas=1, min_replicas=3)
        port = free_port()
        env = {**os.environ, "POD_NAMESPACE": "surgecast-system", "POD_NAME": "ctl-0"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "autoscaler.cli", "run", "--prometheus", prom.url,
             "--kubeconfig", str(kubeconfig(tmp_path, kube)), "--metrics-port", str(port),
             "--metrics-host", "127.0.0.1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # The tick writes the scale subresource first and the PA's status after it:
            # wait for both, or the status read races the second write.
            deadline = time.time() + 30
            while time.time() < deadline:
                pa = kube.objects[(f"{PLURAL}.{GROUP}", NS, "pa")]
                if (kube.objects[("deployments", NS, DEP)]["spec"]["replicas"] >= 3
                        and "desiredReplicas" in pa.get("status", {})):
                    break
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
            assert kube.objects[("deployments", NS, DEP)]["spec"]["replicas"] >= 3
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            code, text = _get(f"http://127.0.0.1:{port}/readyz")
            assert code == 200, text
            code, text = _get(f"http://127.0.0.1:{port}/metrics")
            assert code == 200 and "surgecast_controller_leader 1.0" in text
            lease = kube.objects[("leases", "surgecast-system", "surgecast-controller")]
            assert lease["spec"]["holderIdentity"] == "ctl-0"
            st = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, NS, PLURAL, "pa")
            assert st["status"]["desiredReplicas"] >= 3
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "stopped" in out
        lease = kube.objects[("leases", "surgecast-system", "surgecast-controller")]
        assert not lease["spec"].get("holderIdentity")  # released for a standby
        print(json.dumps(lease["spec"]))
