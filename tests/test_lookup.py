"""The registry client's rules, in memory: treq's StubTreq in front of a small
scripted registry, so each rule (redirects, sizes, digests, challenges,
timeouts, the cache) is shown on its own.  The same client against the real
docker-registry is in test_lookup_registry.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.server import NOT_DONE_YET, Request

from brigade_crgw.events import MAX_PLATFORMS, ImageFacts
from brigade_crgw.lookups.bridge import LookupBridge
from brigade_crgw.lookups.cache import FactsCache
from brigade_crgw.lookups.credentials import Credential, parse_challenge, read_dockerconfigjson
from brigade_crgw.lookups.documents import CONFIG_LIMIT, MANIFEST_LIMIT, OCI_INDEX, OCI_MANIFEST
from brigade_crgw.lookups.guard import address_kind
from brigade_crgw.lookups.outcomes import (
    FAILED,
    FOUND,
    NOT_FOUND,
    REFUSED,
    TIMEOUT,
    TOO_LARGE,
    UNAUTHORIZED,
    UNLISTED,
    LookupFailed,
)
from brigade_crgw.lookups.references import Reference, usable_reference

from .scripted import (
    ENDPOINT,
    Scripted,
    basic_only,
    blob,
    client,
    digest_of,
    failure,
    image,
    inspect,
    redirect,
    run,
)

REVISION = "0123456789abcdef0123456789abcdef01234567"


def test_tag_to_labels() -> None:
    """A tag resolves to its digest; the config's OCI labels and platform are read."""
    registry = Scripted()
    manifest, _ = image(
        registry,
        {
            "org.opencontainers.image.revision": REVISION,
            "org.opencontainers.image.source": "https://example.com/acme/app",
            "unrelated": "x",
        },
    )
    facts, cached = inspect(client(registry))
    assert not cached
    assert facts == ImageFacts(
        manifest,
        OCI_MANIFEST,
        ("linux/arm64",),
        {"revision": REVISION, "source": "https://example.com/acme/app"},
    )
    assert registry.seen[0][0] == "HEAD"


def test_index_lists_platforms_and_reads_amd64() -> None:
    """An index lists every platform but attestations; linux/amd64's config gives the labels."""
    registry = Scripted()
    arm, _ = image(registry, {"org.opencontainers.image.version": "arm"}, tag="arm")
    amd, _ = image(registry, {"org.opencontainers.image.version": "amd"}, tag="amd")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "digest": arm,
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                },
                {"digest": amd, "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": amd, "platform": {"os": "unknown", "architecture": "unknown"}},
            ],
        }
    ).encode()
    base = f"{ENDPOINT}/v2/acme/app/manifests"
    registry.on("HEAD", f"{base}/v1", blob(index, OCI_INDEX))
    registry.on("GET", f"{base}/{digest_of(index)}", blob(index, OCI_INDEX))
    facts, _ = inspect(client(registry))
    assert facts.digest == digest_of(index)
    assert facts.platforms == ("linux/arm64/v8", "linux/amd64")
    assert facts.labels == {"version": "amd"}


def test_cache_by_digest_only() -> None:
    """A second lookup of a tag asks its digest again but reads nothing else;
    a lookup by a cached digest makes no request at all."""
    registry = Scripted()
    manifest, _ = image(registry, {})
    c = client(registry)
    inspect(c)
    before = len(registry.seen)
    _, cached = inspect(c)
    assert cached and [s[0] for s in registry.seen[before:]] == ["HEAD"]
    before = len(registry.seen)
    _, cached = inspect(c, tag="", digest=manifest)
    assert cached and len(registry.seen) == before


def test_cache_is_per_credential() -> None:
    """Facts read with one credential are not handed to a lookup with another."""
    registry = Scripted()
    manifest, _ = image(registry, {})
    c = client(registry)
    inspect(c, tag="", digest=manifest, credential=Credential("a", "1"))
    _, cached = inspect(c, tag="", digest=manifest, credential=Credential("b", "2"))
    assert not cached


def test_unlisted_host_is_never_contacted() -> None:
    """A host outside [registry] hosts fails at once, without a request."""
    registry = Scripted()
    c = client(registry)
    d = c.inspect(Reference("ghcr.io", "acme/app", "v1"), None, 3.0)
    with pytest.raises(LookupFailed) as caught:
        run(d)
    assert caught.value.outcome == UNLISTED and registry.seen == []


