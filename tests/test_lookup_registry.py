"""The registry client against the real thing: Debian's docker-registry on
loopback, with htpasswd Basic auth and with token auth (a token server that
signs JWTs the registry verifies), holding images pushed by skopeo."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from brigade_crgw.lookups.client import RegistryClient
from brigade_crgw.lookups.credentials import Credential
from brigade_crgw.lookups.documents import ACCEPT, CONFIG_LIMIT
from brigade_crgw.lookups.guard import Guard, GuardedEndpoints
from brigade_crgw.lookups.outcomes import (
    NOT_FOUND,
    REFUSED,
    TIMEOUT,
    TOO_LARGE,
    UNAUTHORIZED,
    LookupFailed,
)
from brigade_crgw.lookups.references import Reference

from . import registry as R

SHA = "89abcdef0123456789abcdef0123456789abcdef"
LABELS = {
    "org.opencontainers.image.revision": SHA,
    "org.opencontainers.image.source": "https://git.example.com/acme/app",
    "org.opencontainers.image.version": "1.2.3",
    "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
}
CREDENTIAL = Credential(R.USER, R.PASSWORD)


@pytest.fixture(scope="module", params=["htpasswd", "token"])
def pushed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[R.Registry, R.Layout, R.Layout]]:
    """A registry with one auth kind, holding a single- and a multi-platform image."""
    tmp = tmp_path_factory.mktemp(f"registry-{request.param}")
    registry = R.start_registry(tmp / "registry", request.param)
    try:
        single = R.write_layout(tmp / "single", "v1", LABELS)
        multi = R.write_layout(
            tmp / "multi",
            "v2",
            {"org.opencontainers.image.version": "2.0.0"},
            ("linux/amd64", "linux/arm64/v8"),
        )
        R.push(single, registry, "acme/app")
        R.push(multi, registry, "acme/app")
        yield registry, single, multi
    finally:
        registry.stop()


def _client(endpoint: str, registry: R.Registry | None = None) -> RegistryClient:
    """A client of ``endpoint`` as docker.io; a token registry's realm, on
    another port, is listed too, so that it is sent the credential."""
    endpoints = {"docker.io": endpoint}
    if registry is not None and registry.tokens is not None:
        endpoints[registry.tokens.realm.split("/")[2]] = registry.tokens.realm.rsplit("/", 1)[0]
    return RegistryClient.create(endpoints, reactor)


def _ref(tag: str = "", digest: str = "") -> Reference:
    return Reference("docker.io", "acme/app", tag, digest)


async def _failure(client: RegistryClient, *args: Any) -> LookupFailed:
    try:
        await client.inspect(*args)
    except LookupFailed as e:
        return e
    raise AssertionError("the lookup should have failed")


@pytest_twisted.ensureDeferred
async def test_single_platform(pushed: tuple[R.Registry, R.Layout, R.Layout]) -> None:
    """A tag resolves to the pushed digest, with its platform and all four labels."""
    registry, single, _ = pushed
    facts, cached = await _client(registry.url, registry).inspect(_ref("v1"), CREDENTIAL, 10)
    assert not cached
    assert facts.digest == single.digest and facts.media_type == R.OCI_MANIFEST
    assert facts.platforms == ("linux/amd64",)
    assert facts.labels == {
        "revision": SHA,
        "source": "https://git.example.com/acme/app",
        "version": "1.2.3",
        "created": "2026-01-01T00:00:00Z",
    }


@pytest_twisted.ensureDeferred
async def test_multi_platform(pushed: tuple[R.Registry, R.Layout, R.Layout]) -> None:
    """An index gives both platforms and the amd64 image's labels; a second
    lookup by its digest comes from the cache."""
    registry, _, multi = pushed
    client = _client(registry.url, registry)
    facts, _ = await client.inspect(_ref("v2"), CREDENTIAL, 10)
    assert facts.digest == multi.digest and facts.media_type == R.OCI_INDEX
    assert facts.platforms == ("linux/amd64", "linux/arm64/v8")
    assert facts.labels == {"version": "2.0.0"}
    again, cached = await client.inspect(_ref(digest=multi.digest), CREDENTIAL, 10)
    assert cached and again == facts


@pytest_twisted.ensureDeferred
async def test_by_digest(pushed: tuple[R.Registry, R.Layout, R.Layout]) -> None:
    """A push that names its digest (Distribution) is looked up by that digest."""
    registry, single, _ = pushed
    facts, _ = await _client(registry.url, registry).inspect(
        _ref(digest=single.digest), CREDENTIAL, 10
    )
    assert facts.labels["revision"] == SHA


@pytest_twisted.ensureDeferred
async def test_wrong_and_missing_credentials(
    pushed: tuple[R.Registry, R.Layout, R.Layout],
) -> None:
    """A wrong password and no credentials both give ``unauthorized``."""
    registry, _, _ = pushed
    client = _client(registry.url, registry)
    wrong = await _failure(client, _ref("v1"), Credential(R.USER, "nope"), 10)
    anonymous = await _failure(client, _ref("v1"), None, 10)
    assert wrong.outcome == anonymous.outcome == UNAUTHORIZED


@pytest_twisted.ensureDeferred
async def test_unknown_tag(pushed: tuple[R.Registry, R.Layout, R.Layout]) -> None:
    """A tag the registry does not have is ``not_found``."""
    registry, _, _ = pushed
    error = await _failure(_client(registry.url, registry), _ref("missing"), CREDENTIAL, 10)
    assert error.outcome == NOT_FOUND


def test_registry_verifies_tokens(pushed: tuple[R.Registry, R.Layout, R.Layout]) -> None:
    """(token auth) The registry accepts the token server's JWT and refuses one
    with another issuer or no access: the tokens are really checked."""
    registry, _, _ = pushed
    if registry.tokens is None:
        return
    access = [{"type": "repository", "name": "acme/app", "actions": ["pull"]}]

    def status(token: str) -> int:
        url = f"{registry.url}/v2/acme/app/manifests/v1"
        request = urllib.request.Request(  # noqa: S310 (http to the test registry)
            url,
            method="HEAD",
            headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                return int(answer.status)
        except urllib.error.HTTPError as e:
            return e.code

    assert status(registry.tokens.token(access)) == 200
    assert status(registry.tokens.token(access, issuer="someone-else")) == 401
    assert status(registry.tokens.token([])) == 401
    # The lookups above asked the realm with the credentials.
    assert any(authenticated for authenticated, _ in registry.tokens.requests)


@pytest_twisted.ensureDeferred
async def test_redirect_to_loopback_http_refused(tmp_path: Path) -> None:
    """A registry whose blobs redirect to a plain-http loopback address gives
    nothing, and nothing connects there."""
    listener, port = R.hanging_server()
    listener.settimeout(0)
    registry = R.start_registry(tmp_path / "r", "none", redirect_to=f"http://127.0.0.1:{port}")
    try:
        layout = R.write_layout(tmp_path / "l", "v1", LABELS)
        R.push(layout, registry, "acme/app")
        error = await _failure(_client(registry.url, registry), _ref("v1"), None, 10)
        assert error.outcome == REFUSED and "https only" in error.reason
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        registry.stop()
        listener.close()


@pytest_twisted.ensureDeferred
async def test_oversized_config(tmp_path: Path) -> None:
    """A config blob of over 1 MiB in a real registry is not read."""
    registry = R.start_registry(tmp_path / "r", "none")
    try:
        layout = R.write_layout(tmp_path / "l", "big", LABELS, pad_config=CONFIG_LIMIT)
        R.push(layout, registry, "acme/app")
        error = await _failure(_client(registry.url, registry), _ref("big"), None, 10)
        assert error.outcome == TOO_LARGE
    finally:
        registry.stop()


@pytest_twisted.ensureDeferred
async def test_hanging_registry() -> None:
    """A registry that accepts the connection and never answers gives
    ``timeout`` when the time is up, not later."""
    listener, port = R.hanging_server()
    try:
        started = time.monotonic()
        error = await _failure(_client(f"http://127.0.0.1:{port}"), _ref("v1"), None, 1.0)
        elapsed = time.monotonic() - started
        assert error.outcome == TIMEOUT
        assert elapsed < 5, elapsed  # generous: the point is that it ends at all
    finally:
        listener.close()


@pytest_twisted.ensureDeferred
async def test_connection_address_checked_again() -> None:
    """A name that passed the check but is connected at a refused address (DNS
    rebinding) is dropped before a byte is sent: not even a TLS ClientHello."""
    from twisted.web.client import URI, BrowserLikePolicyForHTTPS

    listener, port = R.hanging_server()
    listener.settimeout(5)
    try:
        guard = Guard(trusted={"registry.example.com"})
        # As if the redirect's name had resolved to a public address.
        guard.away["127.0.0.1"] = frozenset({"public"})
        endpoints = GuardedEndpoints(reactor, BrowserLikePolicyForHTTPS(), guard)
        endpoint = endpoints.endpointForURI(URI.fromBytes(f"https://127.0.0.1:{port}/".encode()))
        from twisted.internet.protocol import Factory, Protocol

        with pytest.raises(LookupFailed) as caught:
            await endpoint.connect(Factory.forProtocol(Protocol))
        assert caught.value.outcome == REFUSED and "loopback" in caught.value.reason
        connection, _ = listener.accept()
        with connection:
            assert connection.recv(1024) == b""  # closed, having sent nothing
    finally:
        listener.close()
