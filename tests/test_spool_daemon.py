"""Kubernetes outages against the real daemon and the real API server: the
in-request retry, the spool, its drainer, and exactly-once builds.

The gateway reaches the API server through tests/outage.py's proxy, which
refuses or holds connections on demand.  Every sender here sends each push
once and never retries, unless a test says it retries.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attr
import pytest

from devtools import gateway as gateway_process
from devtools.outage import FORWARD, HANG, REFUSE, Proxy, proxied_kubeconfig
from devtools.projects import TOKEN, decoded, fresh, project_secret

from .conftest import Namespace
from .helpers import DOCKERHUB

pytestmark = pytest.mark.integration
URL = f"/events/webhook/acme/app?token={TOKEN}"
# Each test's pushes are numbered from its own base, so tests sharing the
# namespace never count each other's builds.
_bases = iter(range(100_000, 10_000_000, 10_000))


@attr.s(auto_attribs=True)
class Rig:
    """A gateway behind a breakable road to the API server, with a spool."""

    namespace: Namespace
    proxy: Proxy
    kubeconfig: Path
    tmp: Path
    spool: Path
    gateway: gateway_process.Daemon | None = None
    base: int = attr.ib(factory=lambda: next(_bases))

    def start(self, **settings: dict[str, object]) -> gateway_process.Daemon:
        values: dict[str, dict[str, object]] = {
            "kubernetes": {"retry_seconds": 2},
            "spool": {"path": self.spool},
        }
        for section, more in settings.items():
            values.setdefault(section, {}).update(more)
        self.gateway = gateway_process.start(self.tmp, self.namespace.name, self.kubeconfig, values)
        return self.gateway

    def push(self, n: int) -> gateway_process.Answer:
        """Push number ``n`` of this test, sent once."""
        assert self.gateway is not None
        return self.gateway.post(URL, fresh(DOCKERHUB, self.base + n))

    def burst(self, numbers: range, senders: int = 6) -> dict[int, gateway_process.Answer]:
        """Send every push once, from several threads at a time."""
        answers: dict[int, Any] = {}
        todo = iter(numbers)
        lock = threading.Lock()

        def sender() -> None:
            while True:
                with lock:
                    n = next(todo, None)
                if n is None:
                    return
                try:
                    answers[n] = self.push(n)
                except OSError as e:  # a cut connection is an answer too: a failure
                    answers[n] = e

        threads = [threading.Thread(target=sender) for _ in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return answers

    def builds_by_push(self) -> dict[int, list[str]]:
        """This test's build Secrets in Kubernetes, by push number."""
        secrets = self.namespace.plane.core.list_namespaced_secret(
            self.namespace.name, label_selector="component=build"
        )
        found: dict[int, list[str]] = {}
        for s in secrets.items:
            data = decoded(self.namespace.plane.api.sanitize_for_serialization(s))
            n = json.loads(data["payload"])["push_data"]["pushed_at"] - 1700000000 - self.base
            if 0 <= n < 10_000:
                found.setdefault(n, []).append(s.metadata.name)
        return found

    def wait_for_builds(self, count: int, timeout: float = 60) -> dict[int, list[str]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.builds_by_push()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.3)

    def wait_for_metric(self, name: str, value: float, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.metric(name) != value and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.metric(name) == value

    def metric(self, name: str) -> float:
        assert self.gateway is not None
        text = self.gateway.request("GET", "/metrics").body.decode()
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        assert match, text
        return float(match.group(1))


@pytest.fixture
def rig(namespace: Namespace, project: str, tmp_path: Path) -> Iterator[Rig]:
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "via-proxy.kubeconfig"
    )
    rig = Rig(namespace, proxy, kubeconfig, tmp_path, tmp_path / "spool.sqlite")
    yield rig
    proxy.set(FORWARD)
    if rig.gateway is not None:
        rig.gateway.stop()
    proxy.close()


def _names(answer: Any) -> list[str]:
    return list(answer.json()["builds"])


def assert_exactly_once(answers: dict[int, Any], found: dict[int, list[str]]) -> None:
    """Every push answered 2xx has exactly its one build, under the name it was told."""
    codes = Counter(getattr(a, "status", type(a).__name__) for a in answers.values())
    assert set(codes) <= {200, 202}, codes
    assert sorted(found) == sorted(answers), f"lost: {sorted(set(answers) - set(found))}"
    duplicated = {n: names for n, names in found.items() if len(names) != 1}
    assert not duplicated, duplicated
    for n, answer in answers.items():
        assert found[n] == _names(answer)


