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
import socket
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
from devtools.hostile_registry import push_event as push
from devtools.outage import FORWARD, HANG, REFUSE, Proxy, proxied_kubeconfig
from devtools.projects import TOKEN, decoded, fresh, project_secret

from . import registry as R
from .conftest import Namespace
from .helpers import BEARER, DOCKERHUB, builds, read_all

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


@pytest.mark.parametrize(
    "body",
    [
        b'{"push_data": {"pushed_at": 1%s, "tag": "v1"}, "repository": {"repo_name": "a/b"}}'
        % (b"0" * 400),
        b'{"events": [{"action": "push", "timestamp": 1%s, "target": {"repository": "a/b",'
        b' "tag": "v1"}}]}' % (b"0" * 400),
    ],
    ids=["dockerhub", "distribution"],
)
def test_huge_numbers_are_400(world: World, body: bytes) -> None:
    """A number too large for any timestamp is a JSON 400, not a 503 and a traceback."""
    answer = world.gateway.post(GOOD, body, BEARER)
    assert answer.status == 400, answer.body
    assert "too large" in answer.json()["reason"]


def test_deep_binary_cloudevent_is_not_a_crash(world: World) -> None:
    """A binary CloudEvent whose data is 2,000 nested arrays gets the same
    answer with annotate_payload on as a shallow one, never 503."""
    headers = {
        **BEARER,
        "ce-specversion": "1.0",
        "ce-type": "x.image.pushed",
        "ce-source": "s",
        "ce-id": uuid.uuid4().hex,
    }
    deep = world.gateway.post(GOOD, b"[" * 2000 + b"]" * 2000, headers)
    headers["ce-id"] = uuid.uuid4().hex
    shallow = world.gateway.post(GOOD, b"[[]]", headers)
    assert deep.status == shallow.status != 503, (deep.body, shallow.body)
    assert deep.headers["content-type"] == "application/json"


def raw_request(port: int, head: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head)
    return s


def head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {length}\r\n\r\n"
    ).encode()


def test_expect_continue_only_after_the_headers_are_judged(world: World) -> None:
    """``Expect: 100-continue`` gets no 100 with a 413 or a 401 judged at
    the headers, and a 100 before the body of a webhook that is let in."""
    expect = "Expect: 100-continue\r\n"
    with raw_request(world.gateway.port, head(GOOD, 10 * 1024 * 1024, expect)) as s:
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer
    with raw_request(world.gateway.port, head("/events/webhook/no/body", 40_000, expect)) as s:
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in answer
    body = fresh(DOCKERHUB, 7001) + b" " * 30_000
    auth = f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n"
    with raw_request(world.gateway.port, head(GOOD, len(body), expect + auth)) as s:
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_undecodable_path_is_a_json_400(world: World) -> None:
    """A path holding ``%ff`` (not UTF-8) is a JSON 400, logged without a traceback."""
    for path in ("/events/webhook/ac%ffme/app", "/%ff"):
        answer = world.gateway.post(path, DOCKERHUB, BEARER)
        assert answer.status == 400 and answer.json()["status"] == "bad request"
    assert "Traceback" not in world.gateway.log()


def test_unknown_and_existing_projects_look_alike_before_credentials(world: World) -> None:
    """A signed request whose body (large enough to be judged at its
    headers) has not come yet is held the same for an unknown project as for
    an existing one, then both get the same 401."""
    body = DOCKERHUB + b" " * 40_000
    sockets = [
        raw_request(
            world.gateway.port,
            head(path, len(body), "X-Hub-Signature-256: sha256=" + "0" * 64 + "\r\n"),
        )
        for path in (GOOD, "/events/webhook/nobody/here")
    ]
    try:
        for s in sockets:
            s.settimeout(1)
            with pytest.raises(TimeoutError):
                s.recv(100)
        for s in sockets:
            s.settimeout(10)
            s.sendall(body)
        answers = [read_all(s) for s in sockets]
    finally:
        for s in sockets:
            s.close()
    assert answers[0].startswith(b"HTTP/1.1 401 ")
    assert answers[0].split(b"\r\n\r\n")[1] == answers[1].split(b"\r\n\r\n")[1]


def test_declared_bodies_never_sent_hold_no_budget(world: World) -> None:
    """64 signed requests declaring 256 KiB bodies and sending none (the
    whole max_buffered_bytes, if it were charged on the declaration) leave
    room for an honest push."""
    sockets = [
        raw_request(
            world.gateway.port,
            head(GOOD, 256 * 1024, "X-Hub-Signature-256: sha256=" + "0" * 64 + "\r\n"),
        )
        for _ in range(64)
    ]
    try:
        answer = world.gateway.post(GOOD, fresh(DOCKERHUB, 7002), BEARER)
        assert answer.status == 200, answer.body
    finally:
        for s in sockets:
            s.close()


def test_readyz_tells_the_world_only_ready_or_not(namespace: Namespace, tmp_path: Path) -> None:
    """With the API server unreachable (and no spool), /readyz is a bare 503
    to anyone not on this host (here: through a proxy that says so): no
    address, no identity.  The reason is in the log, and on loopback."""
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    proxy.set(REFUSE)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "proxied.kubeconfig"
    )
    gateway = gateway_process.start(tmp_path, namespace.name, kubeconfig)
    try:
        deadline = time.monotonic() + 30
        while "Kubernetes is unavailable" not in gateway.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        world = gateway.request("GET", "/readyz", headers={"X-Forwarded-For": "203.0.113.9"})
        assert world.status == 503 and world.json() == {"status": "unavailable"}
        local = gateway.request("GET", "/readyz")
        assert local.status == 503 and "no spool" in local.json()["reason"]
        assert "not ready: " in gateway.log()
    finally:
        gateway.stop()
        proxy.close()


def test_unknown_project_flood_in_an_outage_leaves_room(world: World) -> None:
    """While the API server hangs, 64 requests naming unknown projects (with
    some bearer) cannot take the slots or the threads a known project's push
    needs: it is answered 202, its build queued."""
    assert world.gateway.post(GOOD, fresh(DOCKERHUB, 7003), BEARER).status == 200
    world.proxy.set(HANG)
    told: list[int] = []

    def unknown(n: int) -> None:
        path = f"/events/webhook/flood-{n}/app"
        told.append(world.gateway.post(path, DOCKERHUB, {"Authorization": "Bearer x"}).status)

    flood = [threading.Thread(target=unknown, args=(n,)) for n in range(64)]
    try:
        for thread in flood:
            thread.start()
        answer = world.gateway.post(GOOD, fresh(DOCKERHUB, 7004), BEARER)
        assert answer.status == 202, answer.body
        assert answer.json()["status"] == "queued"
    finally:
        world.proxy.set(FORWARD)
        for thread in flood:
            thread.join(30)
    assert set(told) <= {401, 503}, told


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
