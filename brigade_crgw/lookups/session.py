"""One lookup's requests, following the OCI Distribution spec: a tag
resolved to its digest (``HEAD``), the manifest read (an index lists its
platforms, and one of its images stands for it), the image's config blob read
for its labels; a 401 answered once with what its challenge asks for."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import attr
from twisted.logger import Logger

from ..events import DOCKER_HUB_API, LABELS, MAX_PLATFORMS, ImageFacts
from .cache import FactsCache
from .credentials import MAX_CHALLENGE, Credential, parse_challenge
from .documents import (
    ACCEPT,
    CONFIG_LIMIT,
    INDEXES,
    MANIFEST_LIMIT,
    MAX_REDIRECTS,
    SMALL_LIMIT,
    json_object,
    labels_of,
    origin,
    platform_of,
    read_body,
    refuse_status,
    verify_digest,
)
from .guard import Guard, Resolver, address_kind, is_ip
from .outcomes import FAILED, REFUSED, UNAUTHORIZED, LookupFailed, first_line
from .references import DIGEST, Reference

log = Logger()

# Docker Hub's token service, whose realm is not registry-1.docker.io's host.
DOCKER_HUB_AUTH = "auth.docker.io"


@attr.s(auto_attribs=True)
class Session:
    """One lookup: the endpoint, the repository, and the authorization won so far.

    :param http: a treq-like client; :param cache: facts by digest;
    :param guard: where redirects and realms were judged to lead;
    :param resolve: host name to addresses.
    :param listed: the hosts of ``[registry] hosts``: a token realm on one
        of them may be sent the credential (see :meth:`_realm_trusted`).
    """

    http: Any
    cache: FactsCache
    guard: Guard
    resolve: Resolver
    endpoint: str
    repository: str
    credential: Credential | None
    listed: frozenset[str] = frozenset()
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
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        facts = await self._facts(digest)
        self.cache.put(key, facts)
        return facts, False

    async def _resolve_tag(self, tag: str) -> str:
        response = await self._request("HEAD", self._url("manifests", tag), {"Accept": ACCEPT})
        header = response.headers.getRawHeaders("docker-content-digest") or []
        if header and DIGEST.match(header[0]):
            return str(header[0])
        # A registry that does not say: the manifest itself tells.
        response = await self._request("GET", self._url("manifests", tag), {"Accept": ACCEPT})
        body = await self._read(response, MANIFEST_LIMIT, "manifest")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    async def _manifest(self, digest: str) -> tuple[dict[str, Any], str]:
        response = await self._request("GET", self._url("manifests", digest), {"Accept": ACCEPT})
        body = await self._read(response, MANIFEST_LIMIT, "manifest")
        verify_digest(digest, body, "manifest")
        doc = json_object(body, "manifest")
        media_type = doc.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            header = response.headers.getRawHeaders("content-type") or [""]
            media_type = header[0].split(";")[0].strip()
        return doc, media_type

    async def _facts(self, digest: str) -> ImageFacts:
        doc, media_type = await self._manifest(digest)
        platforms: list[str] = []
        omitted = 0
        index_annotations: object = None
        if media_type in INDEXES or isinstance(doc.get("manifests"), list):
            # Read in one go, keeping only what is needed: the index itself
            # (up to 4 MiB, tens of MiB parsed) is let go before the next
            # request, not held while the image is fetched.
            platforms, omitted, chosen, index_annotations = _read_index(doc)
            del doc
            if chosen is None:
                return _capped(digest, media_type, platforms, labels_of(index_annotations), omitted)
            image, _ = await self._manifest(chosen)
        else:
            image = doc
        config_digest = (image.get("config") or {}).get("digest")
        if not isinstance(config_digest, str) or not DIGEST.match(config_digest):
            # Not an image (a chart, an artifact): what the manifests say.
            return _capped(
                digest,
                media_type,
                platforms,
                labels_of(image.get("annotations"), index_annotations),
                omitted,
            )
        config = await self._blob(config_digest)
        inner = config.get("config")
        if not platforms:
            platform = platform_of(config)
            platforms = [platform] if platform else []
        labels = labels_of(
            inner.get("Labels") if isinstance(inner, dict) else None,
            image.get("annotations"),
            index_annotations,
        )
        return _capped(digest, media_type, platforms, labels, omitted)

    async def _blob(self, digest: str) -> dict[str, Any]:
        url = self._url("blobs", digest)
        response = await self._request("GET", url, {}, follow=True)
        body = await self._read(response, CONFIG_LIMIT, "config")
        verify_digest(digest, body, "config")
        return json_object(body, "config")

    async def _request(
        self, method: str, url: str, headers: dict[str, str], follow: bool = False
    ) -> Any:
        """Send one request to the endpoint, answering a 401 challenge once,
        and following a blob's redirects when ``follow``."""
        response = await self._send(method, url, headers, self.authorization)
        if response.code == 401:
            challenge = (response.headers.getRawHeaders("www-authenticate") or [""])[0]
            await self._discard(response)
            if len(challenge) > MAX_CHALLENGE:
                raise LookupFailed(
                    REFUSED, f"the registry's challenge is over {MAX_CHALLENGE} bytes"
                )
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
            refuse_status(response.code, method)
        return response

    async def _send(
        self, method: str, url: str, headers: dict[str, str], authorization: str | None
    ) -> Any:
        sent = dict(headers)
        if authorization and origin(url) == origin(self.endpoint):
            sent["Authorization"] = authorization
        return await self.http.request(
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
        trusted = self._realm_trusted(realm)
        if self.credential is not None and trusted:
            headers["Authorization"] = self.credential.basic()
        response = await self.http.request(
            "GET", url, headers=headers, allow_redirects=False, unbuffered=True
        )
        if response.code in (401, 403):
            await self._discard(response)
            if self.credential is not None and not trusted:
                raise LookupFailed(
                    UNAUTHORIZED,
                    f"the token realm {urlsplit(realm).netloc} is not the registry's own "
                    "nor in [registry] hosts: asked without the credential, and refused",
                )
            raise LookupFailed(UNAUTHORIZED, "the token service refused the credentials")
        if not 200 <= response.code < 300:
            await self._discard(response)
            raise LookupFailed(FAILED, f"the token service answered {response.code}")
        doc = json_object(await self._read(response, SMALL_LIMIT, "token"), "token answer")
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise LookupFailed(FAILED, "the token service sent no token")
        return f"Bearer {token}"

    def _realm_trusted(self, realm: str) -> bool:
        """Whether a token realm may be sent the pull secret's credential:
        only when it has the endpoint's very scheme, host and port, when its
        ``host[:port]`` is listed in ``[registry] hosts``, or when it is
        Docker Hub's own token service for Docker Hub.  Any other realm is
        asked for a token without it (enough for public images)."""
        if origin(realm) == origin(self.endpoint):
            return True
        netloc = urlsplit(realm).netloc.lower()
        if netloc in self.listed:
            return True
        return origin(self.endpoint) == origin(DOCKER_HUB_API) and origin(realm) == (
            "https",
            DOCKER_HUB_AUTH,
        )

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
        self.guard.judged(parts.hostname, frozenset(allowed))

    async def _kinds(self, host: str) -> set[str]:
        if is_ip(host):
            return {address_kind(host)}
        try:
            addresses = await self.resolve(host)
        except Exception as e:
            raise LookupFailed(FAILED, f"cannot resolve {host}: {first_line(e)}") from None
        return {address_kind(a) for a in addresses}

    async def _read(self, response: Any, limit: int, what: str) -> bytes:
        return await read_body(response, limit, what)

    async def _discard(self, response: Any) -> None:
        """Read and drop a small answer, so that its connection can be
        reused; a large one is cut off."""
        try:
            await read_body(response, SMALL_LIMIT, "answer")
        except LookupFailed:
            pass


def _read_index(doc: dict[str, Any]) -> tuple[list[str], int, str | None, dict[str, str]]:
    """An index's first :data:`MAX_PLATFORMS` platforms (attestations and
    signatures, listed as unknown/unknown, left out), how many more it
    lists, the digest of the image that stands for it (``linux/amd64``,
    else the first), and its annotations that name :data:`LABELS`."""
    platforms: list[str] = []
    omitted = 0
    chosen: str | None = None
    for child in doc.get("manifests") or []:
        if not isinstance(child, dict):
            continue
        platform = platform_of(child.get("platform"))
        if not platform or platform.startswith("unknown/"):
            continue
        if len(platforms) < MAX_PLATFORMS:
            platforms.append(platform)
        else:
            omitted += 1
        child_digest = child.get("digest")
        if isinstance(child_digest, str) and DIGEST.match(child_digest):
            if chosen is None or platform == "linux/amd64":
                chosen = child_digest
    annotations = doc.get("annotations")
    kept = {}
    if isinstance(annotations, dict):
        kept = {key: annotations[key] for key in LABELS.values() if key in annotations}
    return platforms, omitted, chosen, kept


def _capped(
    digest: str,
    media_type: str,
    platforms: list[str],
    labels: dict[str, str],
    omitted: int = 0,
) -> ImageFacts:
    """The facts, with the platforms past :data:`MAX_PLATFORMS` counted, not kept."""
    kept = tuple(platforms[:MAX_PLATFORMS])
    return ImageFacts(digest, media_type, kept, labels, omitted + len(platforms) - len(kept))