@pytest.mark.parametrize("mode", [REFUSE, HANG])
def test_outage_past_the_budget_loses_nothing(rig: Rig, mode: str) -> None:
    """With the API server refused or hanging for longer than the retry
    budget, in the middle of a burst from a sender that never retries,
    every push is answered 2xx (202 while it is away), and once it is back
    every build exists, once, under the name the sender was told."""
    rig.start()
    answers = rig.burst(range(0, 5))
    rig.proxy.set(mode)
    answers.update(rig.burst(range(5, 17)))
    queued = [n for n in range(5, 17) if getattr(answers[n], "status", None) == 202]
    assert queued == list(range(5, 17)), {n: answers[n] for n in range(5, 17)}
    assert all(answers[n].json()["status"] == "queued" for n in queued)
    assert rig.builds_by_push().keys() == set(range(0, 5))  # nothing while it is away
    rig.proxy.set(FORWARD)
    answers.update(rig.burst(range(17, 22)))
    found = rig.wait_for_builds(22)
    assert_exactly_once(answers, found)
    log = rig.gateway.log() if rig.gateway else ""
    assert log.count("queued build ") >= 12 and "drained spooled build" in log


def test_short_outage_is_ridden_out(rig: Rig) -> None:
    """An outage shorter than the retry budget is answered 200 once the API
    server is back, and nothing goes to the spool."""
    rig.start(kubernetes={"retry_seconds": 15})
    rig.proxy.set(REFUSE)
    result: dict[str, Any] = {}
    refused = rig.proxy.refused
    sender = threading.Thread(target=lambda: result.update(answer=rig.push(0)))
    sender.start()
    assert rig.gateway is not None
    rig.gateway.wait_in_flight(1)
    # Refused twice while the webhook is in flight: it is retrying (the
    # readiness check, every 5 s, accounts for one at the most).
    rig.proxy.wait_refused(refused + 2)
    rig.proxy.set(FORWARD)
    sender.join(30)
    assert result["answer"].status == 200, result["answer"].body
    assert rig.builds_by_push() == {0: _names(result["answer"])}
    assert rig.metric("brigade_crgw_spool_depth") == 0
    assert "queued build" not in (rig.gateway.log() if rig.gateway else "")


def test_sigkill_with_a_spool_then_restart_drains_once(rig: Rig) -> None:
    """A gateway SIGKILLed with builds in its spool drains them after a
    restart; the senders' own retries racing the drainer, and a retry of a
    delivery whose answer was lost, still make one build each."""
    gateway = rig.start()
    warm = rig.push(8)  # the gateway knows the project from before the outage
    assert warm.status == 200
    rig.proxy.set(REFUSE)
    answers = rig.burst(range(0, 8))
    assert {a.status for a in answers.values()} == {202}
    answers[8] = warm
    # A retry of a spooled delivery while Kubernetes is still away.
    again = rig.push(3)
    assert again.status == 202 and _names(again) == _names(answers[3])
    rig.wait_for_metric("brigade_crgw_spool_depth", 8)  # refreshed every second
    gateway.process.kill()
    gateway.process.wait(10)
    rig.proxy.set(FORWARD)
    rig.start()
    # Senders whose answers were lost retry now, racing the drainer.
    retried = rig.burst(range(0, 8, 2))
    assert {a.status for a in retried.values()} == {200}
    found = rig.wait_for_builds(9)
    assert_exactly_once(answers, found)
    for n, answer in retried.items():
        assert _names(answer) == found[n]
    rig.wait_for_metric("brigade_crgw_spool_depth", 0)


