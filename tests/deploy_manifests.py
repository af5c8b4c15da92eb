"""The Kubernetes manifests of deploy/, parsed with PyYAML (no tests here): the documents that
deploy/kustomization.yaml lists, by kind and name, and each workload's container and environment.
Used by test_deploy_manifests.py (checked against the code) and test_bento.py (run from the Bento)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@dataclass(frozen=True)
class Manifests:
    kustomization: dict
    documents: dict[tuple[str, str], dict]  # (kind, metadata.name) -> document

    def get(self, kind: str, name: str) -> dict:
        return self.documents[(kind, name)]

    def of_kind(self, *kinds: str) -> list[dict]:
        return [doc for (kind, _), doc in self.documents.items() if kind in kinds]

    def workload(self, name: str) -> dict:
        found = [doc for doc in self.of_kind(*WORKLOAD_KINDS) if doc["metadata"]["name"] == name]
        assert len(found) == 1, f"one Deployment or StatefulSet named {name}, found {len(found)}"
        return found[0]

    def container(self, workload: str) -> dict:
        """The workload's one container."""
        (container,) = self.workload(workload)["spec"]["template"]["spec"]["containers"]
        return container

    def environment(self, workload: str) -> dict[str, str]:
        """The container's variables: its ConfigMaps (envFrom), then its own `env`."""
        container = self.container(workload)
        variables: dict[str, str] = {}
        for source in container.get("envFrom", []):
            variables.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
        variables.update({item["name"]: item["value"] for item in container.get("env", [])
                          if "value" in item})
        return variables

    def secrets(self, workload: str) -> dict[str, dict]:
        """The container's variables taken from a Secret: name -> its secretKeyRef."""
        return {item["name"]: item["valueFrom"]["secretKeyRef"]
                for item in self.container(workload).get("env", []) if "valueFrom" in item}


def load() -> Manifests:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    documents: dict[tuple[str, str], dict] = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / resource).read_text()):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in documents, f"{key} is defined twice"
            documents[key] = doc
    return Manifests(kustomization, documents)
