"""GET /readyz: the readiness check in memory, on a clock, and the real
daemon following an API server that is cut and restored."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from brigade_crgw.config import Config
from brigade_crgw.delivery.pipeline import Pipeline
from brigade_crgw.http.app import Gateway
from brigade_crgw.http.inflight import InFlight
from brigade_crgw.http.readiness import Readiness
from brigade_crgw.kubernetes.projects import ProjectCache
from brigade_crgw.kubernetes.store import StoreUnavailable
from devtools import gateway as gateway_process
from devtools.outage import FORWARD, HANG, REFUSE, Proxy, proxied_kubeconfig

from .conftest import Namespace
from .memory import MemoryStore


class Check:
    """A check whose outcome the test sets: fine, failing, or never answering."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.error:
            raise StoreUnavailable(self.error)


def readiness(check: Callable[[], None], run: Any = maybeDeferred) -> tuple[Readiness, Clock]:
    clock = Clock()
    service = Readiness(check, run, clock, timeout=3.0, interval=5.0)
    service.startService()
    return service, clock


def readyz(service: Readiness) -> tuple[int, dict[str, Any]]:
    """GET /readyz of a Gateway wired to ``service``, in memory."""
    store = MemoryStore()
    gateway = Gateway(
        Pipeline(Config(), ProjectCache(store, 0, 0), store),
        maybeDeferred,
        InFlight(8, Clock()),
        ready=service.state,
    )
    client = StubTreq(gateway.app.resource())
    response = client.get("http://gw/readyz").result
    body = client.content(response).result
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    return response.code, json.loads(body)


def test_not_ready_until_the_first_check_answers() -> None:
    """Before any check has answered, /readyz is 503; after one, 200."""
    pending: Deferred[None] = Deferred()
    service, _ = readiness(Check(), run=lambda f: pending)
    code, body = readyz(service)
    assert (code, body["status"]) == (503, "unavailable")
    assert body["reason"].startswith("not checked yet")
    pending.callback(None)
    assert readyz(service) == (200, {"status": "ready"})


def test_a_failed_check_is_503_with_its_reason_then_recovers() -> None:
    """A check that fails makes /readyz 503 with the failure as the reason at
    the next check; the next good check makes it 200 again."""
    check = Check()
    service, clock = readiness(check)
    assert readyz(service)[0] == 200
    check.error = "Kubernetes answered 403 to get secrets"
    clock.advance(5)
    code, body = readyz(service)
    assert code == 503 and body["reason"] == (
        "Kubernetes answered 403 to get secrets; there is no spool to keep pushes in"
    )
    check.error = None
    clock.advance(5)
    assert readyz(service)[0] == 200
    assert check.calls == 3


def test_no_answer_for_too_long_is_not_ready() -> None:
    """A check that never comes back (a pool too busy to run it) makes the
    gateway unready once the last good answer is older than two intervals
    and a timeout; checks never overlap meanwhile."""
    answers: list[Deferred[None]] = []

    def run(f: Callable[[], None]) -> Deferred[None]:
        answers.append(Deferred())
        return answers[-1]

    service, clock = readiness(Check(), run)
    answers[0].callback(None)
    clock.advance(5)
    assert len(answers) == 2 and readyz(service)[0] == 200
    clock.advance(2 * 5 + 3)
    code, body = readyz(service)
    assert code == 503
    assert body["reason"].startswith("Kubernetes has not answered a check for 18s")
    assert len(answers) == 2
    answers[1].callback(None)
    assert readyz(service)[0] == 200


def test_readiness_is_logged_when_it_changes() -> None:
    """Each change of readiness is logged once with its reason (a replica
    with a warm spool stays ready while Kubernetes is away, then not when
    its spool fills); asking again, or a silence growing by seconds, logs
    nothing more."""
    from twisted.logger import globalLogPublisher

    answers: list[Deferred[None]] = []

    def run(f: Callable[[], None]) -> Deferred[None]:
        answers.append(Deferred())
        return answers[-1]

    room = [True]
    service, clock = readiness(Check(), run)
    service.spool_room = lambda: room[0]
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        answers[0].callback(None)
        clock.advance(5 * 2 + 3 + 1)
        for _ in range(3):
            assert readyz(service)[0] == 200
            clock.advance(1)
        room[0] = False
        assert readyz(service)[0] == 503 and readyz(service)[0] == 503
    finally:
        globalLogPublisher.removeObserver(events.append)
    said = [
        e["log_format"].split("{")[0] + str(e.get("reason", e.get("why", "")))
        for e in events
        if "ready" in e.get("log_format", "")
    ]
    assert len(said) == 3, said
    assert said[1].startswith("ready: Kubernetes has not answered a check for 14s")
    assert said[1].endswith("pushes go to the spool")
    assert said[2].startswith("not ready: ") and said[2].endswith("the spool is full")


def test_stop_ends_the_checks() -> None:
    """Once stopped, no check is scheduled any more."""
    check = Check()
    service, clock = readiness(check)
    service.stopService()
    clock.advance(60)
    assert check.calls == 1 and clock.getDelayedCalls() == []


# --- the real daemon -----------------------------------------------------------


def wait_for(
    gateway: gateway_process.Daemon, code: int, within: float = 20.0, saying: str = ""
) -> dict[str, Any]:
    """Poll /readyz until it answers ``code`` (with ``saying`` in the
    reason); its body.  /healthz stays 200 throughout."""
    deadline = time.monotonic() + within
    while True:
        answer = gateway.request("GET", "/readyz", timeout=5)
        assert gateway.request("GET", "/healthz", timeout=5).status == 200
        if answer.status == code and saying in answer.json().get("reason", ""):
            body: dict[str, Any] = answer.json()
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz stayed {answer.status} {answer.body!r}")
        time.sleep(0.5)


@pytest.fixture
def cut(namespace: Namespace, tmp_path: Path) -> Iterator[tuple[gateway_process.Daemon, Proxy]]:
    """The real daemon whose road to the API server goes through a breakable proxy."""
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "via-proxy.kubeconfig"
    )
    process = gateway_process.start(tmp_path, namespace.name, kubeconfig)
    yield process, proxy
    process.stop()
    proxy.close()


@pytest.mark.integration
@pytest.mark.parametrize("mode", [REFUSE, HANG])
def test_readyz_follows_the_api_server(
    cut: tuple[gateway_process.Daemon, Proxy], mode: str
) -> None:
    """With the API server refused or hanging, /readyz turns 503 with the
    reason while /healthz stays 200; restored, /readyz is 200 again."""
    gateway, proxy = cut
    assert wait_for(gateway, 200) == {"status": "ready"}
    proxy.set(mode)
    body = wait_for(gateway, 503)
    assert body["status"] == "unavailable"
    assert body["reason"] not in ("", "not checked yet"), body
    proxy.set(FORWARD)
    assert wait_for(gateway, 200) == {"status": "ready"}
    assert gateway.alive()


@pytest.mark.integration
def test_readyz_403_is_not_ready(namespace: Namespace, tmp_path: Path) -> None:
    """An identity that may not read Secrets in the namespace served (the
    API server answers 403) is not ready, and the reason says so."""
    process = gateway_process.start(
        tmp_path,
        "crgw-no-access-here",
        namespace.gateway_kubeconfig,
    )
    try:
        body = wait_for(process, 503, within=10, saying="403")
        assert "lacks a permission" in body["reason"], body
    finally:
        process.stop()