def test_manifest_digest_must_match() -> None:
    """A manifest whose bytes do not hash to the digest asked for is refused."""
    registry = Scripted()
    manifest, _ = image(registry, {})
    registry.on("GET", f"{ENDPOINT}/v2/acme/app/manifests/{manifest}", blob(b'{"tampered": 1}'))
    assert failure(client(registry)).outcome == FAILED


@pytest.mark.parametrize("with_length", [True, False])
def test_manifest_size_cap(with_length: bool) -> None:
    """A manifest over 4 MiB is cut off, whether or not its length is announced."""
    registry = Scripted()
    big = b'{"x":"' + b"a" * MANIFEST_LIMIT + b'"}'
    digest = digest_of(big)

    def answer(request: Request) -> bytes | int:
        request.setHeader("Docker-Content-Digest", digest)
        if request.method == b"HEAD":
            return b""
        if with_length:
            return big
        # Chunked: no Content-Length, the cap counts bytes as they come.
        for start in range(0, len(big), 65536):
            request.write(big[start : start + 65536])
        request.finish()
        return NOT_DONE_YET

    registry.on("HEAD", f"{ENDPOINT}/v2/acme/app/manifests/v1", answer)
    registry.on("GET", f"{ENDPOINT}/v2/acme/app/manifests/{digest}", answer)
    assert failure(client(registry)).outcome == TOO_LARGE


def test_config_size_cap() -> None:
    """A config blob over 1 MiB is not read."""
    registry = Scripted()
    image(registry, {"padding": "x" * CONFIG_LIMIT})
    assert failure(client(registry)).outcome == TOO_LARGE


def test_blob_redirect_followed_without_credentials() -> None:
    """A config blob redirected to a public https host is fetched there, and
    the registry's credentials stay behind."""
    registry = Scripted()
    _, config = image(registry, {"org.opencontainers.image.version": "1"}, config_route=False)
    where = f"https://cdn.example.net/b/{digest_of(config)}"
    registry.on("GET", f"{ENDPOINT}/v2/acme/app/blobs/{digest_of(config)}", redirect(where))
    credential = Credential("u", "p")
    basic_only(registry, credential)
    registry.on("GET", where, blob(config))
    facts, _ = inspect(client(registry), credential=credential)
    assert facts.labels == {"version": "1"}
    cdn = [s for s in registry.seen if s[1] == "cdn.example.net"]
    assert len(cdn) == 1 and cdn[0][3] == ""
    assert registry.seen[-2][3] == credential.basic()


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://cdn.example.net/b", "https only"),
        ("https://127.0.0.1/b", "loopback"),
        ("https://[::1]/b", "loopback"),
        ("https://10.1.2.3/b", "private"),
        ("https://192.168.0.9/b", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::ffff:127.0.0.1]/b", "loopback"),
        ("https://inside.example.net/b", "private"),
        ("https://nowhere.example.net/b", "no address"),
        ("https://0.0.0.0/b", "special"),
    ],
)
def test_blob_redirect_refused(location: str, why: str) -> None:
    """A blob redirect to http, or to a loopback, private, link-local or
    unresolvable address, is refused before any connection there."""
    registry = Scripted()
    _, config = image(registry, {}, config_route=False)
    registry.on("GET", f"{ENDPOINT}/v2/acme/app/blobs/{digest_of(config)}", redirect(location))
    error = failure(client(registry))
    assert error.outcome == REFUSED and why in error.reason
    assert all(s[1] == "registry.example.com" for s in registry.seen)


def test_private_endpoint_may_redirect_to_private() -> None:
    """An endpoint on a private address may send its blobs to another private one."""
    registry = Scripted()
    endpoint = "https://10.0.0.2"
    labels = {"org.opencontainers.image.version": "9"}
    _, config = image(registry, labels, endpoint=endpoint, config_route=False)
    where = f"https://10.0.0.3/{digest_of(config)}"
    registry.on("GET", f"{endpoint}/v2/acme/app/blobs/{digest_of(config)}", redirect(where))
    registry.on("GET", where, blob(config))
    facts, _ = inspect(client(registry, endpoint))
    assert facts.labels == {"version": "9"}


def test_manifest_redirect_refused() -> None:
    """Only blobs are redirected: a redirected manifest gives nothing."""
    registry = Scripted()
    registry.on(
        "HEAD", f"{ENDPOINT}/v2/acme/app/manifests/v1", redirect("https://cdn.example.net/m")
    )
    assert failure(client(registry)).outcome == REFUSED


