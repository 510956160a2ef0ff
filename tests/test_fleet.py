"""A fleet of real gateways behind the real HAProxy, configured by the
documented recipe (etc/haproxy.cfg): a replica killed or restarted, and an
API-server outage, cost no push to a sender that never retries.

HAProxy checks every 200 ms here (the recipe says 2 s) so that each test
takes seconds; everything else is the recipe's.  ``make soak``
(bench/soak.py) runs the same for minutes with the recipe's own checks.
The replicas reach the API server through devtools/outage.py's proxy, which
can refuse every connection (the API server "killed").
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import attr
import pytest

from devtools import gateway as gateway_process
from devtools import haproxy
from devtools.gateway import exchange
from devtools.outage import FORWARD, REFUSE, Proxy, proxied_kubeconfig
from devtools.plane.processes import free_port
from devtools.projects import TOKEN, decoded, fresh

from .conftest import Namespace
from .helpers import DOCKERHUB
from .machine import wait_for

pytestmark = pytest.mark.integration
URL = f"/events/webhook/acme/app?token={TOKEN}"
CHECKS = "200ms"
_bases = iter(range(20_000_000, 30_000_000, 10_000))


@attr.s(auto_attribs=True)
class Fleet:
    """Replicas, each with its own port and spool, and HAProxy once
    :meth:`balance` ran."""

    namespace: Namespace
    tmp: Path
    proxy: Proxy
    kubeconfig: Path
    settings: dict[str, dict[str, object]] = attr.ib(factory=dict)
    ports: list[int] = attr.ib(factory=list)
    replicas: list[gateway_process.Daemon] = attr.ib(factory=list)
    balancer: haproxy.Balancer | None = None
    base: int = attr.ib(factory=lambda: next(_bases))

    def start(self, i: int, spool: bool = True) -> gateway_process.Daemon:
        """Replica ``i``, started (again) on its own port."""
        while len(self.ports) <= i:
            self.ports.append(free_port())
        settings = {k: dict(v) for k, v in self.settings.items()}
        settings.setdefault("kubernetes", {}).setdefault("retry_seconds", 2)
        if spool:
            settings.setdefault("spool", {})["path"] = self.tmp / f"spool-{i}.sqlite"
        replica = gateway_process.start(
            self.tmp, self.namespace.name, self.kubeconfig, settings, port=self.ports[i]
        )
        if i < len(self.replicas):
            self.replicas[i] = replica
        else:
            self.replicas.append(replica)
        return replica

    def balance(self, retry_on: str | None = None) -> haproxy.Balancer:
        """HAProxy in front of every replica, once it sees them all up."""
        self.balancer = haproxy.start(
            self.tmp,
            [(name(i), port) for i, port in enumerate(self.ports)],
            check_interval=CHECKS,
            retry_on=retry_on,
        )
        self.balancer.wait_for({name(i): "UP" for i in range(len(self.ports))})
        return self.balancer

    def restart(self, i: int) -> int:
        """SIGTERM replica ``i``, start it again once it exited, wait until
        HAProxy takes it again; its exit code."""
        assert self.balancer is not None
        code = self.replicas[i].stop()
        self.start(i)
        self.balancer.wait_for({name(i): "UP"})
        return code

    def push(self, n: int, port: int | None = None) -> str:
        """Push ``n``, once, through HAProxy (or to ``port``); the answer's
        code, or the error's name."""
        assert port is not None or self.balancer is not None
        try:
            answer = exchange(
                port or self.balancer.port,  # type: ignore[union-attr]
                "POST",
                URL,
                fresh(DOCKERHUB, self.base + n),
                {"Content-Type": "application/json"},
            )
        except OSError as e:
            return type(e).__name__
        return str(answer.status)

    def builds(self) -> Counter[int]:
        """This test's build Secrets in Kubernetes, counted by push number."""
        plane = self.namespace.plane
        found: Counter[int] = Counter()
        listed = plane.core.list_namespaced_secret(
            self.namespace.name, label_selector="component=build"
        )
        for s in listed.items:
            data = decoded(plane.api.sanitize_for_serialization(s))
            n = json.loads(data["payload"])["push_data"]["pushed_at"] - 1700000000 - self.base
            if 0 <= n < 10_000:
                found[n] += 1
        return found

    def assert_one_build_each(self, answers: dict[int, str]) -> None:
        """Every push was answered 2xx and, once the spools drained, has
        exactly one build."""
        codes = Counter(answers.values())
        assert set(codes) <= {"200", "202"}, codes
        deadline = time.monotonic() + 60
        while set(self.builds()) != set(answers) and time.monotonic() < deadline:
            time.sleep(0.5)
        found = self.builds()
        assert set(found) == set(answers), f"lost: {sorted(set(answers) - set(found))}"
        assert set(found.values()) == {1}, {n: c for n, c in found.items() if c != 1}


def name(i: int) -> str:
    return f"gateway-{i}"


