"""Hostile load on the real gateway: memory under connections that send
large bodies without credentials, and builds per hostile delivery.

Starts (or reuses) the local control plane, a fresh namespace with the
gateway's RBAC and one project, and the real ``twistd -n brigade-crgw`` with
the shipped defaults (``max_connections``, ``max_buffered_bytes``, 8
threads, 30 s read timeout).  Then, for each mode:

``unknown``
    N connections, each sending a ~100 KB body to a project that does not
    exist, without credentials, and staying open;
``signed``
    N connections, each sending the same to the existing project with a
    (wrong) signature header, so the body has to be read before it can be
    judged: the case the byte budget is for.

It prints the gateway's resident memory idle, at the peak and after the
connections closed, what the hostile connections were answered, and whether
an honest webhook was served in the middle of it.  Finally it sends the
issue's hostile deliveries (one tag repeated, identical events, too many
images) and prints the builds each made.

The third round's storms each start a gateway of their own (shipped
defaults but for what the storm needs), and print RSS (idle, peak, after)
and the slowest ``/healthz`` answer, asked every 100 ms throughout:

``registry``
    a listed registry that is hostile (:mod:`devtools.hostile_registry`):
    200 pushes of distinct repositories whose indexes list 15,000 platforms
    each (``annotate_payload = true``), 8 at a time, then 20 whose registry
    answers a 480 KB folded challenge;
``outage``
    the API server hangs (a spool is set, the project was read before); 64
    senders send pushes naming made-up projects (with a wrong bearer), over
    and over for 20 s, while an honest push is sent every second;
``bodiless``
    64 connections that declare 256 KiB bodies, carry a signature header
    and send nothing (all of ``max_buffered_bytes``, were it charged on the
    declaration), then an honest push;
``sigterm``
    a registry that holds every lookup, the API server hanging, 64 pushes,
    then SIGTERM: how long until the process exits, and what every sender
    was answered.

    PYTHONPATH=. .venv/bin/python bench/hostile.py [--connections 2000] [--body 100000]
        [--modes unknown,signed,registry,outage,bodiless,sigterm]
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attr
from kubernetes import client

from devtools import ROOT
from devtools import gateway as daemon
from devtools.hostile_registry import HostileRegistry, push_event
from devtools.outage import FORWARD, HANG, Proxy, proxied_kubeconfig
from devtools.plane import Plane
from devtools.projects import TOKEN, fresh, project_secret

PAYLOADS = ROOT / "tests" / "payloads"
DOCKERHUB = (PAYLOADS / "dockerhub" / "push-docs.json").read_bytes()
QUAY = (PAYLOADS / "quay" / "repo_push.json").read_bytes()
GOOD = "/events/webhook/bench/app"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_files(needed: int) -> None:
    """Check ``ulimit -n`` for this process, raising the soft limit if it can."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"ulimit -n: soft {soft}, hard {hard}; this client needs {needed}")
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    elif hard < needed:
        sys.exit(f"ulimit -n: the hard limit {hard} is below {needed}; raise it first")


