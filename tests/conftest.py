"""Fixtures for the tiers that need a real Kubernetes API server.

The cluster is the local control plane (scripts/control-plane, started or
reused through the same code), or the cluster whose admin kubeconfig is in
$BRIGADE_CRGW_TEST_KUBECONFIG.  A plane that cannot start fails the tests
that need it; it never turns into skips.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attr
import pytest
from kubernetes import client, config

ROOT = Path(__file__).resolve().parent.parent


def load_controlplane() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "controlplane", ROOT / "scripts" / "controlplane.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@attr.s(frozen=True, auto_attribs=True)
class Plane:
    """A running cluster: the control-plane module and an admin client."""

    controlplane: ModuleType
    api: Any

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)


@attr.s(frozen=True, auto_attribs=True)
class Namespace:
    """A fresh namespace with etc/kubernetes/rbac.yaml applied, and a
    kubeconfig holding the gateway's restricted identity in it."""

    name: str
    gateway_kubeconfig: Path
    plane: Plane


@pytest.fixture(scope="session")
def plane() -> Plane:
    """The admin's view of a real cluster."""
    controlplane = load_controlplane()
    path = os.environ.get("BRIGADE_CRGW_TEST_KUBECONFIG")
    if not path:
        try:
            controlplane.up()
        except controlplane.PlaneError as e:
            pytest.fail(f"the local control plane did not start: {e}", pytrace=False)
        path = str(controlplane.admin_kubeconfig())
    return Plane(controlplane, config.new_client_from_config(path))


@pytest.fixture(scope="module")
def namespace(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    """A namespace of this test module's own, and the gateway's identity in it."""
    name = f"crgw-test-{uuid.uuid4().hex[:10]}"
    plane.core.create_namespace({"metadata": {"name": name}})
    kubeconfig = tmp_path_factory.mktemp("kube") / "gateway.kubeconfig"
    plane.controlplane.gateway_identity(plane.api, name, kubeconfig, 3600)
    yield Namespace(name, kubeconfig, plane)
    # Without a namespace controller (the local plane) this only marks it
    # Terminating; `scripts/control-plane down` removes everything.
    plane.core.delete_namespace(name)
