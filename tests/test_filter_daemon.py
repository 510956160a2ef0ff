"""crGatewayFilter end to end: the real daemon and API server, and a real
docker-registry holding a single-platform image and a two-platform index
pushed with skopeo."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
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

TIMEOUT = 2
ANSWER_WITHIN = TIMEOUT + 8
DISTRIBUTION = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
HOST = "registry.example.com:5000"
HANGING = "hanging.example.com"
SEMVER = "image.tag.matches('^v?[0-9]+\\\\.[0-9]+\\\\.[0-9]+$')"
ARM64 = "'linux/arm64' in image.platforms"
INVALID = "image.tag =="
MISSING_LABEL = "image.labels.nope == 'x'"
PROJECTS = {
    "acme/semver": SEMVER,
    "acme/arm": ARM64,
    "acme/invalid": INVALID,
    "acme/evalerr": MISSING_LABEL,
    "acme/changing": "false",
    "acme/request": (
        "request.query.source == 'ci' && !('token' in request.query)"
        " && request.headers['content-type'].startsWith('application/vnd.docker')"
        " && !('authorization' in request.headers) && request.commit == 'main'"
    ),
}
CACHE_SECONDS = 1
_ids = itertools.count(1)


@attr.s(frozen=True, auto_attribs=True)
class World:
    gateway: gateway_process.Daemon
    namespace: Namespace
    single: R.Layout
    multi: R.Layout
    trap: Any


@pytest.fixture(scope="module")
def world(namespace: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The gateway with lookups on two hosts: a real registry holding
    acme/app:v1.2.3 (linux/amd64) and acme/app:v2 (linux/amd64 and
    linux/arm64), and one that takes connections and never answers."""
    tmp = tmp_path_factory.mktemp("filters")
    registry = R.start_registry(tmp / "registry", "none")
    trap, trap_port = R.hanging_server()
    gateway = None
    try:
        single = R.write_layout(tmp / "single", "v1.2.3", {"org.opencontainers.image.version": "1"})
        multi = R.write_layout(tmp / "multi", "v2", {}, ("linux/amd64", "linux/arm64"))
        R.push(single, registry, "acme/app")
        R.push(multi, registry, "acme/app")
        for name, expression in PROJECTS.items():
            namespace.plane.core.create_namespaced_secret(
                namespace.name, project_secret(name, crGatewayFilter=expression)
            )
        endpoints = {HOST: registry.url, HANGING: f"http://127.0.0.1:{trap_port}"}
        gateway = gateway_process.start(
            tmp,
            namespace.name,
            namespace.gateway_kubeconfig,
            {
                "gateway": {"annotate_payload": "true"},
                "kubernetes": {"project_cache_seconds": CACHE_SECONDS},
                "registry": {
                    "hosts": " ".join(endpoints),
                    "endpoints": " ".join(f"{k}={v}" for k, v in endpoints.items()),
                    "timeout": TIMEOUT,
                },
            },
        )
        yield World(gateway, namespace, single, multi, trap)
    finally:
        if gateway is not None:
            gateway.stop()
        registry.stop()
        trap.close()


def push(host: str, digest: str, tag: str) -> bytes:
    """A Distribution manifest push of acme/app, as registry:2 sends it."""
    event = {
        "id": f"filter-event-{next(_ids)}-{time.time_ns()}",
        "timestamp": "2026-01-02T15:04:05Z",
        "action": "push",
        "target": {
            "mediaType": R.OCI_MANIFEST,
            "digest": digest,
            "length": 500,
            "repository": "acme/app",
            "url": f"https://{host}/v2/acme/app/manifests/{digest}",
            "tag": tag,
        },
        "request": {"id": "r1", "addr": "10.0.0.1", "host": host, "method": "PUT"},
        "actor": {"name": "ci"},
        "source": {"addr": "registry:5000", "instanceID": "i"},
    }
    return json.dumps({"events": [event]}).encode()


def post(world: World, project: str, body: bytes) -> gateway_process.Answer:
    return world.gateway.request(
        "POST",
        f"/events/webhook/{project}?token={TOKEN}",
        body,
        DISTRIBUTION,
        timeout=ANSWER_WITHIN,
    )


def built(world: World, answer: gateway_process.Answer) -> dict[str, str]:
    """The one decoded build Secret the answer names."""
    assert answer.status == 200, answer.body
    assert answer.json()["status"] == "Success", answer.body
    [name] = answer.json()["builds"]
    return decoded(builds(world.namespace)[name])


def ignored(answer: gateway_process.Answer) -> str:
    """The reason of a 200 ignored."""
    assert answer.status == 200, answer.body
    assert answer.json()["status"] == "ignored", answer.body
    return str(answer.json()["reason"])


