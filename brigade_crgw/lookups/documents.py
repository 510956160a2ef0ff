"""Reading what a registry serves: bodies within limits, manifests and
configs checked against their digests, platforms and labels picked out."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from ..events import LABELS
from .outcomes import FAILED, NOT_FOUND, REFUSED, TOO_LARGE, UNAUTHORIZED, LookupFailed

log = Logger()

MANIFEST_LIMIT = 4 * 1024 * 1024
CONFIG_LIMIT = 1024 * 1024
# Token answers and error bodies are small; anything larger is not read.
SMALL_LIMIT = 64 * 1024
MAX_REDIRECTS = 3

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
INDEXES = (OCI_INDEX, DOCKER_LIST)
# A label longer than this is cut: it ends up in titles and payloads.
LABEL_LIMIT = 1024


def refuse_status(code: int, method: str) -> None:
    if code == 401:
        raise LookupFailed(UNAUTHORIZED, "the registry refused the credentials")
    if code == 403:
        raise LookupFailed(UNAUTHORIZED, "the registry denied access (403)")
    if code == 404:
        raise LookupFailed(NOT_FOUND, "the registry has no such image")
    if code == 429:
        raise LookupFailed(REFUSED, "the registry is rate limiting (429)")
    raise LookupFailed(FAILED, f"the registry answered {code} to a {method}")


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def verify_digest(digest: str, body: bytes, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if hashlib.new(algorithm, body).hexdigest() != expected:
        raise LookupFailed(FAILED, f"the {what} does not match its digest {digest}")


def json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise LookupFailed(FAILED, f"the {what} is not JSON") from None
    if not isinstance(doc, dict):
        raise LookupFailed(FAILED, f"the {what} is not a JSON object")
    return doc


def platform_of(value: object) -> str:
    if not isinstance(value, dict):
        return ""
    os_, arch = value.get("os"), value.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str) or not os_ or not arch:
        return ""
    variant = value.get("variant")
    words = [os_, arch] + ([variant] if isinstance(variant, str) and variant else [])
    return "/".join(words)[:64]


def labels_of(*sources: object) -> dict[str, str]:
    """The :data:`LABELS` found in the first source that has each."""
    found: dict[str, str] = {}
    for source in sources:
        if not isinstance(source, dict):
            continue
        for short, key in LABELS.items():
            value = source.get(key)
            if short not in found and isinstance(value, str) and value.strip():
                found[short] = value.strip()[:LABEL_LIMIT]
    return found


class BodyCollector(Protocol):
    """Gathers a response body up to a limit; past it, drops the connection."""

    def __init__(self, done: Deferred[bytes], limit: int, what: str, length: object) -> None:
        self.done, self.limit, self.what, self.length = done, limit, what, length
        self.chunks: list[bytes] = []
        self.size = 0

    def connectionMade(self) -> None:
        if isinstance(self.length, int) and self.length > self.limit:
            self._give_up(f"the {self.what} is {self.length} bytes; at most {self.limit} are read")

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self._give_up(f"the {self.what} is over {self.limit} bytes")
            return
        self.chunks.append(data)

    def _give_up(self, reason: str) -> None:
        self.done.errback(LookupFailed(TOO_LARGE, reason))
        self.stop()

    def stop(self) -> None:
        # The response's transport is a producer: stopping it drops the connection.
        stop = getattr(self.transport, "stopProducing", None)
        if stop is not None:
            stop()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


def read_body(response: Any, limit: int, what: str) -> Deferred[bytes]:
    """The body of ``response``, at most ``limit`` bytes; cancelling stops it."""
    collector: BodyCollector

    def cancel(d: Deferred[bytes]) -> None:
        collector.stop()

    done: Deferred[bytes] = Deferred(cancel)
    collector = BodyCollector(done, limit, what, response.length)
    response.deliverBody(collector)
    return done