def test_sigkill_right_after_the_spool_write(rig: Rig) -> None:
    """A gateway killed as soon as a build is in its spool, before the
    sender read any answer: the sender's retry after the restart and the
    drainer together make exactly one build, under the spooled name."""
    import socket
    import sqlite3

    gateway = rig.start()
    assert rig.push(1).status == 200  # the gateway knows the project
    rig.proxy.set(REFUSE)
    body = fresh(DOCKERHUB, rig.base)
    sender = socket.create_connection(("127.0.0.1", gateway.port))
    sender.sendall(
        b"POST " + URL.encode() + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    names: list[str] = []
    deadline = time.monotonic() + 30
    while not names and time.monotonic() < deadline:
        time.sleep(0.05)
        if rig.spool.exists():
            db = sqlite3.connect(f"file:{rig.spool}?mode=ro", uri=True)
            try:
                names = [row[0] for row in db.execute("SELECT name FROM builds")]
            except sqlite3.OperationalError:
                pass
            finally:
                db.close()
    assert names, "nothing was spooled"
    gateway.process.kill()
    gateway.process.wait(10)
    sender.close()  # whatever was on its way is never read
    rig.proxy.set(FORWARD)
    rig.start()
    retried = rig.push(0)
    assert retried.status == 200 and _names(retried) == names
    deadline = time.monotonic() + 10
    restarted = rig.gateway
    assert restarted is not None
    # Drainer or retry may win; either way the entry outlived the SIGKILL.
    line = re.compile(rf"drained spooled build {names[0]}: (created|it already existed)")
    while not line.search(restarted.log()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert line.search(restarted.log()), restarted.log()
    found = rig.builds_by_push()
    assert found[0] == names and len(found) == 2


def test_full_spool_is_503(rig: Rig) -> None:
    """With the spool full a webhook is answered 503 with Retry-After and
    nothing is stored; the builds that fit are created once Kubernetes is back."""
    rig.start(spool={"max_entries": 2, "project_share": 1})
    assert rig.push(3).status == 200  # the gateway knows the project
    rig.proxy.set(REFUSE)
    first, second = rig.push(0), rig.push(1)
    assert (first.status, second.status) == (202, 202)
    third = rig.push(2)
    assert third.status == 503, third.body
    assert third.headers["retry-after"] and third.json()["status"] == "unavailable"
    rig.proxy.set(FORWARD)
    found = rig.wait_for_builds(3)
    del found[3]
    assert_exactly_once({0: first, 1: second}, found)


def test_spooled_delivery_retried_after_recovery_is_one_build(rig: Rig) -> None:
    """A delivery spooled, then sent again by its sender once Kubernetes is
    back, is one build, whichever of the two gets there first."""
    rig.start()
    known = rig.push(1)  # the gateway knows the project
    rig.proxy.set(REFUSE)
    queued = rig.push(0)
    assert queued.status == 202
    rig.proxy.set(FORWARD)
    retried = rig.push(0)
    assert retried.status == 200 and _names(retried) == _names(queued)
    assert rig.gateway is not None
    rig.gateway.wait_log(f"drained spooled build {_names(queued)[0]}: ")
    assert rig.builds_by_push() == {0: _names(queued), 1: _names(known)}


def _unreadable_row(spool: Path) -> None:
    from brigade_crgw.delivery.spool import Spool

    Spool.open(str(spool), 10).close()
    db = sqlite3.connect(spool)
    db.execute("INSERT INTO builds (name, queued, secret) VALUES ('b', 1, 'not json')")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("not sqlite", "cannot read the spool"),
        ("unreadable row", "holds an unreadable entry"),
        ("no directory", "No such file or directory"),
    ],
)
def test_spool_problem_at_start_is_one_line_and_78(
    tmp_path: Path, namespace: Namespace, damage: str, says: str
) -> None:
    """A spool that cannot be used (not SQLite, a row that cannot be read, a
    directory that does not exist) stops the daemon at start with exit code
    78 (systemd does not restart it) and one line naming the file, without
    twistd's usage text; what the file holds is left as it was."""
    spool = tmp_path / "spool.sqlite"
    if damage == "not sqlite":
        spool.write_bytes(b"precious, but not a database\n" * 50)
    elif damage == "unreadable row":
        _unreadable_row(spool)
    else:
        spool = tmp_path / "nowhere" / "spool.sqlite"
    before = spool.read_bytes() if damage == "not sqlite" else None
    with pytest.raises(RuntimeError) as raised:
        gateway_process.start(
            tmp_path, namespace.name, namespace.gateway_kubeconfig, {"spool": {"path": spool}}
        )
    output = str(raised.value)
    assert "the gateway exited with 78:" in output, output
    lines = [line for line in output.splitlines() if str(spool) in line]
    assert len(lines) == 1 and says in lines[0], output
    assert lines[0].startswith("brigade-crgw: "), output
    assert "Usage:" not in output and "Traceback" not in output, output
    if damage == "not sqlite":
        assert spool.read_bytes() == before
    elif damage == "unreadable row":
        assert sqlite3.connect(spool).execute("SELECT secret FROM builds").fetchall() == [
            ("not json",)
        ]
    else:
        assert not spool.parent.exists()


def _post_to(rig: Rig, project: str, n: int) -> gateway_process.Answer:
    assert rig.gateway is not None
    return rig.gateway.post(
        f"/events/webhook/{project}?token={TOKEN}", fresh(DOCKERHUB, rig.base + n)
    )


