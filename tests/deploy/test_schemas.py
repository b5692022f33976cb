"""Every rendered document is valid for its kind: built-in kinds against Kubernetes' own
schemas (kubernetes-validate, strict: unknown fields fail), KubeRay kinds against the CRDs in
deploy/schemas/kuberay/, and the two other operators' kinds structurally (see
test_operator_kinds.py)."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.manifests import K8S_VERSION, OVERLAYS, crd_errors, one, render

KUBERAY_CRDS = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml",
                "RayJob": "ray.io_rayjobs.yaml"}
# Kinds of operators whose CRD schemas are not available offline: test_operator_kinds.py.
OPERATOR_KINDS = {("postgresql.cnpg.io/v1", "Cluster"),
                  ("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_validate_strictly(overlay: str) -> None:
    docs = render(overlay)
    builtin = [d for d in docs if d["kind"] not in KUBERAY_CRDS
               and (d["apiVersion"], d["kind"]) not in OPERATOR_KINDS]
    assert {d["kind"] for d in builtin} >= {"ConfigMap", "Service"}
    for doc in builtin:
        # SchemaNotFoundError (a kind nobody validates) fails the test too.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kind_is_one_the_tests_know(overlay: str) -> None:
    # A new kind must join one of the three validations above, not slip past them.
    kinds = {(d["apiVersion"], d["kind"]) for d in render(overlay)}
    assert kinds == {("v1", "ConfigMap"), ("v1", "Service"), ("ray.io/v1", "RayService"),
                     *OPERATOR_KINDS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kuberay_kinds_match_the_crd_schema(overlay: str) -> None:
    ray_docs = [d for d in render(overlay) if d["kind"] in KUBERAY_CRDS]
    assert ray_docs
    for doc in ray_docs:
        assert doc["apiVersion"] == "ray.io/v1"
        assert crd_errors(doc, KUBERAY_CRDS[doc["kind"]]) == []


def test_builtin_validation_rejects_a_broken_service() -> None:
    service = copy.deepcopy(one(render("dev-cpu"), "Service", "portrait-metrics"))
    service["spec"]["ports"][0]["port"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSION, strict=True)
    service = copy.deepcopy(one(render("dev-cpu"), "Service", "portrait-metrics"))
    service["spec"]["selectr"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSION, strict=True)


def _rayservice() -> dict[str, Any]:
    return copy.deepcopy(one(render("prod-gpu"), "RayService"))


def test_crd_validation_rejects_what_the_api_server_would() -> None:
    # An unknown field (a typo): the API server refuses it under fieldValidation=Strict.
    doc = _rayservice()
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert any("maxReplica" in e for e in crd_errors(doc, "ray.io_rayservices.yaml"))
    # A wrong type deep in the pod template.
    doc = _rayservice()
    head = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["ports"][0]["containerPort"] = "6379"
    assert crd_errors(doc, "ray.io_rayservices.yaml")
    # Two containers of one name (list-type=map keyed by name).
    doc = _rayservice()
    head = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"].append(copy.deepcopy(head["containers"][0]))
    assert any("duplicate key" in e for e in crd_errors(doc, "ray.io_rayservices.yaml"))
    # A field guarded by a CEL rule this check cannot evaluate.
    doc = _rayservice()
    doc["spec"]["rayClusterConfig"]["managedBy"] = "ray.io/kuberay-operator"
    assert any("CEL" in e for e in crd_errors(doc, "ray.io_rayservices.yaml"))
    # An int-or-string quantity given as a list.
    doc = _rayservice()
    head = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["resources"]["limits"]["cpu"] = ["2"]
    assert crd_errors(doc, "ray.io_rayservices.yaml")
