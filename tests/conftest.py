"""Fixtures for the tiers that need a real Kubernetes API server.

The cluster is the local control plane (:class:`devtools.plane.Plane`, the
same object ``scripts/control-plane`` drives, started or reused), or the
cluster whose admin kubeconfig is in $BRIGADE_CRGW_TEST_KUBECONFIG.  A plane
that cannot start fails the tests that need it; it never turns into skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attr
import pytest
from kubernetes import client, config

from devtools import debian, image
from devtools.plane import Plane, PlaneError, gateway_identity
from devtools.projects import project_secret


@attr.s(frozen=True, auto_attribs=True)
class Cluster:
    """A running cluster: an admin client, and the local plane when it is the one."""

    local: Plane | None
    api: Any

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def admin_kubeconfig(self) -> Path:
        """The admin's kubeconfig file, as an operator's tools take it."""
        if self.local is not None:
            return self.local.admin_kubeconfig
        return Path(os.environ["BRIGADE_CRGW_TEST_KUBECONFIG"])


@attr.s(frozen=True, auto_attribs=True)
class Namespace:
    """A fresh namespace with etc/kubernetes/rbac.yaml applied, and a
    kubeconfig holding the gateway's restricted identity in it."""

    name: str
    gateway_kubeconfig: Path
    plane: Cluster


# Whether a collected test is marked ``node`` (tests/test_node.py): then the
# local plane starts with its node, once, before any test uses it.
NODE_WANTED = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Note whether the local plane must have a node for this session."""
    config.stash[NODE_WANTED] = any(item.get_closest_marker("node") for item in items)


@pytest.fixture(scope="session")
def plane(request: pytest.FixtureRequest) -> Cluster:
    """The admin's view of a real cluster; the local plane comes with a node
    (``scripts/control-plane up --node``) when a collected test needs one."""
    path = os.environ.get("BRIGADE_CRGW_TEST_KUBECONFIG")
    if path:
        return Cluster(None, config.new_client_from_config(path))
    local = Plane()
    try:
        local.up(node=request.config.stash.get(NODE_WANTED, False))
    except PlaneError as e:
        pytest.fail(f"the local control plane did not start: {e}", pytrace=False)
    return Cluster(local, local.admin_api())


@pytest.fixture(scope="module")
def namespace(plane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    """A namespace of this test module's own, and the gateway's identity in it."""
    name = f"crgw-test-{uuid.uuid4().hex[:10]}"
    plane.core.create_namespace({"metadata": {"name": name}})
    kubeconfig = tmp_path_factory.mktemp("kube") / "gateway.kubeconfig"
    gateway_identity(plane.api, name, kubeconfig, 3600)
    yield Namespace(name, kubeconfig, plane)
    # Without a namespace controller (the local plane) this only marks it
    # Terminating; `scripts/control-plane down` removes everything.
    plane.core.delete_namespace(name)


@pytest.fixture(scope="module")
def built() -> str:
    """This tree's image, built (or found up to date) as `make image` does."""
    try:
        return image.build()
    except debian.DebianError as e:
        pytest.fail(f"the image could not be built: {e}", pytrace=False)


@pytest.fixture(scope="module")
def project(namespace: Namespace) -> str:
    """The project acme/app, with the test token, in this module's namespace."""
    namespace.plane.core.create_namespaced_secret(namespace.name, project_secret("acme/app"))
    return "acme/app"
