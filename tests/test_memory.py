"""Memory and disk under hostile senders, against the real daemon: bodies
are judged at their headers, bounded in number and bytes, kept off the disk,
and a sender that hangs up does not free its in-flight slot.  (RSS figures
under 2,000 hostile connections: ``bench/hostile.py``.)"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from brigade_crgw.brigade import project_id
from devtools import gateway as gateway_process
from devtools.outage import FORWARD, HANG, Proxy, proxied_kubeconfig
from devtools.projects import TOKEN, fresh, project_secret

from .conftest import Namespace
from .helpers import DOCKERHUB, ends, read_all, wait_hung_up, wait_read
from .helpers import body as payload_body

pytestmark = pytest.mark.integration
GOOD = "/events/webhook/acme/app"


@pytest.fixture(scope="module", autouse=True)
def projects(namespace: Namespace) -> None:
    namespace.plane.core.create_namespaced_secret(namespace.name, project_secret("acme/app"))


def head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_unknown_project_is_refused_at_the_headers(namespace: Namespace, tmp_path: Path) -> None:
    """A large body to an unknown project, without credentials, gets the one
    401 as soon as its headers are in: the body is never waited for."""
    process = gateway_process.start(tmp_path, namespace.name, namespace.gateway_kubeconfig)
    try:
        wanted = process.post("/events/webhook/nobody/here", DOCKERHUB)
        for path, extra in (
            ("/events/webhook/nobody/here", ""),
            (GOOD, "Authorization: Bearer wrong\r\n"),
            (GOOD + "?token=wrong", ""),
        ):
            with socket.create_connection(("127.0.0.1", process.port), timeout=10) as s:
                s.sendall(head(path, 200_000, extra) + b"{")
                answer = read_all(s)
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
            assert answer.split(b"\r\n\r\n", 1)[1] == wanted.body
            assert b"WWW-Authenticate: Bearer" in answer
    finally:
        process.stop()


def test_connections_and_buffered_bytes_are_bounded(namespace: Namespace, tmp_path: Path) -> None:
    """Past max_connections a connection is told 503 in JSON and closed; a
    body that would pass max_buffered_bytes is refused 503 at its headers;
    the gateway goes on serving."""
    process = gateway_process.start(
        tmp_path,
        namespace.name,
        namespace.gateway_kubeconfig,
        {"server": {"max_connections": 4, "max_buffered_bytes": 50_000}},
    )
    signed = "X-Hub-Signature-256: sha256=" + "0" * 64 + "\r\n"
    try:
        held = [socket.create_connection(("127.0.0.1", process.port)) for _ in range(4)]
        # No wait: the gateway accepts connections in the order they came,
        # so it has counted these four when it takes the fifth.
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as s:
            answer = read_all(s)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["status"] == "unavailable"
        hung_up = [ends(s) for s in held]
        for s in held:
            s.close()
        wait_hung_up(hung_up)
        # Bytes are charged as they arrive: a first signed body holding
        # 28,001 of its 30,000 bytes leaves no room for a second one's 30,000
        # under 50,000.
        first = socket.create_connection(("127.0.0.1", process.port), timeout=10)
        first.sendall(head(GOOD, 30_000, signed) + b"{" + b" " * 28_000)
        wait_read(first)
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as s:
            s.sendall(head(GOOD, 30_000, signed) + b"{")
            answer = read_all(s)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"request bodies" in answer
        hung_up = [ends(first)]
        first.close()
        wait_hung_up(hung_up)
        ok = process.post(GOOD, fresh(DOCKERHUB, 7000), {"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200, ok.body
    finally:
        process.stop()


def test_read_only_tmp(namespace: Namespace, tmp_path: Path) -> None:
    """With /tmp, /var/tmp and the working directory read-only (a mount
    namespace), a large body, a chunked body and a kubeconfig with an
    inline CA all work: nothing is written to a temporary file."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root for unshare -m")
    writable = tmp_path / "gateway"
    writable.mkdir()
    kubeconfig = writable / "gateway.kubeconfig"
    kubeconfig.write_bytes(namespace.gateway_kubeconfig.read_bytes())
    assert "certificate-authority-data" in kubeconfig.read_text()
    # The gateway's own directory is a mount of its own first; the recursive
    # binds keep it (writable) while only the top of each tree turns read-only.
    mounts = f"mount --bind {shlex.quote(str(writable))} {shlex.quote(str(writable))} && "
    mounts += " && ".join(
        f"mount --rbind {shlex.quote(d)} {shlex.quote(d)} && "
        f"mount -o remount,bind,ro {shlex.quote(d)}"
        for d in ("/tmp", "/var/tmp", str(gateway_process.ROOT))
        if os.path.isdir(d)
    )
    wrapper = writable / "twistd-ro"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec unshare -m --propagation private sh -c \'{mounts} && exec "$0" "$@"\' '
        f'{shlex.quote(str(gateway_process.TWISTD))} "$@"\n'
    )
    wrapper.chmod(0o755)
    # devtools.gateway starts whatever its TWISTD names: here, the wrapper.
    original = gateway_process.TWISTD
    gateway_process.TWISTD = wrapper
    try:
        process = gateway_process.start(
            writable, namespace.name, kubeconfig, {"server": {"max_body_bytes": 300_000}}
        )
    finally:
        gateway_process.TWISTD = original
    try:
        probe = subprocess.run(
            ["nsenter", "-t", str(process.process.pid), "-m", "touch", "/tmp/probe"],
            capture_output=True,
        )
        assert probe.returncode != 0, "/tmp is writable in the gateway's namespace"
        big = json.loads(fresh(DOCKERHUB, 7100))
        big["padding"] = "x" * 150_000
        answer = process.post(GOOD, big, {"Authorization": f"Bearer {TOKEN}"})
        assert answer.status == 200, answer.body
        chunked = fresh(DOCKERHUB, 7101)
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as s:
            s.sendall(
                f"POST {GOOD}?token={TOKEN} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n\r\n".encode()
                + b"".join(
                    b"%x\r\n%s\r\n" % (len(part), part) for part in (chunked[:100], chunked[100:])
                )
                + b"0\r\n\r\n"
            )
            answer_raw = read_all(s)
        assert answer_raw.startswith(b"HTTP/1.1 200 "), answer_raw[:300]
        assert "Read-only file system" not in process.log()
    finally:
        process.stop()


