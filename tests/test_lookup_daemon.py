"""Registry lookups end to end: the real daemon and API server, a real
docker-registry (htpasswd auth) holding images pushed by skopeo, and the
failure cases (wrong credential, unlisted host, a redirect to loopback, an
oversized manifest, a registry that hangs), each of which must leave the
plain build, answered in time."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import attr
import pytest

from brigade_crgw.brigade import project_id
from devtools import gateway as gateway_process
from devtools.projects import TOKEN, decoded, project_secret

from . import registry as R
from .conftest import Namespace
from .helpers import builds

pytestmark = pytest.mark.integration

SHA = "0123456789abcdef0123456789abcdef01234567"
LABELS = {
    "org.opencontainers.image.revision": SHA,
    "org.opencontainers.image.source": "https://git.example.com/acme/app",
    "org.opencontainers.image.version": "1.2.3",
    "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
}
TIMEOUT = 2
# How long a webhook may take at most, lookups included: past it the test's
# own HTTP client gives up and the test fails.
ANSWER_WITHIN = TIMEOUT + 8
DISTRIBUTION = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
SHAPE = {
    "registry",
    "action",
    "host",
    "repository",
    "tag",
    "digest",
    "pusher",
    "platforms",
    "platforms_omitted",
    "labels",
    "lookup",
}
_pushed_at = itertools.count(1700000000)


@attr.s(frozen=True, auto_attribs=True)
class World:
    gateway: gateway_process.Daemon
    namespace: Namespace
    registry: R.Registry
    single: R.Layout
    multi: R.Layout
    hang_port: int
    tokens: R.Registry


@pytest.fixture(scope="module")
def world(namespace: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The gateway with five registry hosts: a real one with images, one that
    redirects blobs to a plain-http loopback port, one with an oversized
    manifest, one that hangs, and docker.io mapped to the real one."""
    tmp = tmp_path_factory.mktemp("lookups")
    registry = R.start_registry(tmp / "registry", "htpasswd")
    tokens = R.start_registry(tmp / "tokens", "token")
    trap, trap_port = R.hanging_server()
    redirecting = R.start_registry(
        tmp / "redirecting", "none", redirect_to=f"http://127.0.0.1:{trap_port}"
    )
    oversized = R.OversizedRegistry(5 * 1024 * 1024)
    hang, hang_port = R.hanging_server()
    gateway = None
    try:
        single = R.write_layout(tmp / "single", "v1", LABELS)
        multi = R.write_layout(
            tmp / "multi", "v2", LABELS, ("linux/amd64", "linux/arm64/v8", "linux/s390x")
        )
        for layout in (single, multi):
            R.push(layout, registry, "acme/app")
            R.push(layout, redirecting, "acme/app")
        R.push(single, tokens, "acme/app")
        core = namespace.plane.core
        core.create_namespaced_secret(
            namespace.name,
            R.dockerconfigjson(
                "crgw-pull",
                ["https://index.docker.io/v1/", "registry.example.com:5000", "ghcr.io"],
                R.USER,
                R.PASSWORD,
            ),
        )
        core.create_namespaced_secret(
            namespace.name, R.dockerconfigjson("crgw-wrong", "docker.io", R.USER, "not-it")
        )
        for name, data in {
            "acme/app": {},
            "acme/wrongcred": {"crGatewayPullSecret": "crgw-wrong"},
            "acme/filtered": {"crGatewayTags": "v* !*-rc*"},
            "acme/perdigest": {"crGatewayOneBuildPerDigest": "true"},
        }.items():
            core.create_namespaced_secret(namespace.name, project_secret(name, **data))
        endpoints = {
            "docker.io": registry.url,
            "registry.example.com:5000": registry.url,
            "redirecting.example.com": redirecting.url,
            "oversized.example.com": oversized.url,
            "hanging.example.com": f"http://127.0.0.1:{hang_port}",
            "ghcr.io": tokens.url,
        }
        gateway = gateway_process.start(
            tmp,
            namespace.name,
            namespace.gateway_kubeconfig,
            {
                "gateway": {"annotate_payload": "true"},
                "registry": {
                    # The token service is on another port: listed, it is
                    # sent the pull secret's credential.
                    "hosts": " ".join([*endpoints, tokens.tokens.realm.split("/")[2]]),
                    "endpoints": " ".join(f"{k}={v}" for k, v in endpoints.items()),
                    "timeout": TIMEOUT,
                    "pull_secret": "crgw-pull",
                },
            },
        )
        yield World(gateway, namespace, registry, single, multi, hang_port, tokens)
        # Nothing ever reached the port the redirect pointed at.
        trap.settimeout(0)
        with pytest.raises(BlockingIOError):
            trap.accept()
    finally:
        if gateway is not None:
            gateway.stop()
        for closing in (
            registry.stop,
            tokens.stop,
            redirecting.stop,
            oversized.stop,
            trap.close,
            hang.close,
        ):
            closing()