def test_builds_of_a_deleted_project_are_dropped(rig: Rig, namespace: Namespace) -> None:
    """Builds spooled for a project that is deleted before Kubernetes comes
    back are not created: the drainer drops them with a log line naming
    each, and brigade_crgw_spool_dropped_total counts them."""
    from brigade_crgw.brigade import project_id

    core = namespace.plane.core
    core.create_namespaced_secret(namespace.name, project_secret("acme/gone"))
    rig.start()
    assert _post_to(rig, "acme/gone", 0).status == 200  # the gateway knows it
    rig.proxy.set(REFUSE)
    queued = [_post_to(rig, "acme/gone", n) for n in (1, 2)]
    assert [a.status for a in queued] == [202, 202], [a.body for a in queued]
    core.delete_namespaced_secret(project_id("acme/gone"), namespace.name)
    rig.proxy.set(FORWARD)
    rig.wait_for_metric("brigade_crgw_spool_dropped_total", 2, timeout=30)
    rig.wait_for_metric("brigade_crgw_spool_depth", 0)
    assert set(rig.builds_by_push()) == {0}
    log = rig.gateway.log() if rig.gateway else ""
    for answer in queued:
        (name,) = _names(answer)
        assert f"dropped spooled build {name}: its project {project_id('acme/gone')}" in log


def test_one_project_cannot_fill_the_spool(rig: Rig, namespace: Namespace) -> None:
    """With [spool] project_share, a project that filled its share of the
    spool gets 503 while another project's pushes are still spooled (202);
    the spool's depth shows within seconds, backing off or not."""
    namespace.plane.core.create_namespaced_secret(namespace.name, project_secret("acme/other"))
    rig.start(spool={"max_entries": 4, "project_share": 0.5})
    assert rig.push(0).status == 200 and _post_to(rig, "acme/other", 1).status == 200
    rig.proxy.set(REFUSE)
    first, second, third = rig.push(2), rig.push(3), rig.push(4)
    assert (first.status, second.status) == (202, 202)
    assert third.status == 503 and third.json()["status"] == "unavailable", third.body
    other = _post_to(rig, "acme/other", 5)
    assert other.status == 202, other.body
    rig.wait_for_metric("brigade_crgw_spool_depth", 3, timeout=5)
    rig.proxy.set(FORWARD)
    found = rig.wait_for_builds(5)
    assert set(found) == {0, 1, 2, 3, 5}


def test_kubernetes_refusal_is_422_and_never_spooled(rig: Rig, namespace: Namespace) -> None:
    """A build Kubernetes refuses for good (a Secret over 1 MiB, from a huge
    defaultScript) is answered 422 with the reason, at once, and is neither
    retried nor spooled."""
    namespace.plane.core.create_namespaced_secret(
        namespace.name,
        # The project Secret just fits in 1 MiB; with the payload beside the
        # script, the build Secret does not.
        project_secret("acme/huge", defaultScript="/" * (1024 * 1024 - 400)),
    )
    rig.start(kubernetes={"retry_seconds": 20})
    started = time.monotonic()
    answer = rig.gateway.post(  # type: ignore[union-attr]
        f"/events/webhook/acme/huge?token={TOKEN}", fresh(DOCKERHUB, rig.base)
    )
    assert answer.status == 422, answer.body
    assert answer.json()["status"] == "rejected"
    assert "1048576" in answer.json()["reason"]
    assert time.monotonic() - started < 20  # not retried through the budget
    # Nothing to wait for: a build is queued, and logged, before the answer.
    assert rig.metric("brigade_crgw_spool_depth") == 0
    assert "queued build" not in rig.gateway.log()  # type: ignore[union-attr]


def test_forbidden_is_an_error_naming_verb_and_resource(rig: Rig, plane_namespace: str) -> None:
    """When the gateway's identity lacks a permission (its namespace is not
    the one its RBAC grants), the log has an error naming the verb and the
    resource, and the sender is told to retry, as in an outage."""
    rig.start(kubernetes={"namespace": plane_namespace, "retry_seconds": 1})
    answer = rig.push(0)
    assert answer.status == 503, answer.body
    assert answer.headers["retry-after"]
    log = rig.gateway.log()  # type: ignore[union-attr]
    assert re.search(
        rf"#error\] .*Kubernetes answered 403 to get secrets: the gateway's identity lacks "
        rf'a permission .*in the namespace "{plane_namespace}"',
        log,
    ), log


@pytest.fixture
def plane_namespace(namespace: Namespace) -> Iterator[str]:
    """A namespace where the gateway's identity has no rights at all."""
    import uuid

    name = f"crgw-norights-{uuid.uuid4().hex[:8]}"
    namespace.plane.core.create_namespace({"metadata": {"name": name}})
    yield name
    namespace.plane.core.delete_namespace(name)
