"""The third hardening round's probes against the real daemon: a hostile
registry (an index of 15,000 platforms, a folded challenge of 480 KB, a
token realm on another port, a registry that hangs), a flood of unknown
projects while Kubernetes hangs, bodies declared and never sent, and the
small ones (huge numbers, deep nesting, ``Expect: 100-continue``,
``/readyz``, ``%ff``).  Each gets the answer a careful sender would expect:
a JSON refusal, a build, or a 202."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attr
import pytest

from devtools import gateway as gateway_process
from devtools.hostile_registry import HostileRegistry
from devtools.outage import HANG, Proxy, proxied_kubeconfig
from devtools.projects import decoded, fresh, project_secret

from . import registry as R
from .conftest import Namespace
from .helpers import BEARER, DOCKERHUB, builds

pytestmark = pytest.mark.integration

GOOD = "/events/webhook/acme/app"
DISTRIBUTION = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
SIGNED = {"X-Hub-Signature-256": "sha256=" + "0" * 64}
PLATFORMS = 15_000


@attr.s(frozen=True, auto_attribs=True)
class World:
    gateway: gateway_process.Daemon
    namespace: Namespace
    proxy: Proxy
    hostile: HostileRegistry
    listed: HostileRegistry


def push(host: str, repository: str, tag: str = "v1") -> bytes:
    """A Distribution push of ``host/repository:tag`` without a digest, so
    the gateway asks the registry for one."""
    event = {
        "id": f"event-{uuid.uuid4().hex}",
        "timestamp": "2026-01-02T15:04:05Z",
        "action": "push",
        "target": {
            "mediaType": R.OCI_MANIFEST,
            "repository": repository,
            "url": f"https://{host}/v2/{repository}/manifests/{tag}",
            "tag": tag,
        },
        "request": {"id": "r1", "addr": "10.0.0.1", "host": host, "method": "PUT"},
    }
    return json.dumps({"events": [event]}).encode()


@pytest.fixture(scope="module")
def world(namespace: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The gateway behind a breakable road to the API server, with a spool,
    annotated payloads and two hostile registries: one whose token realm is
    on another port and not listed, one whose realm is listed too."""
    tmp = tmp_path_factory.mktemp("hostile")
    hostile, listed = HostileRegistry(platforms=PLATFORMS, delay=60), HostileRegistry()
    realm_host = listed.realm.split("/")[2]
    core = namespace.plane.core
    core.create_namespaced_secret(
        namespace.name,
        R.dockerconfigjson("hostile-pull", [hostile.address, listed.address], "puller", "pw"),
    )
    ensure_project(namespace)
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp / "proxied.kubeconfig"
    )
    endpoints = {hostile.address: hostile.url, listed.address: listed.url}
    gateway = gateway_process.start(
        tmp,
        namespace.name,
        kubeconfig,
        {
            "kubernetes": {"request_timeout": 2, "retry_seconds": 2},
            "gateway": {"annotate_payload": "true"},
            "registry": {
                "hosts": " ".join([*endpoints, realm_host]),
                "endpoints": " ".join(f"{k}={v}" for k, v in endpoints.items()),
                "timeout": 3,
                "pull_secret": "hostile-pull",
            },
            "spool": {"path": tmp / "spool.db"},
        },
    )
    try:
        yield World(gateway, namespace, proxy, hostile, listed)
        assert gateway.alive(), gateway.log()[-3000:]
        assert "Traceback" not in gateway.log(), gateway.log()
    finally:
        gateway.stop()
        proxy.close()
        hostile.stop()
        listed.stop()


def built(world: World, answer: gateway_process.Answer) -> dict[str, str]:
    """The one build Secret a 200 answer names, decoded."""
    assert answer.status == 200, answer.body
    [name] = answer.json()["builds"]
    return decoded(builds(world.namespace)[name])


def test_wide_index_is_cut_and_marked(world: World) -> None:
    """An index of 15,000 platforms makes a build (annotated) whose
    platforms are cut to a few, the cut counted in the annotation and
    written in the long title."""
    build = built(world, world.gateway.post(GOOD, push(world.hostile.address, "wide/one"), BEARER))
    note = json.loads(build["payload"])["brigade_crgw"]
    kept = note["platforms"]
    assert kept[0] == "linux/amd64" and 0 < len(kept) < 100
    assert note["platforms_omitted"] == PLATFORMS - len(kept)
    assert f"and {PLATFORMS - len(kept):,} more" in build["long_title"]
    assert len(build["long_title"]) < 4096
    assert note["lookup"] == "found"