def _bearer_registry(realm: str) -> tuple[Scripted, str]:
    registry = Scripted()
    manifest, _ = image(registry, {"org.opencontainers.image.revision": REVISION})
    routes = dict(registry.routes)

    def guarded(answer: Callable[[Request], bytes | int]) -> Callable[[Request], bytes | int]:
        def check(request: Request) -> bytes | int:
            if request.getHeader("authorization") != "Bearer good-token":
                request.setResponseCode(401)
                request.setHeader(
                    "WWW-Authenticate",
                    f'Bearer realm="{realm}",service="registry.example.com",'
                    'scope="repository:acme/app:pull"',
                )
                return b""
            return answer(request)

        return check

    for key, answer in routes.items():
        registry.routes[key] = guarded(answer)

    def token(request: Request) -> bytes:
        if request.getHeader("authorization") not in (None, Credential("u", "p").basic()):
            request.setResponseCode(401)
            return b""
        return json.dumps({"token": "good-token"}).encode()

    registry.on("GET", realm, token)
    return registry, manifest


def test_bearer_token_from_realm() -> None:
    """A Bearer challenge is answered with a token from its realm (asked with
    the credentials and the challenge's scope, the realm's host being listed
    in [registry] hosts); the credentials never reach the registry itself
    and the token never reaches the realm."""
    registry, manifest = _bearer_registry("https://auth.example.com/token")
    facts, _ = inspect(client(registry, also="auth.example.com"), credential=Credential("u", "p"))
    assert facts.digest == manifest and facts.labels == {"revision": REVISION}
    to_realm = [s for s in registry.seen if s[1] == "auth.example.com"]
    to_registry = [s for s in registry.seen if s[1] == "registry.example.com"]
    assert to_realm[0][2] == (
        "/token?scope=repository%3Aacme%2Fapp%3Apull&service=registry.example.com"
    )
    assert {s[3] for s in to_realm} == {Credential("u", "p").basic()}
    assert {s[3] for s in to_registry} <= {"", "Bearer good-token"}


def test_bearer_token_anonymous() -> None:
    """Without credentials the token is asked for anonymously."""
    registry, _ = _bearer_registry("https://auth.example.com/token")
    inspect(client(registry))
    assert [s[3] for s in registry.seen if s[1] == "auth.example.com"] == [""]


def test_wrong_credentials() -> None:
    """A token service that refuses the credentials gives ``unauthorized``."""
    registry, _ = _bearer_registry("https://auth.example.com/token")
    error = failure(client(registry, also="auth.example.com"), credential=Credential("u", "wrong"))
    assert error.outcome == UNAUTHORIZED


@pytest.mark.parametrize(
    "realm",
    [
        "https://auth.example.com/token",
        "https://registry.example.com:8443/token",
    ],
)
def test_realm_elsewhere_is_asked_without_the_credential(realm: str) -> None:
    """A token realm that is neither the endpoint's scheme, host and port nor
    listed in [registry] hosts (another host, another port of the same host)
    is asked for a token without the pull secret's credential."""
    registry, _ = _bearer_registry(realm)
    inspect(client(registry), credential=Credential("u", "p"))
    host = realm.split("/")[2]
    assert [s[3] for s in registry.seen if s[1] == host and "/token" in s[2]] == [""]


def test_realm_of_the_endpoint_itself_gets_the_credential() -> None:
    """A token realm at the endpoint's own scheme, host and port is sent it."""
    registry, _ = _bearer_registry("https://registry.example.com/token")
    inspect(client(registry), credential=Credential("u", "p"))
    asked = [s[3] for s in registry.seen if s[2].startswith("/token")]
    assert asked == [Credential("u", "p").basic()]


@pytest.mark.parametrize("realm", ["http://auth.example.com/token", "https://10.9.9.9/token"])
def test_unsafe_realm_refused(realm: str) -> None:
    """A realm over http (for an https endpoint) or on a private address gets no credentials."""
    registry, _ = _bearer_registry(realm)
    error = failure(client(registry), credential=Credential("u", "p"))
    assert error.outcome == REFUSED
    assert not [s for s in registry.seen if s[1] != "registry.example.com"]


