"""One contract for the SecretStore, passed by the in-memory fake and by the
real store against a real API server with the gateway's own identity."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from brigade_crgw import brigade
from brigade_crgw.events import ImageEvent
from brigade_crgw.kubernetes.store import (
    KubeStore,
    StoreRejected,
    StoreUnavailable,
    load_api_client,
)
from devtools.projects import decoded, project_secret

from .conftest import Namespace
from .memory import MemoryStore


class Arranged:
    """A store under test, and an admin's way to arrange and inspect it."""

    def __init__(self, store: Any, put: Any, read: Any) -> None:
        self.store, self.put, self.read = store, put, read


@pytest.fixture(params=["memory", pytest.param("kube", marks=pytest.mark.integration)])
def arranged(request: pytest.FixtureRequest) -> Iterator[Arranged]:
    if request.param == "memory":
        memory = MemoryStore()
        yield Arranged(memory, memory.put, lambda name: memory.secrets.get(name))
        return
    ns: Namespace = request.getfixturevalue("namespace")
    core = ns.plane.core
    api = load_api_client(str(ns.gateway_kubeconfig))
    store = KubeStore(api, ns.name, 5.0)

    def put(secret: dict[str, Any]) -> None:
        core.create_namespaced_secret(ns.name, secret)

    def read(name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return ns.plane.api.sanitize_for_serialization(
                core.read_namespaced_secret(name, ns.name)
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    yield Arranged(store, put, read)


def _build(project: brigade.Project, tag: str = "v1") -> dict[str, Any]:
    event = ImageEvent(
        registry="dockerhub", action="image_push", repository="acme/app", tag=tag, payload=b"{}"
    )
    return brigade.build_secret(project, event, brigade.build_id(project, event))


def test_unknown_project_is_none(arranged: Arranged) -> None:
    """A project that does not exist reads as None."""
    assert arranged.store.get_project(brigade.project_id("nobody/nothing")) is None


def test_project_is_read(arranged: Arranged) -> None:
    """A project written as brig writes it is found with its data."""
    name = "contract/read"
    arranged.put(project_secret(name))
    project = arranged.store.get_project(brigade.project_id(name))
    assert project is not None
    assert project.name == name and project.data["repository"] == name


def test_other_secrets_are_not_projects(arranged: Arranged) -> None:
    """A Secret of another type under a project-like name is not a project."""
    secret = project_secret("contract/opaque")
    secret["type"] = "Opaque"
    arranged.put(secret)
    assert arranged.store.get_project(brigade.project_id("contract/opaque")) is None


def test_build_is_created_once(arranged: Arranged) -> None:
    """A build Secret is created as given; a second create of the same name
    reports False and changes nothing."""
    arranged.put(project_secret("contract/build"))
    project = arranged.store.get_project(brigade.project_id("contract/build"))
    secret = _build(project)
    assert arranged.store.create_build(secret) is True
    stored = arranged.read(secret["metadata"]["name"])
    assert stored["type"] == "brigade.sh/build"
    assert stored["metadata"]["labels"] == secret["metadata"]["labels"]
    assert decoded(stored) == decoded(secret)
    changed = {**secret, "data": {**secret["data"], "payload": "e30K"}}
    assert arranged.store.create_build(changed) is False
    assert decoded(arranged.read(secret["metadata"]["name"]))["payload"] == "{}"


def test_calls_take_a_timeout_of_their_own(arranged: Arranged) -> None:
    """Both calls accept a per-call timeout (the in-request retry cuts them
    to fit its budget) and behave as without one."""
    arranged.put(project_secret("contract/timeout"))
    project = arranged.store.get_project(brigade.project_id("contract/timeout"), 4.0)
    assert project is not None
    secret = _build(project, "timeout")
    assert arranged.store.create_build(secret, 4.0) is True
    assert arranged.store.create_build(secret, 4.0) is False


def test_oversized_build_is_rejected(arranged: Arranged) -> None:
    """A build Secret over Kubernetes' 1 MiB limit is refused as invalid
    (StoreRejected, never retried), with Kubernetes' reason, and not stored."""
    arranged.put(project_secret("contract/huge"))
    project = arranged.store.get_project(brigade.project_id("contract/huge"))
    secret = _build(project)
    secret["data"]["payload"] = base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()
    with pytest.raises(StoreRejected) as rejected:
        arranged.store.create_build(secret)
    assert str(rejected.value)
    assert arranged.read(secret["metadata"]["name"]) is None


def test_any_secret_is_read(arranged: Arranged) -> None:
    """get_secret gives any Secret by name, type and base64 data as stored
    (a pull secret), and None for a name that does not exist."""
    from .registry import dockerconfigjson

    secret = dockerconfigjson("contract-pull", "ghcr.io", "robot", "s3cret")
    arranged.put(secret)
    found = arranged.store.get_secret("contract-pull")
    assert found is not None
    assert found["type"] == "kubernetes.io/dockerconfigjson"
    assert found["data"] == secret["data"]
    assert arranged.store.get_secret("contract-no-such-secret") is None


def test_unavailable_store_raises() -> None:
    """A store that cannot reach Kubernetes raises StoreUnavailable, for the
    fake (when down) and for the real client (a closed port)."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:9"
    configuration.retries = False
    real = KubeStore(client.ApiClient(configuration), "default", 2.0)
    for store in (MemoryStore(down=True), real):
        with pytest.raises(StoreUnavailable):
            store.get_project("brigade-x")
        with pytest.raises(StoreUnavailable):
            store.get_secret("pull")
        with pytest.raises(StoreUnavailable):
            store.create_build({"metadata": {"name": "brigade-worker-x"}})


@pytest.mark.integration
def test_real_store_reuses_its_connections(namespace: Namespace) -> None:
    """Many calls from one thread open one connection to the API server: each
    answer goes back to the pool (they once did not, and every call paid a
    TLS handshake)."""
    api = load_api_client(str(namespace.gateway_kubeconfig), threads=2)
    store = KubeStore(api, namespace.name, 5.0)
    namespace.plane.core.create_namespaced_secret(namespace.name, project_secret("reuse/app"))
    project = store.get_project(brigade.project_id("reuse/app"))
    assert project is not None
    for tag in ("a", "b", "c"):
        assert store.create_build(_build(project, tag)) is True
        assert store.get_project("brigade-no-such-project") is None
    pools = api.rest_client.pool_manager.pools
    assert [pools[key].num_connections for key in pools.keys()] == [1]
