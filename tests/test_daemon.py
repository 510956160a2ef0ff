"""The real gateway: ``twistd -n brigade-crgw`` with the restricted gateway
identity, against the real API server, over real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from brigade_crgw.brigade import project_id
from devtools import gateway as gateway_process
from devtools.outage import FORWARD, HANG, REFUSE, Proxy, proxied_kubeconfig
from devtools.projects import TOKEN, decoded, fresh

from .conftest import Namespace
from .helpers import (
    BEARER,
    DOCKERHUB,
    URL_FORMS,
    body,
    builds,
    ends,
    held_webhook,
    wait_hung_up,
)

pytestmark = pytest.mark.integration
ACR_PUSH = body("acr/push.json")
# The in-request retry budget here: short, to keep the outage tests quick
# (tests/test_spool_daemon.py covers what happens after it).
RETRY = 2


@pytest.fixture(scope="module")
def gateway(
    namespace: Namespace, project: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[gateway_process.Daemon]:
    process = gateway_process.start(
        tmp_path_factory.mktemp("gw"),
        namespace.name,
        namespace.gateway_kubeconfig,
        {"kubernetes": {"retry_seconds": RETRY}},
    )
    yield process
    process.stop()


@pytest.mark.parametrize("payload", ["dockerhub", "acr"])
@pytest.mark.parametrize("url", sorted(URL_FORMS))
def test_url_form_makes_one_build(
    gateway: gateway_process.Daemon, namespace: Namespace, url: str, payload: str
) -> None:
    """Each URL form, with a Docker Hub or an ACR push, makes exactly one
    correct build Secret, which exists when the 200 arrives."""
    body = fresh({"dockerhub": DOCKERHUB, "acr": ACR_PUSH}[payload], sorted(URL_FORMS).index(url))
    before = builds(namespace)
    answer = gateway.post(url, body, BEARER)
    assert answer.status == 200, answer.body
    names = answer.json()["builds"]
    after = builds(namespace)
    assert len(names) == 1 and set(after) - set(before) == set(names)
    secret = after[names[0]]
    assert secret["type"] == "brigade.sh/build"
    build = names[0].removeprefix("brigade-worker-")
    assert secret["metadata"]["labels"] == {
        "build": build,
        "component": "build",
        "heritage": "brigade",
        "project": project_id("acme/app"),
    }
    data = decoded(secret)
    assert data["payload"].encode() == body
    assert data["commit_ref"] == URL_FORMS[url]
    assert data["event_type"] == "image_push"
    assert data["event_provider"] == payload
    assert data["script"] == "events.on('image_push', () => {})"
    assert (
        data["short_title"]
        == {"dockerhub": "svendowideit/testhook:latest", "acr": "hello-world:v1"}[payload]
    )
    assert data["build_id"] == data["build_name"] == names[0]


def test_unknown_project_creates_nothing(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """An unknown project gets the same 401 as a wrong token, and no Secret."""
    before = builds(namespace)
    unknown = gateway.post("/events/webhook/nobody/nothing", DOCKERHUB, BEARER)
    wrong = gateway.post("/events/webhook/acme/app", DOCKERHUB, {"Authorization": "Bearer nope"})
    assert unknown.status == wrong.status == 401
    assert unknown.body == wrong.body
    assert builds(namespace) == before


def test_log_line_per_webhook_without_tokens(gateway: gateway_process.Daemon) -> None:
    """Each webhook logs one line with its project, registry, image, builds,
    code and duration, and no token, wherever the token was sent."""
    answer = gateway.post(f"/events/webhook/acme/app?token={TOKEN}", DOCKERHUB)
    assert answer.status == 200
    name = answer.json()["builds"][0]
    gateway.wait_log(name)
    lines = [line for line in gateway.log().splitlines() if name in line]
    assert len(lines) == 1
    line = lines[0]
    for field in (
        f"project={project_id('acme/app')}",
        "registry=dockerhub",
        "repository=svendowideit/testhook",
        "tag=latest",
        "code=200",
        "duration=",
    ):
        assert field in line
    assert TOKEN not in gateway.log()
    assert "shared-secret-never-logged" not in gateway.log()
    metrics = gateway.request("GET", "/metrics").body.decode()
    assert 'brigade_crgw_webhooks_total{code="200",registry="dockerhub"}' in metrics


@pytest.fixture
def outage(
    namespace: Namespace, project: str, tmp_path: Path
) -> Iterator[tuple[gateway_process.Daemon, Proxy]]:
    """A gateway whose road to the API server goes through a breakable proxy."""
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "via-proxy.kubeconfig"
    )
    process = gateway_process.start(
        tmp_path, namespace.name, kubeconfig, {"kubernetes": {"retry_seconds": RETRY}}
    )
    yield process, proxy
    process.stop()
    proxy.close()


@pytest.mark.parametrize("mode", [REFUSE, HANG])
def test_api_server_down_is_503_then_recovers(
    outage: tuple[gateway_process.Daemon, Proxy], namespace: Namespace, mode: str
) -> None:
    """With the API server refusing or not answering and no spool, the
    gateway answers 503 with Retry-After once its retry budget is spent,
    writes nothing, stays up, and the same webhook succeeds once the API
    server is back."""
    process, proxy = outage
    body = fresh(ACR_PUSH, 1000 + [REFUSE, HANG].index(mode))
    before = builds(namespace)
    proxy.set(mode)
    started = time.monotonic()
    answer = process.post("/events/webhook/acme/app", body, BEARER)
    elapsed = time.monotonic() - started
    assert answer.status == 503, answer.body
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["status"] == "unavailable"
    assert elapsed < RETRY + 2  # each call's timeout is cut to fit the budget
    assert process.alive()
    assert builds(namespace) == before
    proxy.set(FORWARD)
    again = process.post("/events/webhook/acme/app", body, BEARER)
    assert again.status == 200, again.body
    assert set(builds(namespace)) - set(before) == set(again.json()["builds"])


def test_sigterm_finishes_requests_in_flight(
    outage: tuple[gateway_process.Daemon, Proxy], namespace: Namespace
) -> None:
    """SIGTERM stops listening at once, lets the webhook in flight finish with
    its build, and exits 0."""
    process, proxy = outage
    proxy.set(HANG)
    answer_of = held_webhook(process, proxy, 2000)
    process.process.send_signal(signal.SIGTERM)
    process.wait_not_listening()
    assert process.alive()
    proxy.set(FORWARD)
    answer = answer_of(20)
    assert process.process.wait(20) == 0
    assert answer.status == 200, answer.body
    assert set(answer.json()["builds"]) <= set(builds(namespace))


def test_sender_hanging_up_is_one_info_line(
    outage: tuple[gateway_process.Daemon, Proxy], namespace: Namespace
) -> None:
    """A sender that hangs up while its webhook waits on Kubernetes: the work
    still finishes and makes its build, its slot is held until then, and the
    log has one info line with code 499 and no traceback."""
    process, proxy = outage
    body = fresh(DOCKERHUB, 3000)
    proxy.set(HANG)
    before = builds(namespace)
    sender = socket.create_connection(("127.0.0.1", process.port))
    sender.sendall(
        b"POST /events/webhook/acme/app HTTP/1.1\r\nHost: gw\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    process.wait_in_flight(1)
    proxy.wait_held(1)  # the webhook now waits on the held Kubernetes call
    hung_up = ends(sender)
    sender.close()
    wait_hung_up([hung_up])
    assert process.metric("brigade_crgw_webhooks_in_flight") == 1
    proxy.set(FORWARD)
    process.wait_log("code=499")
    lines = [line for line in process.log().splitlines() if "code=499" in line]
    assert len(lines) == 1, process.log()
    assert "sender closed the connection" in lines[0]
    assert "Traceback" not in process.log() and "CancelledError" not in process.log()
    assert "critical" not in process.log().lower()
    made = set(builds(namespace)) - set(before)
    assert len(made) == 1 and made.pop() in lines[0]
    metrics = process.request("GET", "/metrics").body.decode()
    assert 'brigade_crgw_webhooks_total{code="499",registry="dockerhub"} 1.0' in metrics
    assert "brigade_crgw_webhooks_in_flight 0.0" in metrics


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify accepts etc/brigade-crgw.service."""
    import shutil
    import subprocess

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd)"
    unit = (gateway_process.ROOT / "etc" / "brigade-crgw.service").read_text()
    # verify insists that ExecStart= exists; point it at this venv's twistd.
    unit = unit.replace("/opt/brigade-crgw/bin/twistd", str(gateway_process.TWISTD))
    (tmp_path / "brigade-crgw.service").write_text(unit)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "brigade-crgw.service")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_systemd_exposure_at_most_2() -> None:
    """systemd-analyze security rates the unit's exposure 2.0 or lower."""
    import re
    import shutil
    import subprocess

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd)"
    unit = gateway_process.ROOT / "etc" / "brigade-crgw.service"
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_stopped_api_server(
    gateway: gateway_process.Daemon, namespace: Namespace, plane_pid: int
) -> None:
    """With the local kube-apiserver process stopped (SIGSTOP) and no spool,
    the gateway answers 503 once its retry budget is spent and stays up;
    once the process continues (SIGCONT), the same webhook succeeds."""
    body = fresh(ACR_PUSH, 3000)
    before = builds(namespace)
    os.kill(plane_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = gateway.post("/events/webhook/acme/app", body, BEARER)
        elapsed = time.monotonic() - started
    finally:
        os.kill(plane_pid, signal.SIGCONT)
    assert answer.status == 503, answer.body
    assert answer.headers["retry-after"] == "5"
    assert elapsed < RETRY + 2  # the calls that hung were cut to fit the budget
    assert gateway.alive()
    again = gateway.post("/events/webhook/acme/app", body, BEARER)
    assert again.status == 200, again.body
    assert set(builds(namespace)) - set(before) == set(again.json()["builds"])


@pytest.fixture
def plane_pid(namespace: Namespace) -> int:
    """The local plane's kube-apiserver process (this test needs the local plane)."""
    if os.environ.get("BRIGADE_CRGW_TEST_KUBECONFIG"):
        pytest.skip("stops the local kube-apiserver; not done to a shared cluster")
    assert namespace.plane.local is not None
    state = namespace.plane.local.status()
    assert state is not None
    return state.pids["kube-apiserver"]