def dockerhub_push(tag: str, repository: str = "acme/app") -> bytes:
    """A Docker Hub push, as Docker Hub sends it: a tag and no digest."""
    return json.dumps(
        {
            "callback_url": "https://registry.hub.docker.com/u/acme/app/hook/1/",
            "push_data": {"pushed_at": next(_pushed_at), "pusher": "alice", "tag": tag},
            "repository": {
                "repo_name": repository,
                "name": repository.split("/")[-1],
                "namespace": repository.split("/")[0],
                "is_private": True,
                "repo_url": f"https://hub.docker.com/r/{repository}",
            },
        },
        indent=2,
    ).encode()


def distribution_push(host: str, digest: str, tag: str, repository: str = "acme/app") -> bytes:
    """A Distribution manifest push naming its digest, as registry:2 sends it."""
    event = {
        "id": f"event-{next(_pushed_at)}",
        "timestamp": "2026-01-02T15:04:05Z",
        "action": "push",
        "target": {
            "mediaType": R.OCI_MANIFEST,
            "digest": digest,
            "length": 500,
            "repository": repository,
            "url": f"https://{host}/v2/{repository}/manifests/{digest}",
            "tag": tag,
        },
        "request": {"id": "r1", "addr": "10.0.0.1", "host": host, "method": "PUT"},
        "actor": {"name": "ci"},
        "source": {"addr": "registry:5000", "instanceID": "i"},
    }
    return json.dumps({"events": [event]}).encode()


def post(
    world: World,
    body: bytes,
    project: str = "acme/app",
    commit: str = "",
    headers: dict[str, str] | None = None,
) -> gateway_process.Answer:
    path = f"/events/webhook/{project}" + (f"/{commit}" if commit else "")
    return world.gateway.request(
        "POST",
        f"{path}?token={TOKEN}",
        body,
        headers or {"Content-Type": "application/json"},
        timeout=ANSWER_WITHIN,
    )


def built(world: World, answer: gateway_process.Answer) -> list[dict[str, str]]:
    """The decoded build Secrets an answer names, read as the admin."""
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["status"] == "Success", body
    stored = builds(world.namespace)
    return [decoded(stored[name]) for name in body["builds"]]


def annotation(build: dict[str, str]) -> dict[str, Any]:
    value = json.loads(build["payload"])["brigade_crgw"]
    assert set(value) == SHAPE
    return dict(value)


def short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


def test_dockerhub_push_gains_digest_platforms_commit(world: World) -> None:
    """A Docker Hub push (no digest) gains the image's digest, platform and
    commit: titles, commit_id and the brigade_crgw key, every original key kept."""
    body = dockerhub_push("v1")
    [build] = built(world, post(world, body))
    assert build["commit_id"] == SHA and build["commit_ref"] == ""
    assert build["short_title"] == f"acme/app:v1@{short(world.single.digest)}"
    assert world.single.digest in build["long_title"]
    assert "linux/amd64" in build["long_title"]
    assert "https://git.example.com/acme/app" in build["long_title"]
    payload = build["payload"].encode()
    assert payload.startswith(body.rstrip()[:-1])  # every original byte, in place
    doc = json.loads(payload)
    assert {k: v for k, v in doc.items() if k != "brigade_crgw"} == json.loads(body)
    assert annotation(build) == {
        "registry": "dockerhub",
        "action": "image_push",
        "host": "docker.io",
        "repository": "acme/app",
        "tag": "v1",
        "digest": world.single.digest,
        "pusher": "alice",
        "platforms": ["linux/amd64"],
        "platforms_omitted": 0,
        "labels": {
            "revision": SHA,
            "source": "https://git.example.com/acme/app",
            "version": "1.2.3",
            "created": "2026-01-01T00:00:00Z",
        },
        "lookup": annotation(build)["lookup"],
    }
    assert annotation(build)["lookup"] in ("found", "cached")


def test_multi_platform(world: World) -> None:
    """A multi-platform push lists every platform, in the long title and the payload."""
    [build] = built(world, post(world, dockerhub_push("v2")))
    platforms = ["linux/amd64", "linux/arm64/v8", "linux/s390x"]
    assert annotation(build)["platforms"] == platforms
    assert annotation(build)["digest"] == world.multi.digest
    assert ", ".join(platforms) in build["long_title"]
    assert build["commit_id"] == SHA


def test_commit_in_url_wins(world: World) -> None:
    """A commit-ish in the URL is the build's; the label does not replace it."""
    [build] = built(world, post(world, dockerhub_push("v1"), commit="main"))
    assert (build["commit_id"], build["commit_ref"]) == ("", "main")
    assert annotation(build)["labels"]["revision"] == SHA


def test_distribution_push_gains_labels(world: World) -> None:
    """A Distribution push that names its digest gains the image's labels."""
    body = distribution_push("registry.example.com:5000", world.single.digest, "v1")
    [build] = built(world, post(world, body, headers=DISTRIBUTION))
    value = annotation(build)
    assert value["registry"] == "distribution" and value["digest"] == world.single.digest
    assert value["labels"]["source"] == "https://git.example.com/acme/app"
    assert build["commit_id"] == SHA