class Sampler(threading.Thread):
    """Samples the gateway's RSS every 20 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)


def hostile(port: int, n: int, size: int, mode: str) -> list[socket.socket]:
    """Open ``n`` connections, each sending headers and a ``size`` body."""
    body = b"{" + b" " * (size - 2) + b"}"
    sockets = []
    for i in range(n):
        if mode == "unknown":
            path, extra = f"/events/webhook/nobody-{i}/app", ""
        else:
            path, extra = GOOD, f"X-Hub-Signature-256: sha256={'0' * 64}\r\n"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        sockets.append(s)
        pending = head + body
        deadline = time.monotonic() + 0.05
        while pending and time.monotonic() < deadline:
            try:
                pending = pending[s.send(pending) :]
            except (BlockingIOError, InterruptedError):
                time.sleep(0.001)
            except OSError:
                break
    return sockets


def answers(sockets: list[socket.socket]) -> collections.Counter[str]:
    """What each hostile connection was told (its status, or none yet)."""
    told: collections.Counter[str] = collections.Counter()
    for s in sockets:
        try:
            data = s.recv(1000)
        except BlockingIOError:
            told["no answer yet (connection open)"] += 1
            continue
        except OSError as e:
            told[f"connection error {e.errno}"] += 1
            continue
        if b"\r\n\r\n" in data and data.endswith(b"\r\n\r\n"):
            # Twisted writes the head and the body of a routed answer apart.
            try:
                data += s.recv(1000)
            except OSError:
                pass
        if not data.startswith(b"HTTP/"):
            told["closed"] += 1
            continue
        code = data.split(b" ", 2)[1].decode()
        try:
            reason = json.loads(data.split(b"\r\n\r\n", 1)[1]).get("reason", "")
        except ValueError:
            reason = ""
        told[f"{code} {reason}".strip()] += 1
    return told


def storm(gateway: daemon.Daemon, n: int, size: int, mode: str) -> None:
    pid = gateway.process.pid
    time.sleep(1)
    idle = rss_kib(pid)
    sampler = Sampler(pid)
    sampler.start()
    started = time.monotonic()
    sockets = hostile(gateway.port, n, size, mode)
    opened = time.monotonic() - started
    time.sleep(2)
    honest_started = time.monotonic()
    honest = gateway.post(
        GOOD,
        DOCKERHUB.replace(b"1417566161", str(int(time.time())).encode()),
        {"Authorization": f"Bearer {TOKEN}"},
    )
    honest_took = time.monotonic() - honest_started
    told = answers(sockets)
    at_peak = sampler.peak
    for s in sockets:
        s.close()
    time.sleep(3)
    sampler.running = False
    after = rss_kib(pid)
    print(f"\n[{mode}] {n} connections, {size}-byte bodies, opened in {opened:.1f} s")
    print("  hostile connections were told:")
    for answer, count in told.most_common():
        print(f"    {count:5d}  {answer}")
    print(
        f"  an honest webhook meanwhile: {honest.status} in {honest_took * 1000:.0f} ms"
        f" ({honest.body.decode().strip()[:80]})"
    )
    print(
        f"  gateway RSS: idle {idle / 1024:.1f} MiB, peak {at_peak / 1024:.1f} MiB, "
        f"after {after / 1024:.1f} MiB"
    )


def deliveries(gateway: daemon.Daemon, max_body: int) -> None:
    """The issue's hostile deliveries, and the builds each made."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    quay = json.loads(QUAY)
    quay["updated_tags"] = ["v1"] * 1000
    event = {
        "action": "push",
        "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "repository": "bench/app",
            "tag": "v1",
        },
    }
    count = max_body // (len(json.dumps(event)) + 2) - 1
    many = {"events": [event] * count}
    distinct = json.loads(QUAY)
    distinct["updated_tags"] = [f"v{n}" for n in range(1000)]
    print()
    for name, body in (
        ("Quay, one tag 1,000 times", quay),
        (f"Distribution, {count:,} identical events", many),
        ("Quay, 1,000 distinct tags", distinct),
    ):
        raw = json.dumps(body).encode()
        answer = gateway.post(GOOD, raw, bearer)
        built = len(answer.json().get("builds", [])) if answer.status == 200 else 0
        print(f"  {name} ({len(raw):,} bytes): {answer.status}, {built} builds")


