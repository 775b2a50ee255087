"""The controller's manifests: they parse, the CRD cannot drift, RBAC is least privilege."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from autoscaler.config import crd, crd_yaml, validate_resource

REPO = Path(__file__).resolve().parents[2]
CONTROLLER = REPO / "manifests" / "controller"
SAMPLE = REPO / "manifests" / "samples" / "predictiveautoscaler.yaml"
ADAPTER = REPO / "autoscaler" / "adapters" / "kubernetes.py"

#: (apiGroup, resource) -> verbs: exactly what the controller's code needs.
EXPECTED_RBAC: dict[tuple[str, str], set[str]] = {
    ("apps", "deployments"): {"get"},
    ("apps", "deployments/scale"): {"get", "update"},
    ("", "pods"): {"list", "patch"},
    ("", "events"): {"create"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    ("surgecast.io", "predictiveautoscalers"): {"list", "watch"},
    ("surgecast.io", "predictiveautoscalers/status"): {"patch"},
}


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_docs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in sorted(CONTROLLER.glob("*.yaml")) + sorted(SAMPLE.parent.glob("*.yaml")):
        out.extend(docs(p))
    return out


def openapi_schema() -> dict[str, Any]:
    (crd_doc,) = docs(CONTROLLER / "crd.yaml")
    schema: dict[str, Any] = crd_doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in all_docs() if d.get("kind") == kind]


# ----------------------------------------------------------------------------- parsing
def test_every_manifest_parses_and_names_its_kind() -> None:
    found = all_docs()
    assert len(found) >= 8
    for d in found:
        assert d.get("apiVersion") and d.get("kind"), d
        if d["kind"] != "Kustomization":
            assert d["metadata"].get("name"), d


def test_kustomization_lists_every_controller_manifest() -> None:
    (k,) = docs(CONTROLLER / "kustomization.yaml")
    listed = set(k["resources"])
    on_disk = {p.name for p in CONTROLLER.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert k["namespace"] == "surgecast-system"


# ----------------------------------------------------------------------------- CRD
def test_crd_file_equals_the_generator_output() -> None:
    assert (CONTROLLER / "crd.yaml").read_text() == crd_yaml(), (
        "manifests/controller/crd.yaml is stale: run "
        "`python -m autoscaler.config --crd > manifests/controller/crd.yaml`"
    )


def _walk(node: dict[str, Any], path: str) -> list[str]:
    """Problems that make a schema non-structural or unsupported by apiextensions/v1."""
    problems: list[str] = []
    for bad in ("$ref", "anyOf", "oneOf", "allOf", "const", "title", "$defs", "uniqueItems"):
        if bad in node:
            problems.append(f"{path}: has {bad}")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            problems.append(f"{path}: {key} must be a boolean in OpenAPI v3.0")
    if "default" in node:
        try:
            jsonschema.Draft4Validator(node).validate(node["default"])
        except jsonschema.ValidationError as exc:
            problems.append(f"{path}: default does not validate: {exc.message}")
    for name, child in node.get("properties", {}).items():
        problems.extend(_walk(child, f"{path}.{name}"))
    if "items" in node:
        problems.extend(_walk(node["items"], f"{path}[]"))
    return problems


def test_crd_schema_is_structural() -> None:
    assert _walk(openapi_schema(), "") == []
    (c,) = by_kind("CustomResourceDefinition")
    assert c["apiVersion"] == "apiextensions.k8s.io/v1"
    assert c["metadata"]["name"] == "predictiveautoscalers.surgecast.io"
    assert c["spec"]["names"]["shortNames"] == ["pas"]
    (v,) = c["spec"]["versions"]
    assert v["subresources"] == {"status": {}}
    cols = {col["name"]: col["jsonPath"] for col in v["additionalPrinterColumns"]}
    assert cols == {
        "Target": ".spec.scaleTargetRef.name",
        "Min": ".spec.minReplicas",
        "Max": ".spec.maxReplicas",
        "Desired": ".status.desiredReplicas",
        "Active": ".status.activeReplicas",
        "Warm": ".status.warmReplicas",
        "Mode": ".spec.mode",
        "Age": ".metadata.creationTimestamp",
    }


def test_printer_columns_point_at_fields_the_schema_has() -> None:
    schema = openapi_schema()
    (v,) = crd()["spec"]["versions"]
    for col in v["additionalPrinterColumns"]:
        parts = col["jsonPath"].lstrip(".").split(".")
        if parts[0] == "metadata":
            continue
        node = schema
        for part in parts:
            node = node["properties"][part]
        assert node["type"] == col["type"], col


def test_sample_validates_against_the_crd_schema_and_the_models() -> None:
    (sample,) = docs(SAMPLE)
    jsonschema.Draft4Validator(openapi_schema()).validate(sample)
    cr = validate_resource(sample)
    assert cr.spec.scale_target_ref.name == "surgecast-worker"
    # it targets the worker Deployment of manifests/worker/
    worker = docs(REPO / "manifests" / "worker" / "deployment.yaml")[0]
    assert worker["kind"] == cr.spec.scale_target_ref.kind
    assert worker["metadata"]["name"] == cr.spec.scale_target_ref.name
    # the spec with every default filled in is valid for the API server too
    filled = {**sample, "spec": cr.spec.to_wire()}
    jsonschema.Draft4Validator(openapi_schema()).validate(filled)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("behavior", "scaleUp", "policies", 0, "type"), "Pod"),
        (("mode",), "DryRun"),
        (("interval",), "15 seconds"),
        (("capacity", "requestsPerSecondPerReplica"), 0),
        (("warmPool", "quantile"), 1.0),
        (("schedules", 0, "days", 0), 7),
        (("forecast", "model"), "prophet"),
    ],
)
def test_crd_schema_rejects_what_the_models_reject(path: tuple[Any, ...], value: Any) -> None:
    (sample,) = docs(SAMPLE)
    bad = copy.deepcopy(sample)
    bad["spec"].setdefault("behavior", {}).setdefault(
        "scaleUp", {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}
    )
    node = bad["spec"]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(openapi_schema()).validate(bad)


# ----------------------------------------------------------------------------- RBAC
def granted() -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for d in by_kind("ClusterRole") + by_kind("Role"):
        for rule in d["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert "resourceNames" not in rule or rule["resourceNames"], rule
            for group in rule["apiGroups"]:
                assert group != "*", rule
                for res in rule["resources"]:
                    out.setdefault((group, res), set()).update(rule["verbs"])
    return out


def test_rbac_grants_exactly_the_verbs_the_code_uses() -> None:
    assert granted() == EXPECTED_RBAC
    # leases only in the controller's own namespace (a Role, not the ClusterRole)
    (cluster_role,) = by_kind("ClusterRole")
    assert all("leases" not in r["resources"] for r in cluster_role["rules"])


#: the official client's method stem -> (API group, resource)
_RESOURCES = {
    "deployment": ("apps", "deployments"),
    "deployment_scale": ("apps", "deployments/scale"),
    "pod": ("", "pods"),
    "event": ("", "events"),
    "lease": ("coordination.k8s.io", "leases"),
    "custom_object": ("surgecast.io", "predictiveautoscalers"),
    "custom_object_status": ("surgecast.io", "predictiveautoscalers/status"),
}
_VERBS = {"read": "get", "list": "list", "create": "create", "replace": "update",
          "patch": "patch", "delete": "delete"}


def used_rbac() -> dict[tuple[str, str], set[str]]:
    """Every Kubernetes call in the actuator and the controller, as RBAC (group, resource)
    -> verbs; a list that is also streamed by ``watch.Watch`` needs ``watch`` too."""
    out: dict[tuple[str, str], set[str]] = {}
    sources = [ADAPTER, *sorted((REPO / "autoscaler" / "controller").glob("*.py"))]
    for path in sources:
        text = path.read_text()
        for verb, stem in re.findall(
            r"\.(read|list|create|replace|patch|delete)_(?:namespaced|cluster)_(\w+?)\b",
            text,
        ):
            if stem.endswith(("_with_http_info", "_without_preload_content")):
                stem = stem.rsplit("_with", 1)[0]
            key = _RESOURCES[stem]
            out.setdefault(key, set()).add(_VERBS[verb])
            if verb == "list" and "w.stream(" in text:
                out[key].add("watch")
    return out


def test_rbac_grants_exactly_the_calls_the_code_makes() -> None:
    """Least privilege both ways: every call is granted, and nothing unused is."""
    used = used_rbac()
    assert len(used) >= 6
    assert used == EXPECTED_RBAC
    assert granted() == used


def test_bindings_point_the_roles_at_the_controllers_service_account() -> None:
    (sa,) = by_kind("ServiceAccount")
    bindings = by_kind("ClusterRoleBinding") + by_kind("RoleBinding")
    assert {b["roleRef"]["name"] for b in bindings} == {
        d["metadata"]["name"] for d in by_kind("ClusterRole") + by_kind("Role")
    }
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                  "namespace": "surgecast-system"}]


# ----------------------------------------------------------------------------- Deployment
def test_controller_deployment_is_locked_down_and_probed() -> None:
    (dep,) = by_kind("Deployment")
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == by_kind("ServiceAccount")[0]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert "metrics" in ports
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])


# ----------------------------------------------------------------------------- Kubernetes schemas
def test_built_in_kinds_validate_strictly_against_the_kubernetes_openapi_schemas() -> None:
    checked = 0
    for d in all_docs():
        if d["kind"] in ("Kustomization", "PredictiveAutoscaler"):
            continue
        kubernetes_validate.validate(d, kubernetes_validate.latest_version(), strict=True)
        checked += 1
    assert checked == 8
    (dep,) = by_kind("Deployment")
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


def test_crd_descriptions_are_one_paragraph() -> None:
    """``kubectl explain`` wraps descriptions itself: docstrings' line breaks are dropped."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "description" and isinstance(v, str):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for x in node:
                walk(x)

    walk(crd())
    assert len(found) > 40
    assert not [d for d in found if "\n" in d or "  " in d]
