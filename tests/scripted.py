"""A small scripted registry served in memory through treq's StubTreq, and
the registry client pointed at it, for the lookup tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from brigade_crgw.lookups.client import RegistryClient
from brigade_crgw.lookups.credentials import Credential
from brigade_crgw.lookups.documents import OCI_MANIFEST
from brigade_crgw.lookups.outcomes import LookupFailed
from brigade_crgw.lookups.references import Reference

ENDPOINT = "https://registry.example.com"
ADDRESSES = {
    "registry.example.com": ["93.184.216.34"],
    "cdn.example.net": ["151.101.1.1"],
    "auth.example.com": ["93.184.216.35"],
    "inside.example.net": ["10.0.0.8"],
}


def digest_of(raw: bytes) -> str:
    """The sha256 digest of ``raw``, as a registry names it."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class Scripted(Resource):
    """Answers each (method, host, path) as scripted; records every request
    with its Authorization header."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[tuple[str, str, str], Callable[[Request], bytes | int]] = {}
        self.seen: list[tuple[str, str, str, str]] = []

    def on(self, method: str, url: str, answer: Callable[[Request], bytes | int]) -> None:
        host, _, path = url.split("://", 1)[1].partition("/")
        self.routes[(method, host, "/" + path)] = answer

    def render(self, request: Request) -> bytes | int:
        method = request.method.decode()
        host = (request.getHeader("host") or "").lower()
        path = request.uri.decode()
        auth = request.getHeader("authorization") or ""
        self.seen.append((method, host, path, auth))
        answer = self.routes.get((method, host, path.split("?")[0]))
        if answer is None:
            request.setResponseCode(404)
            return b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'
        return answer(request)


def blob(raw: bytes, media_type: str = "application/json") -> Callable[[Request], bytes]:
    def answer(request: Request) -> bytes:
        request.setHeader("Content-Type", media_type)
        request.setHeader("Docker-Content-Digest", digest_of(raw))
        return b"" if request.method == b"HEAD" else raw

    return answer


def redirect(location: str) -> Callable[[Request], bytes]:
    def answer(request: Request) -> bytes:
        request.setResponseCode(307)
        request.setHeader("Location", location)
        return b""

    return answer


def image(
    registry: Scripted,
    labels: dict[str, str],
    endpoint: str = ENDPOINT,
    repository: str = "acme/app",
    tag: str = "v1",
    config_route: bool = True,
) -> tuple[str, bytes]:
    """Script one single-platform image; its manifest digest and config bytes."""
    config = json.dumps(
        {"os": "linux", "architecture": "arm64", "config": {"Labels": labels}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"digest": digest_of(config), "size": len(config)},
            "layers": [],
        }
    ).encode()
    base = f"{endpoint}/v2/{repository}"
    for ref in (tag, digest_of(manifest)):
        registry.on("HEAD", f"{base}/manifests/{ref}", blob(manifest, OCI_MANIFEST))
        registry.on("GET", f"{base}/manifests/{ref}", blob(manifest, OCI_MANIFEST))
    if config_route:
        registry.on("GET", f"{base}/blobs/{digest_of(config)}", blob(config))
    return digest_of(manifest), config


async def _resolve(name: str) -> list[str]:
    return ADDRESSES.get(name, [])


def client(
    registry: Scripted, endpoint: str = ENDPOINT, clock: Clock | None = None, also: str = ""
) -> Any:
    """A client of the scripted registry; ``also``, one more listed host."""
    endpoints = {"docker.io": endpoint, "registry.example.com": endpoint}
    if also:
        endpoints[also] = f"https://{also}"
    return RegistryClient(
        endpoints,
        StubTreq(registry),
        clock or Clock(),
        _resolve,
    )


def run(d: Deferred[Any]) -> Any:
    """The result of a Deferred that StubTreq has already driven to its end."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the lookup did not finish"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def inspect(c: Any, tag: str = "v1", digest: str = "", credential: Any = None) -> Any:
    reference = Reference("registry.example.com", "acme/app", tag, digest)
    return run(c.inspect(reference, credential, 3.0))


def failure(c: Any, **kwargs: Any) -> LookupFailed:
    with pytest.raises(LookupFailed) as caught:
        inspect(c, **kwargs)
    return caught.value


def basic_only(registry: Scripted, credential: Credential) -> None:
    """Make every route scripted so far want ``credential`` by Basic auth
    (a 401 with a Basic challenge otherwise)."""

    def guarded(answer: Callable[[Request], bytes | int]) -> Callable[[Request], bytes | int]:
        def check(request: Request) -> bytes | int:
            if request.getHeader("authorization") != credential.basic():
                request.setResponseCode(401)
                request.setHeader("WWW-Authenticate", 'Basic realm="r"')
                return b""
            return answer(request)

        return check

    registry.routes = {key: guarded(answer) for key, answer in registry.routes.items()}
