"""The shipped Kubernetes manifests are what a real API server accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import utils

from brigade_crgw.config import Config

from .conftest import Namespace

pytestmark = pytest.mark.integration
MANIFESTS = Path(__file__).resolve().parent.parent / "etc" / "kubernetes"


def test_deployment_accepted_by_the_api_server(namespace: Namespace) -> None:
    """Every object of deployment.yaml passes the API server's own validation
    (a server-side dry run), and its ini is a valid configuration."""
    documents = list(yaml.safe_load_all((MANIFESTS / "deployment.yaml").read_text()))
    assert {d["kind"] for d in documents} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    for document in documents:
        utils.create_from_dict(
            namespace.plane.api, document, namespace=namespace.name, dry_run="All"
        )
    ini = next(d for d in documents if d["kind"] == "ConfigMap")["data"]["brigade-crgw.ini"]
    config = Config.from_string(ini, {"BRIGADE_NAMESPACE": namespace.name})
    assert config.kubeconfig == "" and config.namespace == namespace.name
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "brigade-crgw"