def test_basic_challenge_without_credentials() -> None:
    """A Basic challenge with no credential configured gives ``unauthorized``."""
    registry = Scripted()

    def basic(request: Request) -> bytes:
        request.setResponseCode(401)
        request.setHeader("WWW-Authenticate", 'Basic realm="registry"')
        return b""

    registry.on("HEAD", f"{ENDPOINT}/v2/acme/app/manifests/v1", basic)
    assert failure(client(registry)).outcome == UNAUTHORIZED


def test_not_found() -> None:
    """An unknown tag is ``not_found``."""
    assert failure(client(Scripted()), tag="nope").outcome == NOT_FOUND


def test_hanging_registry_times_out() -> None:
    """A registry that never answers gives ``timeout`` once the time is up."""
    registry = Scripted()
    registry.on("HEAD", f"{ENDPOINT}/v2/acme/app/manifests/v1", lambda request: NOT_DONE_YET)
    clock = Clock()
    c = client(registry, clock=clock)
    d = c.inspect(Reference("registry.example.com", "acme/app", "v1"), None, 3.0)
    results: list[Any] = []
    d.addBoth(results.append)
    clock.advance(2.9)
    assert results == []
    clock.advance(0.2)
    assert isinstance(results[0].value, LookupFailed)
    assert results[0].value.outcome == TIMEOUT


def test_bridge_never_raises_and_counts() -> None:
    """The blocking bridge turns every failure into a result and counts each outcome."""
    registry = Scripted()
    image(registry, {})
    counted: list[str] = []

    def call(f: Callable[..., Deferred[Any]], *args: Any) -> Any:
        return run(f(*args))

    lookups = LookupBridge(client(registry), call, counted.append, clock=lambda: 100.0)
    ok = lookups.inspect(Reference("registry.example.com", "acme/app", "v1"), None, 103.0)
    missing = lookups.inspect(Reference("registry.example.com", "acme/app", "x"), None, 103.0)
    late = lookups.inspect(Reference("registry.example.com", "acme/app", "v1"), None, 99.0)
    none = lookups.inspect(None, None, 103.0)
    assert ok.outcome == FOUND and ok.facts is not None
    assert (missing.outcome, late.outcome, none.outcome) == (
        NOT_FOUND,
        TIMEOUT,
        FAILED,
    )
    assert counted == [FOUND, NOT_FOUND, TIMEOUT, FAILED]

    def broken(f: Any, *args: Any) -> Any:
        raise RuntimeError("bug")

    assert (
        LookupBridge(client(registry), broken)
        .inspect(Reference("registry.example.com", "acme/app", "v1"), None, float("inf"))
        .outcome
        == FAILED
    )


def test_parse_challenge() -> None:
    """Quoted values keep their commas; unquoted ones and case are handled."""
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:acme/app:pull,push", error=insufficient_scope'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:acme/app:pull,push",
        "error": "insufficient_scope",
    }
    assert parse_challenge("")[0] == ""


def test_usable_reference() -> None:
    """Only values the Distribution grammar allows become a reference; Docker
    Hub's official images live under library/."""
    assert usable_reference("index.docker.io", "nginx", "1.27", "") == Reference(
        "docker.io", "library/nginx", "1.27", ""
    )
    assert usable_reference("ghcr.io", "acme/app", "", "sha256:" + "a" * 64) is not None
    for repository, tag, digest in [
        ("acme/../app", "v1", ""),
        ("Acme/App", "v1", ""),
        ("acme/app", "v1/../x", ""),
        ("acme/app", "", "sha256:short"),
        ("acme/app?x=1", "v1", ""),
        ("acme/app", "", ""),
    ]:
        assert usable_reference("ghcr.io", repository, tag, digest) is None


def test_dockerconfigjson() -> None:
    """Both ways of writing a credential are read, Docker Hub's URL key becomes docker.io."""
    raw = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {
                    "auth": base64.b64encode(b"hub:pw:with:colons").decode()
                },
                "ghcr.io": {"username": "gh", "password": "tok"},
                "broken.example": {"auth": "%%%"},
                "empty.example": {},
            }
        }
    )
    found = read_dockerconfigjson(raw)
    assert found == {
        "docker.io": Credential("hub", "pw:with:colons"),
        "ghcr.io": Credential("gh", "tok"),
    }
    assert read_dockerconfigjson(b"not json") == {}
    assert read_dockerconfigjson(b"[]") == {}
    assert "pw" not in repr(found)


