"""What a registry itself says about a pushed image: digest, platforms, labels.

:class:`RegistryClient` follows the OCI Distribution spec with treq, on the
reactor: a tag is resolved to its manifest digest (``HEAD``), the manifest is
read (an index lists its platforms, and one of its images stands for it), and
the image's config blob gives the ``org.opencontainers.image.*`` labels.  A
registry that answers 401 is asked again with what its challenge wants:
``Basic`` credentials, or a ``Bearer`` token fetched from its realm.

Outbound traffic is held to a few rules, because the host and repository come
from a webhook that anyone holding a project token can send:

* only hosts in ``[registry] hosts`` are contacted, at their endpoint, over
  https unless the endpoint itself says ``http://``;
* only blob downloads may be redirected, only to https, and never to a
  loopback, private or link-local address unless the endpoint is on one too;
* credentials go to the endpoint and its token realm only, never across a
  redirect;
* a manifest may be 4 MiB at most, a config blob 1 MiB, and every document
  read must match its digest.

Answers are cached by digest (content never changes under a digest); a tag's
digest is asked every time.  Nothing here knows Kubernetes or HTTP serving;
:class:`Lookups` is the blocking bridge the webhook pipeline calls from its
pool thread.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import attr
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

log = Logger()

MANIFEST_LIMIT = 4 * 1024 * 1024
CONFIG_LIMIT = 1024 * 1024
# Token answers and error bodies are small; anything larger is not read.
SMALL_LIMIT = 64 * 1024
MAX_REDIRECTS = 3
CACHE_ENTRIES = 1024

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
_INDEXES = (OCI_INDEX, DOCKER_LIST)

#: The labels read from an image's config, by the short name they get.
LABELS = {
    "revision": "org.opencontainers.image.revision",
    "source": "org.opencontainers.image.source",
    "version": "org.opencontainers.image.version",
    "created": "org.opencontainers.image.created",
}
# A label longer than this is cut: it ends up in titles and payloads.
LABEL_LIMIT = 1024

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "https://registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)

# What the Distribution spec allows; anything else never reaches a URL.
_REPOSITORY = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_CHALLENGE_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')

# Outcomes, as counted in the metrics (a bounded set).
FOUND = "found"
CACHED = "cached"
UNLISTED = "unlisted"
NOT_FOUND = "not_found"
UNAUTHORIZED = "unauthorized"
REFUSED = "refused"
TOO_LARGE = "too_large"
TIMEOUT = "timeout"
FAILED = "failed"
OUTCOMES = (FOUND, CACHED, UNLISTED, NOT_FOUND, UNAUTHORIZED, REFUSED, TOO_LARGE, TIMEOUT, FAILED)


class LookupFailed(Exception):
    """A lookup gave nothing.

    :param outcome: one of :data:`OUTCOMES` (not ``found`` or ``cached``).
    :param reason: one line for the log, never holding a credential.
    """

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


@attr.s(frozen=True, auto_attribs=True)
class Credential:
    """A user name and password (or token) for one registry."""

    username: str
    password: str = attr.ib(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def fingerprint(self) -> str:
        """Tells credentials apart in cache keys without holding them."""
        raw = f"{self.username}\0{self.password}".encode()
        return hashlib.sha256(raw).hexdigest()[:16]


@attr.s(frozen=True, auto_attribs=True)
class ImageFacts:
    """What the registry says about one manifest.

    :param digest: the manifest's digest (an index's, for a multi-platform image).
    :param media_type: the manifest's media type.
    :param platforms: ``os/architecture[/variant]`` of each image, in order.
    :param labels: the labels of :data:`LABELS` that the image has, by short name.
    """

    digest: str
    media_type: str = ""
    platforms: tuple[str, ...] = ()
    labels: Mapping[str, str] = attr.ib(factory=dict)


def canonical_host(host: str) -> str:
    """A registry host as ``[registry] hosts`` names it: lower case, Docker
    Hub's many names as ``docker.io``."""
    host = host.strip().lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def repository_path(host: str, repository: str) -> str:
    """The repository as the registry's API names it (Docker Hub's official
    images live under ``library/``)."""
    if host == DOCKER_HUB and "/" not in repository:
        return f"library/{repository}"
    return repository


def default_endpoint(host: str) -> str:
    return DOCKER_HUB_API if host == DOCKER_HUB else f"https://{host}"


