"""Enough of `kustomize build` to render StayHuman's manifests offline for validation.

Supports what deploy/k8s uses: resources (files and directories), configMapGenerator
and secretGenerator (literals, files, envs; behavior create or merge), namespace,
images, replicas and labels. Anything else in a kustomization is refused, so the
manifests cannot drift beyond what this checks.
"""

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {
    "apiVersion", "kind", "resources", "configMapGenerator", "secretGenerator", "generatorOptions",
    "namespace", "images", "replicas", "labels",
}  # fmt: skip
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def _generated(kind: str, spec: dict[str, Any], root: Path) -> dict[str, Any]:
    data: dict[str, str] = {}
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for entry in spec.get("files", []):
        key, _, path = entry.rpartition("=") if "=" in entry else ("", "", entry)
        data[key or Path(path).name] = (root / path).read_text()
    for env_file in spec.get("envs", []):
        for line in (root / env_file).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                data[key.strip()] = value
    document: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        document["type"] = "Opaque"
        document["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        document["data"] = data
    return document


def build(root: Path, env_files: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Render the kustomization in `root`; `env_files` stands in for uncommitted env files."""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{root}: kustomization fields not understood: {sorted(unknown)}")
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = root / resource
        if path.is_dir():
            documents.extend(build(path, env_files))
        else:
            documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for spec in kustomization.get(key, []):
            if env_files:
                for env in spec.get("envs", []):
                    if env in env_files and not (root / env).exists():
                        (root / env).write_text(env_files[env])
            generated = _generated(kind, spec, root)
            existing = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == spec["name"]]
            if spec.get("behavior") == "merge":
                if not existing:
                    raise ValueError(f"{root}: nothing to merge {kind} {spec['name']} into")
                existing[0]["data"].update(generated["data"])
            elif existing:
                raise ValueError(f"{root}: {kind} {spec['name']} is generated twice")
            else:
                documents.append(generated)
    documents = [copy.deepcopy(d) for d in documents]
    for label in kustomization.get("labels", []):
        for document in documents:
            document["metadata"].setdefault("labels", {}).update(label["pairs"])
    namespace = kustomization.get("namespace")
    if namespace:
        for document in documents:
            if document["kind"] not in CLUSTER_SCOPED:
                document["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for container in containers(documents):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', 'latest')}"
    for replicas in kustomization.get("replicas", []):
        for document in documents:
            if document["metadata"]["name"] == replicas["name"] and "replicas" in document.get("spec", {}):
                document["spec"]["replicas"] = replicas["count"]
    return documents


def pod_specs(documents: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) of every Deployment, StatefulSet and Job."""
    return [
        (d, d["spec"]["template"]["spec"])
        for d in documents
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


def containers(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for _, spec in pod_specs(documents) for c in spec["containers"]]