def test_semver(world: World) -> None:
    """The semver filter: a build for v1.2.3, 200 ignored naming the filter for
    latest, answered without any lookup (the hanging host is never reached)."""
    build = built(world, post(world, "acme/semver", push(HOST, world.single.digest, "v1.2.3")))
    assert json.loads(build["payload"])["brigade_crgw"]["tag"] == "v1.2.3"
    reason = ignored(post(world, "acme/semver", push(HANGING, world.single.digest, "latest")))
    assert reason == (
        "the project's crGatewayFilter (image.tag.matches('^v?[0-9]+\\\\.[0-9]+\\\\.[0-9]+$')) "
        f"is false for {HANGING}/acme/app:latest"
    )
    world.trap.settimeout(0)
    with pytest.raises(BlockingIOError):
        world.trap.accept()


def test_platforms(world: World) -> None:
    """A filter on image.platforms is judged on the lookup: a build for the
    two-platform index, 200 ignored for the amd64-only image."""
    build = built(world, post(world, "acme/arm", push(HOST, world.multi.digest, "v2")))
    annotation = json.loads(build["payload"])["brigade_crgw"]
    assert annotation["platforms"] == ["linux/amd64", "linux/arm64"]
    assert annotation["lookup"] in ("found", "cached")
    reason = ignored(post(world, "acme/arm", push(HOST, world.single.digest, "v1.2.3")))
    assert reason == (
        f"the project's crGatewayFilter ({ARM64}) is false for {HOST}/acme/app:v1.2.3"
    )


def test_invalid_expression(world: World) -> None:
    """An expression that does not compile: 422 with CEL's error for every
    webhook of the project, logged as an error once."""
    for tag in ("v1.2.3", "v9.9.9"):
        answer = post(world, "acme/invalid", push(HOST, world.single.digest, tag))
        assert answer.status == 422, answer.body
        assert answer.json()["status"] == "invalid filter"
        assert answer.json()["reason"].startswith(
            "crGatewayFilter does not compile: ERROR: <input>:1:13: Syntax error: "
        )
    line = "crGatewayFilter 'image.tag ==' cannot be used"
    deadline = time.monotonic() + 10
    while line not in world.gateway.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert world.gateway.log().count(line) == 1


def test_evaluation_error(world: World) -> None:
    """An evaluation error (a label the image lacks) is a 200 ignored with the error."""
    reason = ignored(post(world, "acme/evalerr", push(HOST, world.single.digest, "v1.2.3")))
    assert reason.startswith(
        f"the project's crGatewayFilter ({MISSING_LABEL}) could not be evaluated for "
        f"{HOST}/acme/app:v1.2.3, which counts as false: "
    )
    assert "nope" in reason
    assert world.gateway.alive()


def test_changed_expression(world: World) -> None:
    """A changed expression is used once the project is read again
    (project_cache_seconds): the push it left out is then built."""
    body = push(HOST, world.single.digest, "v1.2.3")
    assert "is false for" in ignored(post(world, "acme/changing", body))
    world.namespace.plane.core.patch_namespaced_secret(
        project_id("acme/changing"),
        world.namespace.name,
        {"stringData": {"crGatewayFilter": "image.tag == 'v1.2.3'"}},
    )
    deadline = time.monotonic() + CACHE_SECONDS + 20
    while True:
        answer = post(world, "acme/changing", push(HOST, world.single.digest, "v1.2.3"))
        if answer.json()["status"] == "Success" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert built(world, answer)["build_id"]


def test_cli_reads_the_projects_filter(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """brigade-crgw filter test reads the project's expression with the
    operator's identity: v1.2.3 passes acme/semver's filter, latest does not."""
    from brigade_crgw.cli import main

    admin = ["--kubeconfig", str(world.namespace.plane.admin_kubeconfig), "-n"]
    for tag, expected in (("v1.2.3", 0), ("latest", 1)):
        payload = tmp_path / f"{tag}.json"
        payload.write_bytes(push(HOST, world.single.digest, tag))
        argv = ["filter", "test", "acme/semver", "--payload", str(payload)]
        argv += ["--header", f"Content-Type: {DISTRIBUTION['Content-Type']}"]
        assert main([*argv, *admin, world.namespace.name]) == expected
        out = capsys.readouterr().out
        assert f"crGatewayFilter: {SEMVER}" in out and f"acme/app:{tag}" in out


def test_request_variable(world: World) -> None:
    """request, over real HTTP: the query without the token, the headers
    without credentials, the URL's commit-ish."""
    body = push(HOST, world.single.digest, "v1.2.3")
    for query, expected in (("&source=ci", "Success"), ("&source=other", "ignored")):
        answer = world.gateway.request(
            "POST",
            f"/events/webhook/acme/request/main?token={TOKEN}{query}",
            body,
            {**DISTRIBUTION, "Authorization": f"Bearer {TOKEN}"},
            timeout=ANSWER_WITHIN,
        )
        assert answer.status == 200 and answer.json()["status"] == expected, answer.body