@attr.s(auto_attribs=True)
class Senders:
    """Threads sending distinct pushes through HAProxy, each exactly once,
    until the block ends."""

    fleet: Fleet
    count: int = 4
    answers: dict[int, str] = attr.ib(factory=dict)
    _stop: threading.Event = attr.ib(factory=threading.Event)
    _threads: list[threading.Thread] = attr.ib(factory=list)
    _lock: threading.Lock = attr.ib(factory=threading.Lock)
    _next: int = 0

    def __enter__(self) -> Senders:
        self._threads = [threading.Thread(target=self._send) for _ in range(self.count)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def _send(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                n, self._next = self._next, self._next + 1
            self.answers[n] = self.fleet.push(n)

    def wait_for(self, more: int) -> None:
        """Until ``more`` further answers came back."""
        target = len(self.answers) + more
        wait_for(lambda: len(self.answers) >= target, timeout=120)


@pytest.fixture
def fleet(namespace: Namespace, project: str, tmp_path: Path) -> Iterator[Fleet]:
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "via-proxy.kubeconfig"
    )
    fleet = Fleet(namespace, tmp_path, proxy, kubeconfig)
    yield fleet
    proxy.set(FORWARD)
    for replica in fleet.replicas:
        replica.stop()
    if fleet.balancer is not None:
        fleet.balancer.stop()
    proxy.close()


def metric(replica: gateway_process.Daemon, series: str) -> float:
    text = replica.request("GET", "/metrics").body.decode()
    match = re.search(rf"^{series} (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


def test_a_killed_replica_costs_no_push(fleet: Fleet) -> None:
    """Behind the recipe's HAProxy, a replica SIGKILLed while single-attempt
    senders push (its POSTs cut short are replayed on the other replica)
    and then restarted: every push is answered 2xx and makes one build."""
    fleet.start(0), fleet.start(1)
    balancer = fleet.balance()
    with Senders(fleet) as senders:
        senders.wait_for(30)
        fleet.replicas[0].process.kill()
        senders.wait_for(30)
        fleet.start(0)
        balancer.wait_for({name(0): "UP"})
        senders.wait_for(30)
    fleet.assert_one_build_each(senders.answers)


def test_outage_keeps_warm_spooling_replicas_ready(fleet: Fleet) -> None:
    """While the API server is away, replicas with a spool and a warm project
    cache stay ready, so HAProxy keeps them and every push is taken durably
    (202); one without a spool, and one started during the outage (nothing
    read, so no token can be checked), are not ready.  Kubernetes' own
    state is in the log and in brigade_crgw_kubernetes_up."""
    fleet.start(0), fleet.start(1), fleet.start(2, spool=False)
    for i in range(3):  # each replica reads the project once
        assert fleet.push(1000 + i, port=fleet.ports[i]) == "200"
    balancer = fleet.balance()
    fleet.proxy.set(REFUSE)
    balancer.wait_for({name(2): "DOWN"})
    cold = fleet.start(3)
    for replica in fleet.replicas[:2]:
        assert replica.request("GET", "/readyz").status == 200
        assert metric(replica, "brigade_crgw_kubernetes_up") == 0
        assert metric(replica, "brigade_crgw_ready") == 1
        assert "Kubernetes is unavailable" in replica.log()
    for replica in (fleet.replicas[2], cold):
        answer = replica.request("GET", "/readyz")
        assert answer.status == 503 and answer.json()["status"] != "ready", answer.body
    assert balancer.states()[name(0)] == balancer.states()[name(1)] == "UP"
    answers = {n: fleet.push(n) for n in range(12)}
    assert set(answers.values()) == {"202"}, answers
    assert "not ready: " in cold.log() and "no project has been read" in cold.log()
    fleet.proxy.set(FORWARD)
    answers.update({1000 + i: "200" for i in range(3)})
    fleet.assert_one_build_each(answers)


def test_rolling_restart_without_retries_refuses_none(fleet: Fleet) -> None:
    """Behind HAProxy that never retries (as a Service or an ingress does),
    a rolling restart of every replica with [server] shutdown_delay longer
    than two failed checks refuses no single-attempt push: each replica
    turns unready at SIGTERM, keeps taking pushes until HAProxy has let it
    go, then drains and exits 0."""
    fleet.settings = {"server": {"shutdown_delay": 2}}
    fleet.start(0), fleet.start(1)
    fleet.balance(retry_on="none")
    with Senders(fleet) as senders:
        senders.wait_for(20)
        for i in (0, 1):
            assert fleet.restart(i) == 0
            senders.wait_for(20)
    fleet.assert_one_build_each(senders.answers)


def test_shutdown_delay_keeps_answering_while_unready(fleet: Fleet) -> None:
    """After SIGTERM with a shutdown delay, /readyz is 503 at once while a
    webhook is still answered 200 (its connection closed after the answer);
    once the delay is over the port is closed and the process exits 0."""
    fleet.settings = {"server": {"shutdown_delay": 3}}
    replica = fleet.start(0)
    assert fleet.push(0, port=replica.port) == "200"
    replica.process.send_signal(signal.SIGTERM)
    wait_for(lambda: replica.request("GET", "/readyz").status == 503, timeout=10)
    answer = replica.post(URL, fresh(DOCKERHUB, fleet.base + 1))
    assert answer.status == 200 and answer.headers.get("connection") == "close", answer
    assert replica.process.wait(30) == 0

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", replica.port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    assert refused()
    log = replica.log()
    assert log.index("taking webhooks for 3s more") < log.index("shutdown_delay is over")
    fleet.assert_one_build_each({0: "200", 1: "200"})


def test_a_failed_listen_ends_the_process(namespace: Namespace, tmp_path: Path) -> None:
    """A gateway whose port is taken exits at once with code 1 and one line
    saying so, instead of running on without a listener (systemd restarts it)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError) as raised:
            gateway_process.start(tmp_path, namespace.name, namespace.gateway_kubeconfig, port=port)
    output = str(raised.value)
    assert "the gateway exited with 1:" in output, output
    lines = [line for line in output.splitlines() if "cannot listen on" in line]
    assert lines and f"tcp:{port}:interface=127.0.0.1" in lines[0], output
    assert "Traceback" not in output and "drain" not in output, output