def is_commit_sha(text: str) -> bool:
    """Whether ``text`` is a full git commit id (SHA-1 or SHA-256, lower case)."""
    return bool(re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", text))


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme and parameters of a ``WWW-Authenticate`` header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
    return scheme.lower(), params


def address_kind(address: str) -> str:
    """``loopback``, ``private``, ``link-local``, ``public`` or ``special``
    (unspecified, multicast, reserved and other ranges never contacted)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "special"
    if ip.is_private:
        return "private"
    if ip.is_global:
        return "public"
    return "special"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


#: Resolves a host name to its addresses.
Resolver = Callable[[str], Awaitable[list[str]]]


def reactor_resolver(reactor: Any) -> Resolver:
    """A :data:`Resolver` on the reactor's own name resolver."""
    from twisted.internet.interfaces import IResolutionReceiver

    def resolve(name: str) -> Deferred[list[str]]:
        done: Deferred[list[str]] = Deferred()
        addresses: list[str] = []

        @implementer(IResolutionReceiver)
        class Receiver:
            def resolutionBegan(self, resolution: object) -> None:
                pass

            def addressResolved(self, address: Any) -> None:
                addresses.append(address.host)

            def resolutionComplete(self) -> None:
                done.callback(addresses)

        reactor.nameResolver.resolveHostName(Receiver(), name)
        return done

    return resolve


@attr.s(frozen=True, auto_attribs=True)
class Reference:
    """An image to look up, as an event names it."""

    host: str
    repository: str
    tag: str = ""
    digest: str = ""


def usable_reference(host: str, repository: str, tag: str, digest: str) -> Reference | None:
    """The reference to look up, or None when the event's values could not
    name an image (a payload's odd characters never reach a URL)."""
    host = canonical_host(host)
    path = repository_path(host, repository.strip())
    digest = digest if _DIGEST.match(digest) else ""
    tag = tag if _TAG.match(tag) else ""
    if not host or not _REPOSITORY.match(path) or not (tag or digest):
        return None
    return Reference(host, path, tag, digest)


@attr.s(auto_attribs=True)
class _Cache:
    """Facts by (endpoint, repository, digest, credential), least recently used
    dropped first."""

    size: int = CACHE_ENTRIES
    entries: OrderedDict[tuple[str, ...], ImageFacts] = attr.ib(factory=OrderedDict)

    def get(self, key: tuple[str, ...]) -> ImageFacts | None:
        facts = self.entries.get(key)
        if facts is not None:
            self.entries.move_to_end(key)
        return facts

    def put(self, key: tuple[str, ...], facts: ImageFacts) -> None:
        self.entries[key] = facts
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


@attr.s(auto_attribs=True)
class _Guard:
    """Which kinds of address each host may be connected at.

    A redirect target or token realm is checked by resolving its name before
    the request (:meth:`_Session._check_away`); the name could resolve
    differently when the connection is made (DNS rebinding), so the address
    actually connected is checked again, before a byte is sent to it.  The
    endpoints' own hosts may be anywhere: the operator chose them.
    """

    trusted: set[str] = attr.ib(factory=set)
    away: dict[str, frozenset[str]] = attr.ib(factory=dict)

    def judged(self, host: str, kinds: frozenset[str]) -> None:
        """Remember what ``host`` was judged to be allowed (a bounded memory:
        a host forgotten may only be reached at public addresses)."""
        if len(self.away) >= CACHE_ENTRIES:
            self.away.clear()
        self.away[host.lower()] = kinds

    def allowed(self, host: str) -> frozenset[str] | None:
        """The address kinds ``host`` may be reached at; None for any."""
        host = host.lower()
        if host in self.trusted:
            return None
        return self.away.get(host, frozenset({"public"}))


@implementer(IAgentEndpointFactory)
@attr.s(auto_attribs=True)
class _GuardedEndpoints:
    """Agent endpoints (TCP, TLS above it) whose connections the guard checks."""

    reactor: Any
    tls: Any
    guard: _Guard

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        endpoint: IStreamClientEndpoint = _Checked(
            HostnameEndpoint(self.reactor, uri.host, uri.port), host, self.guard
        )
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self.tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


@implementer(IStreamClientEndpoint)
@attr.s(auto_attribs=True)
class _Checked:
    inner: IStreamClientEndpoint
    host: str
    guard: _Guard

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return self.inner.connect(_CheckingFactory(factory, self.host, self.guard))


@implementer(IProtocolFactory)
class _CheckingFactory:
    """Builds the real protocol only for a connection to an allowed address:
    refusing here (with TLS above) sends nothing, not even a ClientHello."""

    def __init__(self, wrapped: IProtocolFactory, host: str, guard: _Guard) -> None:
        self.wrapped, self.host, self.guard = wrapped, host, guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> IProtocol | None:
        allowed = self.guard.allowed(self.host)
        address = str(getattr(addr, "host", ""))
        kind = address_kind(address) if _is_ip(address) else "special"
        if allowed is not None and kind not in allowed:
            raise LookupFailed(REFUSED, f"{self.host} was connected at {address} ({kind}); refused")
        return self.wrapped.buildProtocol(addr)


@attr.s(auto_attribs=True)
class RegistryClient:
    """Looks images up in the registries it may contact.

    :param endpoints: each allowed host (canonical) to its base URL.
    :param http: a treq-like client (its ``request``):
        ``treq.HTTPClient`` in production, ``treq.testing.StubTreq`` in tests.
    :param clock: for timeouts.
    :param resolve: host name to addresses, to check where a redirect or a
        token realm leads.
    """

    endpoints: Mapping[str, str]
    http: Any
    clock: IReactorTime
    resolve: Resolver
    cache: _Cache = attr.ib(factory=_Cache)
    guard: _Guard = attr.ib(factory=_Guard)

    @classmethod
    def create(cls, endpoints: Mapping[str, str], reactor: Any) -> RegistryClient:
        """The production client: treq on its own connection pool, through
        endpoints that check every connection's address (:class:`_Guard`)."""
        from treq.client import HTTPClient
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        pool.cachedConnectionTimeout = 30
        guard = _Guard({(urlsplit(url).hostname or "").lower() for url in endpoints.values()})
        factory = _GuardedEndpoints(reactor, BrowserLikePolicyForHTTPS(), guard)
        agent = Agent.usingEndpointFactory(reactor, factory, pool=pool)
        return cls(endpoints, HTTPClient(agent), reactor, reactor_resolver(reactor), guard=guard)

    def inspect(
        self, reference: Reference, credential: Credential | None, timeout: float
    ) -> Deferred[tuple[ImageFacts, bool]]:
        """Look ``reference`` up.

        :returns: a Deferred firing with the facts and whether they came from
            the cache, or failing with :class:`LookupFailed`; it fails with
            outcome ``timeout`` after ``timeout`` seconds, every request
            still open then being cancelled.
        """
        endpoint = self.endpoints.get(reference.host)
        if endpoint is None:
            return _failed(UNLISTED, f"{reference.host} is not in [registry] hosts")
        session = _Session(self, endpoint, reference.repository, credential)
        d = ensureDeferred(session.inspect(reference))

        def timed_out(result: Any, after: float) -> Any:
            # Whatever the cancelled request failed with, the cause is the time.
            raise LookupFailed(TIMEOUT, f"no answer within {after:.1f}s")

        d.addTimeout(timeout, self.clock, onTimeoutCancel=timed_out)

        def translate(failure: Any) -> Any:
            if failure.check(LookupFailed):
                return failure
            if failure.check(TimeoutError, CancelledError):
                raise LookupFailed(TIMEOUT, f"no answer within {timeout:g}s") from None
            raise LookupFailed(
                FAILED, f"{type(failure.value).__name__}: {_first_line(failure.value)}"
            )

        return d.addErrback(translate)


def _refuse_status(code: int, method: str) -> None:
    if code == 401:
        raise LookupFailed(UNAUTHORIZED, "the registry refused the credentials")
    if code == 403:
        raise LookupFailed(UNAUTHORIZED, "the registry denied access (403)")
    if code == 404:
        raise LookupFailed(NOT_FOUND, "the registry has no such image")
    if code == 429:
        raise LookupFailed(REFUSED, "the registry is rate limiting (429)")
    raise LookupFailed(FAILED, f"the registry answered {code} to a {method}")


def _failed(outcome: str, reason: str) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(LookupFailed(outcome, reason))
    return d


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _verify(digest: str, body: bytes, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if hashlib.new(algorithm, body).hexdigest() != expected:
        raise LookupFailed(FAILED, f"the {what} does not match its digest {digest}")


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise LookupFailed(FAILED, f"the {what} is not JSON") from None
    if not isinstance(doc, dict):
        raise LookupFailed(FAILED, f"the {what} is not a JSON object")
    return doc


def _platform(value: object) -> str:
    if not isinstance(value, dict):
        return ""
    os_, arch = value.get("os"), value.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str) or not os_ or not arch:
        return ""
    variant = value.get("variant")
    words = [os_, arch] + ([variant] if isinstance(variant, str) and variant else [])
    return "/".join(words)[:64]


def _labels(*sources: object) -> dict[str, str]:
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


@attr.s(auto_attribs=True)
class _Session:
    """One lookup: the endpoint, the repository, and the authorization won so far."""

    client: RegistryClient
    endpoint: str
    repository: str
    credential: Credential | None
    authorization: str | None = attr.ib(default=None, repr=False)

    def _url(self, kind: str, reference: str) -> str:
        return f"{self.endpoint.rstrip('/')}/v2/{self.repository}/{kind}/{reference}"

    async def inspect(self, reference: Reference) -> tuple[ImageFacts, bool]:
        digest = reference.digest
        if not digest:
            digest = await self._resolve_tag(reference.tag)
        key = (
            self.endpoint,
            self.repository,
            digest,
            self.credential.fingerprint() if self.credential else "",
        )
        cached = self.client.cache.get(key)
        if cached is not None:
            return cached, True
        facts = await self._facts(digest)
        self.client.cache.put(key, facts)
        return facts, False

    async def _resolve_tag(self, tag: str) -> str:
        response = await self._request("HEAD", self._url("manifests", tag), {"Accept": ACCEPT})
        header = response.headers.getRawHeaders("docker-content-digest") or []
        if header and _DIGEST.match(header[0]):
            return str(header[0])
        # A registry that does not say: the manifest itself tells.
        response = await self._request("GET", self._url("manifests", tag), {"Accept": ACCEPT})
        body = await self._read(response, MANIFEST_LIMIT, "manifest")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    async def _manifest(self, digest: str) -> tuple[dict[str, Any], str]:
        response = await self._request("GET", self._url("manifests", digest), {"Accept": ACCEPT})
        body = await self._read(response, MANIFEST_LIMIT, "manifest")
        _verify(digest, body, "manifest")
        doc = _json_object(body, "manifest")
        media_type = doc.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            header = response.headers.getRawHeaders("content-type") or [""]
            media_type = header[0].split(";")[0].strip()
        return doc, media_type

    async def _facts(self, digest: str) -> ImageFacts:
        doc, media_type = await self._manifest(digest)
        platforms: list[str] = []
        index_annotations: object = None
        if media_type in _INDEXES or isinstance(doc.get("manifests"), list):
            index_annotations = doc.get("annotations")
            children = [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
            chosen = None
            for child in children:
                platform = _platform(child.get("platform"))
                # Attestations and signatures are listed as unknown/unknown.
                if not platform or platform.startswith("unknown/"):
                    continue
                platforms.append(platform)
                child_digest = child.get("digest")
                if isinstance(child_digest, str) and _DIGEST.match(child_digest):
                    if chosen is None or platform == "linux/amd64":
                        chosen = (child_digest, platform)
            if chosen is None:
                return ImageFacts(digest, media_type, tuple(platforms), _labels(index_annotations))
            image, _ = await self._manifest(chosen[0])
        else:
            image = doc
        config_digest = (image.get("config") or {}).get("digest")
        if not isinstance(config_digest, str) or not _DIGEST.match(config_digest):
            # Not an image (a chart, an artifact): what the manifests say.
            return ImageFacts(
                digest,
                media_type,
                tuple(platforms),
                _labels(image.get("annotations"), index_annotations),
            )
        config = await self._blob(config_digest)
        inner = config.get("config")
        if not platforms:
            platform = _platform(config)
            platforms = [platform] if platform else []
        labels = _labels(
            inner.get("Labels") if isinstance(inner, dict) else None,
            image.get("annotations"),
            index_annotations,
        )
        return ImageFacts(digest, media_type, tuple(platforms), labels)

    async def _blob(self, digest: str) -> dict[str, Any]:
        url = self._url("blobs", digest)
        response = await self._request("GET", url, {}, follow=True)
        body = await self._read(response, CONFIG_LIMIT, "config")
        _verify(digest, body, "config")
        return _json_object(body, "config")

    async def _request(
        self, method: str, url: str, headers: dict[str, str], follow: bool = False
    ) -> Any:
        """Send one request to the endpoint, answering a 401 challenge once,
        and following a blob's redirects when ``follow``."""
        response = await self._send(method, url, headers, self.authorization)
        if response.code == 401:
            challenge = (response.headers.getRawHeaders("www-authenticate") or [""])[0]
            await self._discard(response)
            self.authorization = await self._answer(challenge)
            response = await self._send(method, url, headers, self.authorization)
            if response.code == 401:
                await self._discard(response)
                raise LookupFailed(UNAUTHORIZED, "the registry refused the credentials")
        hops = 0
        while response.code in (301, 302, 303, 307, 308):
            location = (response.headers.getRawHeaders("location") or [""])[0]
            await self._discard(response)
            if not follow:
                raise LookupFailed(REFUSED, f"the registry redirected a {method} of a manifest")
            hops += 1
            if hops > MAX_REDIRECTS:
                raise LookupFailed(REFUSED, f"more than {MAX_REDIRECTS} redirects")
            url = urljoin(url, location)
            await self._check_away(url, "a redirect")
            # Never the registry's credentials at another address.
            response = await self._send("GET", url, headers, None)
        if not 200 <= response.code < 300:
            await self._discard(response)
            _refuse_status(response.code, method)
        return response

    async def _send(
        self, method: str, url: str, headers: dict[str, str], authorization: str | None
    ) -> Any:
        sent = dict(headers)
        if authorization and _origin(url) == _origin(self.endpoint):
            sent["Authorization"] = authorization
        return await self.client.http.request(
            method, url, headers=sent, allow_redirects=False, unbuffered=True
        )

    async def _answer(self, challenge: str) -> str:
        """The ``Authorization`` that a 401's challenge asks for."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.credential is None:
                raise LookupFailed(UNAUTHORIZED, "the registry wants credentials; none are set")
            return self.credential.basic()
        if scheme != "bearer" or not params.get("realm"):
            raise LookupFailed(UNAUTHORIZED, f"unsupported challenge {scheme or 'none'!r}")
        realm = params["realm"]
        await self._check_away(realm, "the token realm")
        query = {"scope": params.get("scope") or f"repository:{self.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        url = f"{realm}{'&' if urlsplit(realm).query else '?'}{urlencode(query)}"
        headers = {"Accept": "application/json"}
        if self.credential is not None:
            headers["Authorization"] = self.credential.basic()
        response = await self.client.http.request(
            "GET", url, headers=headers, allow_redirects=False, unbuffered=True
        )
        if response.code in (401, 403):
            await self._discard(response)
            raise LookupFailed(UNAUTHORIZED, "the token service refused the credentials")
        if not 200 <= response.code < 300:
            await self._discard(response)
            raise LookupFailed(FAILED, f"the token service answered {response.code}")
        doc = _json_object(await self._read(response, SMALL_LIMIT, "token"), "token answer")
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise LookupFailed(FAILED, "the token service sent no token")
        return f"Bearer {token}"

    async def _check_away(self, url: str, what: str) -> None:
        """Refuse ``url`` (a redirect or a token realm) unless it is https (or
        http when the endpoint is), and lands on a public address or one of
        the same kind as the endpoint's."""
        parts = urlsplit(url)
        endpoint = urlsplit(self.endpoint)
        if parts.scheme != "https" and not (parts.scheme == "http" == endpoint.scheme):
            raise LookupFailed(REFUSED, f"{what} leads to {parts.scheme or 'no'}:// (https only)")
        if what == "a redirect" and parts.scheme != "https":
            raise LookupFailed(REFUSED, "a redirect leads to http:// (https only)")
        if not parts.hostname:
            raise LookupFailed(REFUSED, f"{what} names no host")
        allowed = {"public"} | await self._kinds(endpoint.hostname or "")
        kinds = await self._kinds(parts.hostname)
        if not kinds or not kinds <= allowed:
            shown = ", ".join(sorted(kinds)) or "no address"
            raise LookupFailed(REFUSED, f"{what} leads to {parts.hostname} ({shown})")
        self.client.guard.judged(parts.hostname, frozenset(allowed))

    async def _kinds(self, host: str) -> set[str]:
        if _is_ip(host):
            return {address_kind(host)}
        try:
            addresses = await self.client.resolve(host)
        except Exception as e:
            raise LookupFailed(FAILED, f"cannot resolve {host}: {_first_line(e)}") from None
        return {address_kind(a) for a in addresses}

    async def _read(self, response: Any, limit: int, what: str) -> bytes:
        return await _read(response, limit, what)

    async def _discard(self, response: Any) -> None:
        """Read and drop a small answer, so that its connection can be
        reused; a large one is cut off."""
        try:
            await _read(response, SMALL_LIMIT, "answer")
        except LookupFailed:
            pass


class _Collector(Protocol):
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


def _read(response: Any, limit: int, what: str) -> Deferred[bytes]:
    """The body of ``response``, at most ``limit`` bytes; cancelling stops it."""
    collector: _Collector

    def cancel(d: Deferred[bytes]) -> None:
        collector.stop()

    done: Deferred[bytes] = Deferred(cancel)
    collector = _Collector(done, limit, what, response.length)
    response.deliverBody(collector)
    return done


@attr.s(frozen=True, auto_attribs=True)
class Result:
    """What one lookup gave: facts, or why there are none.

    :param outcome: one of :data:`OUTCOMES`.
    :param reason: empty when facts were found.
    """

    outcome: str
    facts: ImageFacts | None = None
    reason: str = ""


@attr.s(auto_attribs=True)
class Lookups:
    """The blocking side: looks images up from a pool thread, through the reactor.

    :param client: the registry client (reactor side).
    :param call: runs a Deferred-returning function on the reactor and
        waits (``partial(blockingCallFromThread, reactor)``).
    :param record: counts an outcome (the metrics).
    :param clock: monotonic seconds, for the budget of one webhook.
    """

    client: RegistryClient
    call: Callable[..., Any]
    record: Callable[[str], None] = lambda outcome: None
    clock: Callable[[], float] = time.monotonic

    def allowed(self, host: str) -> bool:
        """Whether ``host`` (as an event names it) may be looked up."""
        return canonical_host(host) in self.client.endpoints

    def look(
        self, reference: Reference | None, credential: Credential | None, deadline: float
    ) -> Result:
        """Look one image up, by ``deadline`` (on :attr:`clock`).  Never raises."""
        result = self._look(reference, credential, deadline)
        self.record(result.outcome)
        return result

    def _look(
        self, reference: Reference | None, credential: Credential | None, deadline: float
    ) -> Result:
        if reference is None:
            return Result(FAILED, reason="the event names no image that can be looked up")
        if reference.host not in self.client.endpoints:
            return Result(UNLISTED, reason=f"{reference.host} is not in [registry] hosts")
        budget = deadline - self.clock()
        if budget <= 0:
            return Result(TIMEOUT, reason="no time left for this webhook's lookups")
        try:
            facts, cached = self.call(self.client.inspect, reference, credential, budget)
        except LookupFailed as e:
            return Result(e.outcome, reason=e.reason)
        except Exception as e:  # never at the cost of the build
            log.failure("registry lookup failed unexpectedly")
            return Result(FAILED, reason=f"{type(e).__name__}: {_first_line(e)}")
        return Result(CACHED if cached else FOUND, facts)


def read_dockerconfigjson(raw: bytes | str) -> dict[str, Credential]:
    """The credentials in a ``kubernetes.io/dockerconfigjson`` Secret's
    ``.dockerconfigjson``, by canonical host.  Entries it cannot read are
    left out; a document it cannot read at all gives nothing."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return {}
    found: dict[str, Credential] = {}
    for key, entry in auths.items():
        if not isinstance(key, str) or not isinstance(entry, dict):
            continue
        # Keys are host names, or URLs such as https://index.docker.io/v1/.
        host = urlsplit(key if "://" in key else f"//{key}").netloc
        username, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                continue
            username, _, password = decoded.partition(":")
        if isinstance(username, str) and isinstance(password, str) and username and host:
            found[canonical_host(host)] = Credential(username, password)
    return found