class Liveness(threading.Thread):
    """Asks ``/healthz`` every 100 ms; keeps the slowest answer and the failures."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.slowest, self.failed, self.asked, self.running = port, 0.0, 0, 0, True

    def run(self) -> None:
        while self.running:
            started = time.monotonic()
            try:
                ok = daemon.exchange(self.port, "GET", "/healthz", timeout=10).status == 200
            except OSError:
                ok = False
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.asked += 1
            self.failed += not ok
            time.sleep(0.1)


@attr.s(auto_attribs=True)
class World:
    """The plane, a namespace with the project bench/app, and a scratch directory."""

    plane: Plane
    core: Any
    namespace: str
    tmp: Path
    kubeconfig: Path

    def gateway(self, settings: dict[str, dict[str, object]]) -> daemon.Daemon:
        """A gateway with the shipped defaults, ``settings`` over them."""
        base: dict[str, dict[str, object]] = {
            "server": {"read_timeout": 30},
            "kubernetes": {"threads": 8, "request_timeout": 10},
        }
        for section, values in settings.items():
            base.setdefault(section, {}).update(values)
        kubeconfig = Path(str(base["kubernetes"].pop("kubeconfig", self.kubeconfig)))
        return daemon.start(self.tmp, self.namespace, kubeconfig, base)


@contextlib.contextmanager
def watched(gateway: daemon.Daemon, name: str) -> Iterator[None]:
    """Measure RSS and /healthz around a storm, and print them."""
    pid = gateway.process.pid
    idle = rss_kib(pid)
    sampler, liveness = Sampler(pid), Liveness(gateway.port)
    sampler.start()
    liveness.start()
    try:
        yield
    finally:
        time.sleep(2)
        sampler.running = liveness.running = False
        liveness.join(15)
        after = rss_kib(pid) if gateway.alive() else 0
        print(
            f"  [{name}] gateway RSS: idle {idle / 1024:.1f} MiB, peak {sampler.peak / 1024:.1f}"
            f" MiB, after {after / 1024:.1f} MiB; /healthz asked {liveness.asked} times, "
            f"slowest {liveness.slowest * 1000:.0f} ms, {liveness.failed} failed"
        )


def in_parallel(n: int, work: Callable[[int], object]) -> collections.Counter[str]:
    """``work(0..n-1)`` on ``n`` threads; what each returned, counted."""
    told: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            result = str(work(i))
        except OSError as e:
            result = f"error {type(e).__name__}"
        with lock:
            told[result] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return told


def registry_storm(world: World, pushes: int = 200) -> None:
    registry = HostileRegistry(platforms=15_000)
    gateway = world.gateway(
        {
            "gateway": {"annotate_payload": "true"},
            "registry": {
                "hosts": registry.address,
                "endpoints": f"{registry.address}={registry.url}",
            },
        }
    )
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    print(f"\n[registry] {pushes} pushes of 15,000-platform indexes, 8 at a time; 20 folded")
    try:
        with watched(gateway, "registry"):
            started = time.monotonic()
            wide: collections.Counter[str] = collections.Counter()
            for batch in range(0, pushes, 8):

                def one(i: int, batch: int = batch) -> int:
                    body = push_event(registry.address, f"wide/r{batch + i}")
                    return gateway.post(GOOD, body, bearer).status

                wide += in_parallel(min(8, pushes - batch), one)
            took = time.monotonic() - started
            folded = in_parallel(
                20,
                lambda i: (
                    gateway.post(GOOD, push_event(registry.address, f"folded/r{i}"), bearer).status
                ),
            )
        answer = gateway.post(GOOD, push_event(registry.address, "wide/r0"), bearer)
        name = answer.json()["builds"][0]
        secret = world.core.read_namespaced_secret(name, world.namespace)
        title = base64.b64decode(secret.data["long_title"]).decode()
        payload = len(base64.b64decode(secret.data["payload"]))
        print(f"  wide pushes: {dict(wide)} in {took:.1f} s; folded: {dict(folded)}")
        print(f"  a build's long_title: {len(title):,} characters; its payload {payload:,} bytes")
        print(f"  ...{title[-90:]}")
    finally:
        gateway.stop()
        registry.stop()


def outage_storm(world: World, seconds: float = 20.0) -> None:
    server = world.plane.admin_api().configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(
        world.kubeconfig, server, proxy, world.tmp / "outage.kubeconfig"
    )
    gateway = world.gateway(
        {"kubernetes": {"kubeconfig": kubeconfig}, "spool": {"path": world.tmp / "spool.db"}}
    )
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    print(f"\n[outage] API server hanging; 64 senders of made-up projects for {seconds:g} s")
    try:
        assert gateway.post(GOOD, fresh(DOCKERHUB, 1), bearer).status == 200
        proxy.set(HANG)
        stop = time.monotonic() + seconds
        honest: list[tuple[int, float]] = []

        def flood(i: int) -> str:
            told: collections.Counter[int] = collections.Counter()
            n = 0
            while time.monotonic() < stop:
                n += 1
                path = f"/events/webhook/flood-{i}-{n}/app"
                told[gateway.post(path, DOCKERHUB, {"Authorization": "Bearer x"}).status] += 1
            return " ".join(f"{code}x{count}" for code, count in sorted(told.items()))

        def honest_sender() -> None:
            n = 10
            while time.monotonic() < stop:
                n += 1
                started = time.monotonic()
                status = gateway.post(GOOD, fresh(DOCKERHUB, n), bearer, timeout=60).status
                honest.append((status, time.monotonic() - started))
                time.sleep(1)

        with watched(gateway, "outage"):
            sender = threading.Thread(target=honest_sender)
            sender.start()
            flooded = in_parallel(64, flood)
            sender.join()
        codes = collections.Counter(code for code, _ in honest)
        slowest = max((took for _, took in honest), default=0.0)
        totals: collections.Counter[str] = collections.Counter()
        for line, count in flooded.items():
            for part in line.split():
                code, _, n = part.partition("x")
                totals[code] += int(n) * count
        print(f"  made-up projects were told: {dict(totals)}")
        print(f"  honest pushes: {dict(codes)}, slowest {slowest:.1f} s")
    finally:
        proxy.set(FORWARD)
        gateway.stop()
        proxy.close()


def bodiless_storm(world: World, n: int = 64) -> None:
    gateway = world.gateway({})
    head = (
        f"POST {GOOD} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Length: {256 * 1024}\r\n\r\n"
    ).encode()
    print(f"\n[bodiless] {n} connections declaring 256 KiB, signed, sending nothing")
    sockets = []
    try:
        with watched(gateway, "bodiless"):
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", gateway.port))
                s.sendall(head)
                sockets.append(s)
            time.sleep(1)
            started = time.monotonic()
            answer = gateway.post(GOOD, fresh(DOCKERHUB, 2), {"Authorization": f"Bearer {TOKEN}"})
            took = time.monotonic() - started
        print(f"  an honest push meanwhile: {answer.status} in {took * 1000:.0f} ms")
    finally:
        for s in sockets:
            s.close()
        gateway.stop()


def sigterm_storm(world: World, n: int = 64) -> None:
    server = world.plane.admin_api().configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(world.kubeconfig, server, proxy, world.tmp / "term.kubeconfig")
    registry = HostileRegistry(delay=120)
    gateway = world.gateway(
        {
            "kubernetes": {"kubeconfig": kubeconfig},
            "registry": {
                "hosts": registry.address,
                "endpoints": f"{registry.address}={registry.url}",
            },
            "spool": {"path": world.tmp / "term-spool.db"},
        }
    )
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    print(f"\n[sigterm] lookups held, API server hanging, {n} pushes, then SIGTERM")
    try:
        assert gateway.post(GOOD, fresh(DOCKERHUB, 3), bearer).status == 200
        proxy.set(HANG)
        told: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()

        def send(i: int) -> None:
            try:
                body = push_event(registry.address, f"slow/r{i}")
                result = str(gateway.post(GOOD, body, bearer, timeout=120).status)
            except OSError as e:
                result = f"no answer ({type(e).__name__})"
            with lock:
                told[result] += 1

        senders = [threading.Thread(target=send, args=(i,)) for i in range(n)]
        for sender in senders:
            sender.start()
        time.sleep(3)
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        try:
            code: object = gateway.process.wait(120)
        except subprocess.TimeoutExpired:
            code = "still running after 120 s"
        took = time.monotonic() - started
        for sender in senders:
            sender.join(10)
        print(f"  exit {code} {took:.1f} s after SIGTERM; senders were told {dict(told)}")
    finally:
        gateway.stop()
        proxy.close()
        registry.stop()


STORMS: dict[str, Callable[[World], None]] = {
    "registry": registry_storm,
    "outage": outage_storm,
    "bodiless": bodiless_storm,
    "sigterm": sigterm_storm,
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--body", type=int, default=100_000)
    parser.add_argument("--modes", default="unknown,signed,registry,outage,bodiless,sigterm")
    args = parser.parse_args()
    open_files(args.connections + 200)

    cp = Plane()
    cp.up()
    core = client.CoreV1Api(cp.admin_api())
    ns = f"hostile-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
    core.create_namespaced_secret(ns, project_secret("bench/app"))  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix="brigade-crgw-hostile-"))
    kubeconfig = tmp / "gateway.kubeconfig"
    cp.gateway_identity(ns, kubeconfig, 3600)
    # The shipped defaults, not the tests' small timeouts.
    gateway = daemon.start(
        tmp,
        ns,
        kubeconfig,
        {"server": {"read_timeout": 30}, "kubernetes": {"threads": 8, "request_timeout": 10}},
    )
    soft = (
        Path(f"/proc/{gateway.process.pid}/limits").read_text().split("Max open files")[1].split()
    )
    print(f"gateway open files limit: soft {soft[0]}, hard {soft[1]}")
    modes = args.modes.split(",")
    try:
        for mode in modes:
            if mode in ("unknown", "signed"):
                storm(gateway, args.connections, args.body, mode)
        deliveries(gateway, 256 * 1024)
        alive = gateway.alive()
    finally:
        gateway.stop()
    try:
        world = World(cp, core, ns, tmp, kubeconfig)
        for mode in modes:
            if mode in STORMS:
                STORMS[mode](world)
    finally:
        core.delete_namespace(ns)
    print(f"\ngateway alive throughout: {alive}")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