def test_abandoned_batch_keeps_its_slots(namespace: Namespace, tmp_path: Path) -> None:
    """A sender that hangs up does not free its in-flight slot while its work
    goes on: with max_in_flight 1 and the API server stalled, an abandoned
    batch of 10 images still holds the slot (the next webhook gets 503 at
    once) until all 10 builds are made, then is logged as 499."""
    core = namespace.plane.core
    core.read_namespaced_secret(project_id("acme/app"), namespace.name)
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    via_proxy = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "via-proxy.kubeconfig"
    )
    process = gateway_process.start(
        tmp_path,
        namespace.name,
        via_proxy,
        {"server": {"max_in_flight": 1}, "kubernetes": {"project_cache_seconds": 60}},
    )
    try:
        # The project is cached, so the screen passes; then creating stalls.
        warm = process.post(GOOD, fresh(DOCKERHUB, 7200), {"Authorization": f"Bearer {TOKEN}"})
        assert warm.status == 200, warm.body
        proxy.set(HANG)
        quay = json.loads(payload_body("quay/repo_push.json"))
        quay["updated_tags"] = [f"batch-{n}" for n in range(10)]
        batch = json.dumps(quay).encode()
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as s:
            s.sendall(head(GOOD, len(batch), f"Authorization: Bearer {TOKEN}\r\n") + batch)
            process.wait_in_flight(1)
            hung_up = [ends(s)]
        # The sender is gone; its work goes on and holds the one slot.
        wait_hung_up(hung_up)
        answer = process.post(GOOD, fresh(DOCKERHUB, 7202), {"Authorization": f"Bearer {TOKEN}"})
        assert answer.status == 503, answer.body
        assert "in flight" in answer.json()["reason"]
        proxy.set(FORWARD)
        process.wait_log("code=499")
        [abandoned] = [line for line in process.log().splitlines() if "code=499" in line]
        assert abandoned.count("brigade-worker-") == 10, abandoned
        after = process.post(GOOD, fresh(DOCKERHUB, 7203), {"Authorization": f"Bearer {TOKEN}"})
        assert after.status == 200, after.body
    finally:
        process.stop()
        proxy.close()