def test_address_kinds() -> None:
    """Addresses are sorted into the kinds the redirect rule names."""
    assert address_kind("8.8.8.8") == "public"
    assert address_kind("127.0.0.5") == "loopback"
    assert address_kind("::1") == "loopback"
    assert address_kind("172.16.0.1") == "private"
    assert address_kind("fd00::1") == "private"
    assert address_kind("169.254.1.1") == "link-local"
    assert address_kind("fe80::1%eth0") == "link-local"
    assert address_kind("224.0.0.1") == "special"
    assert address_kind("::ffff:10.0.0.1") == "private"


@given(st.text(max_size=200))
def test_challenge_parser_never_raises(header: str) -> None:
    """Any WWW-Authenticate text parses to a scheme and string parameters."""
    scheme, params = parse_challenge(header)
    assert isinstance(scheme, str) and all(isinstance(v, str) for v in params.values())


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_dockerconfigjson_never_raises(raw: bytes) -> None:
    """Any bytes read as a dockerconfigjson give a (perhaps empty) mapping of credentials."""
    found = read_dockerconfigjson(raw)
    assert all(isinstance(c, Credential) for c in found.values())


@given(st.text(max_size=40), st.text(max_size=80), st.text(max_size=40), st.text(max_size=80))
def test_reference_only_from_grammar(host: str, repository: str, tag: str, digest: str) -> None:
    """Whatever a payload holds, a reference is None or made of URL-safe parts only."""
    reference = usable_reference(host, repository, tag, digest)
    if reference is not None:
        for part in (reference.repository, reference.tag, reference.digest):
            assert not set(part) & set("?#%\\ \t\n") and ".." not in part


def test_a_wide_index_keeps_a_few_platforms_and_counts_the_rest() -> None:
    """An index of 5,000 platforms keeps the first MAX_PLATFORMS and counts
    the others; linux/amd64, listed last, is still the image read."""
    registry = Scripted()
    amd, _ = image(registry, {"org.opencontainers.image.version": "amd"}, tag="amd")
    children = [
        {"digest": amd, "platform": {"os": "linux", "architecture": f"arch{n}"}}
        for n in range(4999)
    ]
    children.append({"digest": amd, "platform": {"os": "linux", "architecture": "amd64"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    base = f"{ENDPOINT}/v2/acme/app/manifests"
    registry.on("HEAD", f"{base}/v1", blob(index.encode(), OCI_INDEX))
    registry.on("GET", f"{base}/{digest_of(index.encode())}", blob(index.encode(), OCI_INDEX))
    facts, _ = inspect(client(registry))
    assert len(facts.platforms) == MAX_PLATFORMS
    assert facts.platforms_omitted == 5000 - MAX_PLATFORMS
    assert facts.labels == {"version": "amd"}


def test_the_cache_is_bounded_in_bytes() -> None:
    """Entries whose labels are as large as allowed fill the cache's bytes
    long before its entry count; the least recently used go first."""
    cache = FactsCache(size=1024, max_bytes=64 * 1024)
    labels = {name: "x" * 1024 for name in ("revision", "source", "version", "created")}
    for n in range(100):
        cache.put(("e", f"r{n}", "d", ""), ImageFacts(f"sha256:{n}", labels=labels))
        assert cache.held <= cache.max_bytes
    assert cache.get(("e", "r99", "d", "")) is not None
    assert cache.get(("e", "r0", "d", "")) is None
    assert 10 < len(cache.entries) < 16


def test_a_challenge_of_480_kb_is_read_in_one_pass() -> None:
    """The folded 480 KB challenge that froze the reactor parses (its first
    MAX_CHALLENGE characters), whatever its shape: each character is looked
    at a bounded number of times, so this returns at once."""
    for header in (
        'Bearer realm="https://a/token",service="x' + " a" * 240_000,
        "Bearer " + "a" * 480_000,
        "Bearer " + 'a="' * 160_000,
        "Bearer " + "a=" * 240_000,
    ):
        scheme, _ = parse_challenge(header)
        assert scheme == "bearer"


def test_an_oversized_challenge_is_refused() -> None:
    """A 401 whose challenge is over MAX_CHALLENGE bytes is ``refused``."""
    registry = Scripted()
    image(registry, {})

    def challenge(request: Request) -> bytes:
        request.setResponseCode(401)
        request.setHeader("WWW-Authenticate", 'Bearer realm="' + "a" * 9000 + '"')
        return b""

    registry.on("HEAD", f"{ENDPOINT}/v2/acme/app/manifests/v1", challenge)
    error = failure(client(registry))
    assert error.outcome == REFUSED and "challenge" in error.reason
