"""Which credential a project's lookups use, from its pull secret or the
default one, read through the store; and that nothing there can fail a build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from brigade_crgw.delivery.images import ProjectLookups
from brigade_crgw.events import ImageEvent
from brigade_crgw.lookups.bridge import LookupBridge
from brigade_crgw.lookups.credentials import Credential
from brigade_crgw.lookups.outcomes import FOUND, UNAUTHORIZED, UNLISTED

from . import registry as R
from .helpers import acme_project
from .memory import MemoryStore
from .scripted import Scripted, basic_only, client, image, run

CREDENTIAL = Credential("robot", "s3cret")


def _registry() -> Scripted:
    """A registry whose every route wants CREDENTIAL, by Basic auth."""
    registry = Scripted()
    image(registry, {"org.opencontainers.image.version": "7"})
    basic_only(registry, CREDENTIAL)
    return registry


def _images(store: MemoryStore, pull_secret: str = "") -> ProjectLookups:
    def call(f: Callable[..., Deferred[Any]], *args: Any) -> Any:
        return run(f(*args))

    lookups = LookupBridge(client(_registry()), call)
    return ProjectLookups(lookups, store, 3.0, pull_secret)


EVENT = ImageEvent(
    registry="distribution",
    action="image_push",
    repository="acme/app",
    host="registry.example.com",
    tag="v1",
)


def _store() -> MemoryStore:
    store = MemoryStore()
    store.put(R.dockerconfigjson("good", "registry.example.com", "robot", "s3cret"))
    store.put(R.dockerconfigjson("bad", "registry.example.com", "robot", "nope"))
    opaque = R.dockerconfigjson("opaque", "registry.example.com", "robot", "s3cret")
    opaque["type"] = "Opaque"
    store.put(opaque)
    return store


def test_project_pull_secret() -> None:
    """crGatewayPullSecret's credential is used for its host."""
    [result] = _images(_store()).results(acme_project(crGatewayPullSecret="good"), [EVENT])
    assert result.outcome == FOUND and result.facts is not None


def test_default_pull_secret() -> None:
    """[registry] pull_secret serves projects that name none, and not those that do."""
    images = _images(_store(), pull_secret="good")
    assert images.results(acme_project(), [EVENT])[0].outcome == FOUND
    own = images.results(acme_project(crGatewayPullSecret="bad"), [EVENT])
    assert own[0].outcome == UNAUTHORIZED


def test_unusable_pull_secrets_mean_anonymous() -> None:
    """A missing Secret, one of another type, a bad name or a store that is
    down: the lookup goes ahead anonymously (and is refused here)."""
    for name in ("missing", "opaque", "Not/A/Name"):
        [result] = _images(_store()).results(acme_project(crGatewayPullSecret=name), [EVENT])
        assert result.outcome == UNAUTHORIZED, name
    down = _store()
    down.down = True
    [result] = _images(down).results(acme_project(crGatewayPullSecret="good"), [EVENT])
    assert result.outcome == UNAUTHORIZED


def test_unlisted_host_reads_no_secret() -> None:
    """An event from a host that is not listed is not looked up, and no Secret is read."""
    reads: list[str] = []

    class Counting(MemoryStore):
        def get_secret(self, name: str) -> dict[str, Any] | None:
            reads.append(name)
            return super().get_secret(name)

    store = Counting(_store().secrets)
    event = ImageEvent(registry="acr", action="image_push", repository="a", host="x.io", tag="1")
    [result] = _images(store).results(acme_project(crGatewayPullSecret="good"), [event])
    assert result.outcome == UNLISTED and reads == []
    _images(store).results(acme_project(crGatewayPullSecret="good"), [EVENT, EVENT])
    assert reads == ["good"]  # once per webhook


def test_no_hosts_no_lookups() -> None:
    """With [registry] hosts empty there is no lookup collaborator at all; with
    hosts, one whose client knows exactly those endpoints and counts into
    the metrics it is given."""
    from twisted.internet.testing import MemoryReactorClock

    from brigade_crgw.config import Config
    from brigade_crgw.delivery import images

    reactor = MemoryReactorClock()
    counted: list[str] = []
    assert images.create(Config.from_string("", {}), reactor, MemoryStore(), counted.append) is None
    config = Config.from_string(
        "[registry]\nhosts = docker.io ghcr.io\nendpoints = ghcr.io=http://127.0.0.1:9\n", {}
    )
    made = images.create(config, reactor, MemoryStore(), counted.append)
    assert made is not None and made.lookups.record == counted.append
    assert dict(made.lookups.client.endpoints) == {
        "docker.io": "https://registry-1.docker.io",
        "ghcr.io": "http://127.0.0.1:9",
    }
    assert reactor.tcpClients == []  # nothing is contacted before a webhook asks
