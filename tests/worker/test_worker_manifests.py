"""The worker manifests agree with the worker: probe paths exist, the drain fits in the
termination grace period, the Service selects active pods, replicas are left to the controller."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2] / "manifests" / "worker"


def test_deployment_matches_the_worker(tiny_model_dir: Path) -> None:
    from model_worker.api import create_app
    from model_worker.config import WorkerConfig, load_config

    dep = yaml.safe_load((ROOT / "deployment.yaml").read_text())
    assert "replicas" not in dep["spec"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    cfg = load_config([], env)  # every env var is a real, valid setting
    assert cfg.role_file == Path("/etc/podinfo/labels") and cfg.start_role == "active"
    # auto: one torch host thread on the GPU (the fastest on the H200 run), not a pool
    assert cfg.torch_threads == 0
    routes = {r.path for r in create_app(WorkerConfig(model_path=tiny_model_dir)).routes}  # type: ignore[attr-defined]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] in routes
    pre_stop_s = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > cfg.grace_period_s + pre_stop_s
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    # fail-safe: new pods serve once Ready; only a writing controller makes pods warm, so
    # mode Observe, a deleted PredictiveAutoscaler or a stopped controller never empty the
    # Service (it selects role=active)
    assert dep["spec"]["template"]["metadata"]["labels"]["surgecast.io/role"] == "active"
    svc = yaml.safe_load((ROOT / "service.yaml").read_text())
    template_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= template_labels.items()


def test_service_selects_active_pods_and_pdb_exists() -> None:
    svc = yaml.safe_load((ROOT / "service.yaml").read_text())
    assert svc["spec"]["selector"]["surgecast.io/role"] == "active"
    pdb = yaml.safe_load((ROOT / "pdb.yaml").read_text())
    assert pdb["kind"] == "PodDisruptionBudget"
    kust = yaml.safe_load((ROOT / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == ["deployment.yaml", "pdb.yaml", "priorityclass.yaml",
                                         "service.yaml"]


def test_worker_manifests_validate_strictly_from_kubernetes_1_30() -> None:
    """Every worker object against the Kubernetes OpenAPI schemas, strict (no unknown field).

    1.30 is the floor docs/model-worker.md states: the ``preStop`` ``sleep`` action is beta and
    on by default from 1.30 (1.29 has the field, alpha, behind a gate that is off); an older API
    server drops it and the drain races the endpoint removal. The Deployment must fail on 1.28's
    schema, which has no such field: the check can see the floor.
    """
    import kubernetes_validate

    objects = [d for name in ("priorityclass", "deployment", "service", "pdb")
               for d in yaml.safe_load_all((ROOT / f"{name}.yaml").read_text()) if d]
    assert [o["kind"] for o in objects] == ["PriorityClass", "Deployment", "Service",
                                            "PodDisruptionBudget"]
    for version in ("1.30", kubernetes_validate.latest_version()):
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError, match="sleep"):
        kubernetes_validate.validate(objects[1], "1.28", strict=True)