def test_token_auth_registry(world: World) -> None:
    """Through a registry with token auth (the realm's JWTs verified by the
    registry), a push gains the labels; the token was asked with the pull secret."""
    before = len(world.tokens.tokens.requests) if world.tokens.tokens else 0
    body = distribution_push("ghcr.io", world.single.digest, "v1")
    [build] = built(world, post(world, body, headers=DISTRIBUTION))
    assert annotation(build)["labels"]["revision"] == SHA and build["commit_id"] == SHA
    assert world.tokens.tokens is not None
    asked = world.tokens.tokens.requests[before:]
    assert asked and all(authenticated for authenticated, _ in asked)
    assert {scope for _, scope in asked} == {"repository:acme/app:pull"}


def _plain(build: dict[str, str], outcome: str, tag: str = "v1") -> None:
    assert build["commit_id"] == ""
    assert build["short_title"] == f"acme/app:{tag}"
    value = annotation(build)
    assert value["lookup"] == outcome
    assert value["platforms"] == [] and value["labels"] == {}


def test_wrong_credential_plain_build(world: World) -> None:
    """A project whose pull secret holds a wrong password gets the plain build."""
    [build] = built(world, post(world, dockerhub_push("v1"), project="acme/wrongcred"))
    _plain(build, "unauthorized")


@pytest.mark.parametrize(
    ("host", "outcome"),
    [
        ("unlisted.example.com", "unlisted"),
        ("redirecting.example.com", "refused"),
        ("oversized.example.com", "too_large"),
        ("hanging.example.com", "timeout"),
    ],
)
def test_failures_plain_build(world: World, host: str, outcome: str) -> None:
    """An unlisted host, a blob redirect to plain-http loopback, an oversized
    manifest and a registry that hangs each leave the plain build, in time."""
    body = distribution_push(host, world.single.digest, "v1")
    [build] = built(world, post(world, body, headers=DISTRIBUTION))
    _plain(build, outcome)
    assert f"gave nothing ({outcome})" in world.gateway.log()


def test_tag_filters(world: World) -> None:
    """crGatewayTags: an excluded or unmatched tag is answered 200 ignored
    with a reason and makes no build; a matching one builds."""
    before = len(builds(world.namespace))
    for tag, why in (("v1-rc1", "excluded"), ("latest", "matches no")):
        answer = post(world, dockerhub_push(tag), project="acme/filtered")
        assert answer.status == 200 and answer.json()["status"] == "ignored", answer.body
        assert why in answer.json()["reason"]
    assert len(builds(world.namespace)) == before
    [build] = built(world, post(world, dockerhub_push("v1"), project="acme/filtered"))
    assert build["commit_id"] == SHA


def test_one_build_per_digest(world: World) -> None:
    """crGatewayOneBuildPerDigest: one digest pushed under several tags makes
    one build; the later pushes name it."""
    R.push(world.single, world.registry, "acme/app", "v1.2")
    R.push(world.single, world.registry, "acme/app", "latest")
    first = post(world, dockerhub_push("v1"), project="acme/perdigest")
    names = set()
    for tag in ("v1.2", "latest"):
        answer = post(world, dockerhub_push(tag), project="acme/perdigest")
        assert answer.status == 200 and answer.json()["status"] == "Success"
        names.update(answer.json()["builds"])
    assert names == set(first.json()["builds"])
    mine = [
        s
        for s in builds(world.namespace).values()
        if s["metadata"]["labels"]["project"] == project_id("acme/perdigest")
    ]
    assert len(mine) == 1


def test_metrics_count_outcomes(world: World) -> None:
    """/metrics counts lookups by outcome."""
    post(world, dockerhub_push("v1"))
    text = world.gateway.request("GET", "/metrics").body.decode()
    assert 'brigade_crgw_registry_lookups_total{outcome="cached"}' in text
    assert 'brigade_crgw_registry_lookups_total{outcome="timeout"}' in text


def test_same_shape_from_acr(world: World) -> None:
    """An ACR push (another format, a host not listed) carries the same keys."""
    body = json.dumps(
        {
            "id": f"acr-{next(_pushed_at)}",
            "timestamp": "2026-01-02T15:04:05Z",
            "action": "push",
            "target": {
                "mediaType": R.OCI_MANIFEST,
                "size": 500,
                "digest": world.single.digest,
                "length": 500,
                "repository": "acme/app",
                "tag": "v1",
            },
            "request": {"id": "r", "host": "acme.azurecr.io", "method": "PUT", "useragent": "x"},
        }
    ).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "AzureContainerRegistry/1.0"}
    [build] = built(world, post(world, body, headers=headers))
    value = annotation(build)
    assert value["registry"] == "acr" and value["lookup"] == "unlisted"