def test_folded_challenge_is_refused_while_the_reactor_answers(world: World) -> None:
    """A 401 whose challenge is 30 folded lines of 16,000 bytes is refused
    for its size: the webhook gets its plain build, and /healthz answers
    meanwhile."""
    answers: list[gateway_process.Answer] = []
    sender = threading.Thread(
        target=lambda: answers.append(
            world.gateway.post(GOOD, push(world.hostile.address, "folded/app"), BEARER)
        )
    )
    sender.start()
    try:
        for _ in range(5):
            assert world.gateway.request("GET", "/healthz", timeout=10).status == 200
    finally:
        sender.join(30)
    build = built(world, answers[0])
    assert json.loads(build["payload"])["brigade_crgw"]["lookup"] != "found"
    assert "folded/app:v1 gave nothing (too_large): the registry's answer has over" in (
        world.gateway.log()
    )


def test_realm_elsewhere_gets_no_credential(world: World) -> None:
    """A token realm on another port of the registry's host is asked
    without the pull secret's credential; a realm listed in [registry]
    hosts gets it.  Both lookups find the image."""
    for registry in (world.hostile, world.listed):
        answer = world.gateway.post(GOOD, push(registry.address, "realm/app"), BEARER)
        assert json.loads(built(world, answer)["payload"])["brigade_crgw"]["lookup"] == "found"
    assert world.hostile.realm_saw == [""]
    assert len(world.listed.realm_saw) == 1 and world.listed.realm_saw[0].startswith("Basic ")


def test_lookup_log_line_is_escaped(world: World) -> None:
    """The "lookup … gave nothing" line shows a tag's newline and ESC
    escaped, never raw."""
    tag = "v1\n2026-01-01 [forged#info] hi\x1b[2J"
    answer = world.gateway.post(
        GOOD, push(world.hostile.address, "wide/escaped", tag), {**BEARER, **DISTRIBUTION}
    )
    assert answer.status == 200, answer.body
    log = world.gateway.log()
    assert "wide/escaped:v1\\x0a2026-01-01 [forged#info] hi\\x1b[2J gave nothing" in log
    assert "\x1b" not in log
    assert not any(line.startswith("2026-01-01 [forged") for line in log.splitlines())


def test_sigterm_ends_lookups_and_retries(namespace: Namespace, tmp_path: Path) -> None:
    """With lookups held by a registry that never answers, the API server
    hanging and 64 pushes in flight, SIGTERM ends the process (exit 0) past
    its drain deadline: every sender is answered, 202 with its build queued."""
    ensure_project(namespace)
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    slow = HostileRegistry(delay=120)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "proxied.kubeconfig"
    )
    gateway = gateway_process.start(
        tmp_path,
        namespace.name,
        kubeconfig,
        {
            "server": {"drain_seconds": 4},
            "kubernetes": {"request_timeout": 2},
            "registry": {
                "hosts": slow.address,
                "endpoints": f"{slow.address}={slow.url}",
                "timeout": 3,
            },
            "spool": {"path": tmp_path / "spool.db"},
        },
    )
    answers: list[Any] = []
    try:
        assert gateway.post(GOOD, fresh(DOCKERHUB, 7100), BEARER).status == 200
        proxy.set(HANG)

        def send(n: int) -> None:
            try:
                body = push(slow.address, f"slow/app{n}")
                answers.append(gateway.post(GOOD, body, BEARER, timeout=60).status)
            except OSError as e:
                answers.append(repr(e))

        senders = [threading.Thread(target=send, args=(n,)) for n in range(64)]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 20
        while len(slow.requests) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(slow.requests) >= 8, "the lookups never reached the registry"
        gateway.process.send_signal(signal.SIGTERM)
        code = gateway.process.wait(60)
        for sender in senders:
            sender.join(10)
    finally:
        gateway.stop()
        proxy.close()
        slow.stop()
    assert code == 0, gateway.log()[-3000:]
    assert len(answers) == 64 and set(answers) <= {202, 503}, answers
    assert 202 in answers
    assert "unanswered" not in gateway.log()


def ensure_project(namespace: Namespace) -> None:
    """acme/app exists (the module's other gateway may have made it)."""
    from kubernetes.client.exceptions import ApiException

    try:
        namespace.plane.core.create_namespaced_secret(namespace.name, project_secret("acme/app"))
    except ApiException as e:
        if e.status != 409:
            raise
