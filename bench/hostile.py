"""Hostile load on the real gateway: what it holds, whether its reactor
still answers, and what an honest sender is told, under each storm.

Starts (or reuses) the local control plane, a fresh namespace with the
gateway's RBAC and one project with a token, and for each storm a fresh
``twistd -n brigade-crgw`` with the shipped ini (``etc/brigade-crgw.ini``:
8 threads, 30 s read timeout, ``max_in_flight`` 64, 16 MiB of bodies, a
spool in a temporary directory).  The storms, each bounded in time and in
count, on loopback only:

``connections``
    ``--connections`` connections, each sending a ~100 KB body without
    credentials and staying open, first to a project that does not exist,
    then to the existing project with a (wrong) signature header, so the
    body has to be read before it can be judged; then the hostile
    deliveries of issue 12 (one tag repeated, identical events, too many
    images) and the builds each made;
``registry``
    the project's pushes name ``--repositories`` images each on a hostile
    registry listed in ``[registry] hosts`` (``devtools.hostile_registry``,
    in a process of its own): every one but the last an index of 15,000
    platforms (a distinct index per repository), the last a 401 whose
    challenge is 30 folded lines of 16,000 bytes; ``annotate_payload`` on;
``flood``
    the API server reached through ``devtools.outage``'s proxy; one honest
    push reads the project, then ``--flood`` pushes to made-up projects
    with a wrong bearer (no credential at all is refused before the project
    is read), 32 at a time, then the proxy cuts the API server (``--mode``)
    for ``--outage`` seconds while 64 senders go on flooding; then it is back
    and the spool drains;
``bodiless``
    ``--bodiless`` connections declaring ``Content-Length: 262144`` with a
    signature header to the existing project, sending no body, held
    ``--hold`` seconds (past the 30 s read timeout);
``sigterm``
    a registry that holds every lookup, the API server hanging, 64 pushes,
    then SIGTERM: how long until the process exits, its exit code, and what
    every sender was told (there is no other honest sender in this one).

``--backlog N`` makes every gateway listen with that backlog (the
endpoint's ``backlog=``; Twisted's default is 50).

Throughout each storm, an honest sender pushes a valid 1.3 KB Docker Hub
webhook with the project's token every 0.5 s, and a monitor in a process of
its own (so the storm's client threads cannot slow it) samples the
gateway's RSS every 20 ms and asks ``GET /healthz`` every 100 ms on a new
connection.  Each storm prints its details, and the end a table: the honest
pushes' answers by code, the peak RSS against the chart's 256 MiB limit and
the slowest ``/healthz``.  Nothing is asserted; the exit status is 1 when a
storm passed 256 MiB or 1 s, or the gateway died (or, for ``sigterm``, did
not exit 0).

    PYTHONPATH=. .venv/bin/python -m bench.hostile [--storm all|NAME[,NAME...]]
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import json
import multiprocessing
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attr
from kubernetes import client

from devtools import ROOT
from devtools import gateway as daemon
from devtools.hostile_registry import push_event
from devtools.outage import FORWARD, HANG, REFUSE, Proxy, proxied_kubeconfig
from devtools.plane import Plane
from devtools.plane.processes import free_port
from devtools.projects import TOKEN, fresh, project_secret
from devtools.waiting import until

PAYLOADS = ROOT / "tests" / "payloads"
DOCKERHUB = (PAYLOADS / "dockerhub" / "push-docs.json").read_bytes()
QUAY = (PAYLOADS / "quay" / "repo_push.json").read_bytes()
GOOD = "/events/webhook/bench/app"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# A credential, wrong: without one a webhook is refused before its project is read.
WRONG = {"Authorization": "Bearer made-up"}
SIGNED = f"X-Hub-Signature-256: sha256={'0' * 64}\r\n"
DISTRIBUTION = "application/vnd.docker.distribution.events.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# The Helm chart's memory limit, and the reactor's promise (issue 17).
LIMIT_MIB = 256
HEALTHZ_LIMIT = 1.0
STORMS = ("connections", "registry", "flood", "bodiless", "sigterm")


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listening
    socket's backlog was full (``TcpExt ListenOverflows``; the whole
    machine's: other processes' sockets count too)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names[0] == "TcpExt:" and "ListenOverflows" in names:
            return int(values[names.index("ListenOverflows")])
    return 0


def open_files(needed: int) -> None:
    """Check ``ulimit -n`` for this process, raising the soft limit if it can."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    elif hard < needed:
        sys.exit(f"ulimit -n: the hard limit {hard} is below {needed}; raise it first")


class _Probe:
    """The slowest of the ``/healthz`` answers it timed, and how many were slow."""

    def __init__(self) -> None:
        self.worst, self.worst_at, self.samples, self.over_half, self.over_limit = 0.0, 0.0, 0, 0, 0
        self.told: collections.Counter[str] = collections.Counter()

    def time(self, ask: Callable[[], int], since: float) -> float:
        started = time.monotonic()
        try:
            self.told[str(ask())] += 1
        except (OSError, http.client.HTTPException) as e:
            self.told[type(e).__name__] += 1
        took = time.monotonic() - started
        if took > self.worst:
            self.worst, self.worst_at = took, started - since
        self.samples += 1
        self.over_half += took > 0.5
        self.over_limit += took > HEALTHZ_LIMIT
        return took

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "told"} | {"told": dict(self.told)}


def _watch(pid: int, port: int, ready: Any, stop: Any, results: Any) -> None:
    """The monitor's process: RSS every 20 ms; ``/healthz`` every 100 ms,
    on a new connection (what a kubelet's probe does: it waits for the
    listening socket's backlog too) and on one kept open (the reactor alone)."""
    peak = 0
    done = threading.Event()

    def memory() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            done.wait(0.02)

    sampler = threading.Thread(target=memory, daemon=True)
    sampler.start()
    fresh_probe, kept_probe, began = _Probe(), _Probe(), time.monotonic()
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def on_kept() -> int:
        try:
            kept.request("GET", "/healthz")
            response = kept.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            kept.close()  # connects again next time
            raise
        return response.status

    while not stop.is_set():
        took = kept_probe.time(on_kept, began)
        took += fresh_probe.time(
            lambda: daemon.exchange(port, "GET", "/healthz", timeout=60).status, began
        )
        ready.set()
        stop.wait(max(0.0, 0.1 - took))
    done.set()
    sampler.join()
    kept.close()
    results.put({"peak_kib": peak, **fresh_probe.summary(), "kept": kept_probe.summary()})


class Monitor:
    """:func:`_watch` in a process of its own, from start to :meth:`finish`."""

    def __init__(self, gateway: daemon.Daemon) -> None:
        context = multiprocessing.get_context("spawn")
        ready, self._stop, self._results = context.Event(), context.Event(), context.Queue()
        self._process = context.Process(
            target=_watch,
            args=(gateway.process.pid, gateway.port, ready, self._stop, self._results),
            daemon=True,
        )
        self._process.start()
        # Its first sample is taken before the storm starts.
        if not ready.wait(60):
            sys.exit("the monitor did not start")

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        found: dict[str, Any] = self._results.get(timeout=120)
        self._process.join(30)
        return found


def full_log(gateway: daemon.Daemon) -> str:
    """The gateway's log with the parts twistd rotated away (every 1 MB)."""
    rotated = sorted(
        gateway.log_path.parent.glob(gateway.log_path.name + ".*"),
        key=lambda path: -int(path.suffix[1:]),
    )
    return "".join(path.read_text(errors="replace") for path in rotated) + gateway.log()


def status_of(answer: Any) -> str:
    """An answer's code and, for a refusal, its reason; or the error."""
    if isinstance(answer, BaseException):
        return type(answer).__name__
    reason = ""
    if answer.status >= 400:
        try:
            reason = str(answer.json().get("reason", ""))
        except ValueError:
            reason = ""
    return f"{answer.status} {reason}".strip()


class Honest(threading.Thread):
    """A valid push from the project, with its token, every 0.5 s; the
    answers by code and by :attr:`phase` when each push was sent."""

    def __init__(self, gateway: daemon.Daemon) -> None:
        super().__init__(daemon=True)
        self.gateway, self.phase = gateway, ""
        self.told: collections.Counter[str] = collections.Counter()
        self.took: list[float] = []
        self._done = threading.Event()
        self._n = random.randrange(10**8)  # noqa: S311 (distinct pushes, not secrets)

    def run(self) -> None:
        while not self._done.is_set():
            started, phase = time.monotonic(), self.phase
            self._n += 1
            try:
                answer: Any = self.gateway.post(GOOD, fresh(DOCKERHUB, self._n), BEARER, timeout=60)
            except OSError as e:
                answer = e
            took = time.monotonic() - started
            self.took.append(took)
            self.told[f"{phase}{status_of(answer)}"] += 1
            self._done.wait(max(0.0, 0.5 - took))

    def finish(self) -> None:
        self._done.set()
        self.join(90)

    def timing(self) -> str:
        """The median and slowest answer, and how many took over 10 s."""
        took = sorted(self.took) or [0.0]
        slow = sum(t > 10 for t in took)
        return f"median {took[len(took) // 2]:.2f} s, slowest {took[-1]:.2f} s, {slow} over 10 s"


@attr.s(auto_attribs=True)
class World:
    """The plane, the namespace with its project, and where things go."""

    core: Any
    namespace: str
    server: str
    kubeconfig: Path
    tmp: Path
    #: The listening socket's backlog (``listen = tcp:PORT:backlog=N``); 0:
    #: the endpoint's default (Twisted's 50).
    backlog: int = 0

    def gateway(
        self, settings: dict[str, dict[str, object]], kubeconfig: Path | None = None
    ) -> daemon.Daemon:
        """A fresh gateway with the shipped ini, a spool of its own, and ``settings``."""
        spool = self.tmp / f"spool-{uuid.uuid4().hex[:8]}.sqlite"
        sections: dict[str, dict[str, object]] = {"spool": {"path": spool}, **settings}
        port = free_port()
        if self.backlog:
            listen = f"tcp:{port}:interface=127.0.0.1:backlog={self.backlog}"
            sections["server"] = {**sections.get("server", {}), "listen": listen}
        return daemon.start(
            self.tmp,
            self.namespace,
            kubeconfig or self.kubeconfig,
            sections,
            base=daemon.shipped_settings(),
            port=port,
        )


@attr.s(auto_attribs=True)
class Result:
    storm: str
    honest: collections.Counter[str]
    timing: str
    watched: dict[str, Any]
    load: tuple[float, float]
    alive: bool

    @property
    def peak_mib(self) -> float:
        return float(self.watched["peak_kib"]) / 1024

    @property
    def within(self) -> bool:
        return self.alive and self.peak_mib < LIMIT_MIB and self.watched["worst"] < HEALTHZ_LIMIT


def run(
    name: str,
    gateway: daemon.Daemon,
    storm: Callable[[Honest], None],
    stop: Callable[[], None] = lambda: None,
    exits: bool = False,
) -> Result:
    """``storm`` against ``gateway`` with the monitor and the honest sender
    running throughout; ``stop`` after them, then the gateway is stopped.

    :param exits: the storm ends the gateway; it must have exited 0.
    """
    print(f"\n== {name} ==  load average {os.getloadavg()[0]:.2f}", flush=True)
    time.sleep(1)
    idle = rss_kib(gateway.process.pid)
    monitor = Monitor(gateway)
    honest = Honest(gateway)
    load_before, overflows = os.getloadavg()[0], listen_overflows()
    honest.start()
    try:
        storm(honest)
        honest.finish()
        watched = monitor.finish()
        alive = gateway.process.poll() == 0 if exits else gateway.alive()
        after = rss_kib(gateway.process.pid)
    finally:
        try:
            stop()
        finally:
            gateway.stop()
    load = (load_before, os.getloadavg()[0])
    overflows = listen_overflows() - overflows
    result = Result(name, honest.told, honest.timing(), watched, load, alive)
    print(
        f"  gateway RSS: idle {idle / 1024:.1f} MiB, peak {result.peak_mib:.1f} MiB,"
        f" after {after / 1024:.1f} MiB; connections dropped at a full listen backlog"
        f" (the machine's): {overflows}"
    )
    for name, probe in (("a new connection", watched), ("a kept connection", watched["kept"])):
        print(
            f"  /healthz on {name}: {probe['samples']} samples ({probe['told']}), slowest"
            f" {probe['worst'] * 1000:.0f} ms {probe['worst_at']:.0f} s into the storm,"
            f" {probe['over_half']} over 0.5 s, {probe['over_limit']} over 1 s"
        )
    print(f"  honest pushes: {dict(honest.told)} ({result.timing})")
    print(f"  gateway {'exited 0' if exits else 'alive'}: {alive}", flush=True)
    return result


# ``connections``: the storm of issue 12.


def hostile(port: int, n: int, size: int, mode: str) -> list[socket.socket]:
    """Open ``n`` connections, each sending headers and a ``size`` body."""
    body = b"{" + b" " * (size - 2) + b"}"
    sockets = []
    for i in range(n):
        if mode == "unknown":
            path, extra = f"/events/webhook/nobody-{i}/app", ""
        else:
            path, extra = GOOD, SIGNED
        head = (
            f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sockets.append(_send_some(port, head + body))
    return sockets


def _send_some(port: int, data: bytes) -> socket.socket:
    """A new connection sending what it can of ``data`` within 50 ms."""
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    deadline = time.monotonic() + 0.05
    while data and time.monotonic() < deadline:
        try:
            data = data[s.send(data) :]
        except (BlockingIOError, InterruptedError):
            time.sleep(0.001)
        except OSError:
            break
    return s


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


def show(title: str, told: collections.Counter[str]) -> None:
    print(f"  {title}:")
    for answer, count in told.most_common():
        print(f"    {count:6d}  {answer}")


def connections(world: World, args: argparse.Namespace) -> Result:
    gateway = world.gateway({})

    def storm(honest: Honest) -> None:
        for mode in ("unknown", "signed"):
            honest.phase = f"{mode}: "
            started = time.monotonic()
            sockets = hostile(gateway.port, args.connections, args.body, mode)
            opened = time.monotonic() - started
            time.sleep(2)
            told = answers(sockets)
            for s in sockets:
                s.close()
            print(f"  [{mode}] {args.connections} connections, opened in {opened:.1f} s")
            show("hostile connections were told", told)
            time.sleep(3)
        honest.phase = "deliveries: "
        deliveries(gateway, 256 * 1024)

    return run("connections", gateway, storm)


def deliveries(gateway: daemon.Daemon, max_body: int) -> None:
    """The issue's hostile deliveries, and the builds each made."""
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
    for name, body in (
        ("Quay, one tag 1,000 times", quay),
        (f"Distribution, {count:,} identical events", many),
        ("Quay, 1,000 distinct tags", distinct),
    ):
        raw = json.dumps(body).encode()
        answer = gateway.post(GOOD, raw, BEARER)
        built = len(answer.json().get("builds", [])) if answer.status == 200 else 0
        print(f"  {name} ({len(raw):,} bytes): {answer.status}, {built} builds")


# ``registry``: a listed registry that misbehaves.


def push(host: str, repositories: list[str]) -> bytes:
    """A Distribution envelope pushing ``host/<repository>:v1`` for each,
    without digests, so the gateway asks the registry about every one."""
    events = [json.loads(push_event(host, repository))["events"][0] for repository in repositories]
    return json.dumps({"events": events}).encode()


# The hostile registry in a process of its own, so that the 3 MB indexes it
# makes take neither this process's GIL (the storm's clients) nor its CPU time.
SERVE = """
import sys, time
from devtools.hostile_registry import HostileRegistry
registry = HostileRegistry(delay=float(sys.argv[1]))
print(registry.url, registry.realm, flush=True)
time.sleep(3600)
"""


class Registry:
    """:class:`devtools.hostile_registry.HostileRegistry` (15,000 platforms,
    a 480 KB folded challenge, ``slow`` requests held ``delay`` seconds) in
    a process of its own, its errors to ``log``."""

    def __init__(self, log: Path, delay: float = 60.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(delay)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            # Its handlers print every connection the gateway drops; kept apart.
            stderr=log.open("ab"),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().split()
        if len(line) != 2:
            self.process.kill()
            sys.exit(f"the hostile registry did not start: {line!r}")
        self.url, self.realm = line
        self.address = self.url.removeprefix("http://")

    def settings(self) -> dict[str, object]:
        """``[registry]`` listing it, and the host of its token realm."""
        return {
            "hosts": f"{self.address} {self.realm.split('/')[2]}",
            "endpoints": f"{self.address}={self.url}",
        }

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def registry(world: World, args: argparse.Namespace) -> Result:
    hostile = Registry(world.tmp / "hostile-registry.log")
    address = hostile.address
    gateway = world.gateway(
        {"gateway": {"annotate_payload": "true"}, "registry": hostile.settings()}
    )
    run_id = uuid.uuid4().hex[:6]
    told: collections.Counter[str] = collections.Counter()
    honest: Honest | None = None
    lock = threading.Lock()
    numbers = iter(range(args.pushes))
    deadline = time.monotonic() + args.seconds

    def sender() -> None:
        while time.monotonic() < deadline:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            names = [f"wide/{run_id}-{n}-{k}" for k in range(args.repositories - 1)]
            body = push(address, [*names, f"folded/{run_id}-{n}"])
            try:
                answer: Any = gateway.post(
                    GOOD, body, {**BEARER, "Content-Type": DISTRIBUTION}, timeout=60
                )
            except OSError as e:
                answer = e
            key = status_of(answer)
            if getattr(answer, "status", 0) == 200:
                key += f" ({len(answer.json().get('builds', []))} builds)"
            with lock:
                told[key] += 1
                if honest is not None:
                    honest.told[f"storm's pushes: {key}"] += 1

    def storm(honest_: Honest) -> None:
        nonlocal honest
        honest = honest_
        senders = [threading.Thread(target=sender) for _ in range(args.senders)]
        for s in senders:
            s.start()
        for s in senders:
            s.join()
        print(
            f"  {sum(told.values())} pushes of {args.repositories} images each"
            f" ({args.repositories - 1} indexes of 15,000 platforms, 1 folded challenge),"
            f" {args.senders} at a time"
        )
        show("the hostile pushes were told", told)
        pattern = rf"lookup for {re.escape(address)}/(\w+)/\S* gave nothing \((\w+)\)"
        reasons = collections.Counter(
            f"{m[1]}: {m[2]}" for m in re.finditer(pattern, full_log(gateway))
        )
        wide = sum(told.values()) * (args.repositories - 1)
        found = wide - sum(n for kind, n in reasons.items() if kind.startswith("wide:"))
        print(f"  hostile lookups that gave nothing, by kind and reason: {dict(reasons)}")
        print(f"  indexes of 15,000 platforms found: {found} of {wide}")

    def stop() -> None:
        # What one of the builds carries: the platforms cut, the cut marked.
        answer = gateway.post(GOOD, push(address, [f"wide/{run_id}-0-0"]), BEARER)
        if answer.status == 200:
            name = answer.json()["builds"][0]
            data = world.core.read_namespaced_secret(name, world.namespace).data
            title = base64.b64decode(data["long_title"]).decode()
            payload = len(base64.b64decode(data["payload"]))
            print(f"  a build's long_title: {len(title):,} characters, ...{title[-60:]!r};")
            print(f"  its annotated payload: {payload:,} bytes")
        hostile.stop()

    return run("registry", gateway, storm, stop)


# ``flood``: unknown projects, then an outage.


def flood(world: World, args: argparse.Namespace) -> Result:
    proxy = Proxy(world.server)
    kubeconfig = proxied_kubeconfig(
        world.kubeconfig, world.server, proxy, world.tmp / f"proxied-{uuid.uuid4().hex[:6]}"
    )
    gateway = world.gateway({}, kubeconfig)
    warm = gateway.post(GOOD, fresh(DOCKERHUB, random.randrange(10**8)), BEARER)  # noqa: S311
    print(f"  the project read before the flood: {status_of(warm)}")
    told: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    sent = [0]

    def flooder(until: float, limit: int) -> None:
        while time.monotonic() < until:
            with lock:
                if sent[0] >= limit:
                    return
                sent[0] += 1
            path = f"/events/webhook/{uuid.uuid4().hex[:12]}/{uuid.uuid4().hex[:8]}"
            try:
                answer: Any = gateway.post(path, DOCKERHUB, WRONG, timeout=60)
            except OSError as e:
                answer = e
            with lock:
                told[status_of(answer)] += 1

    def wave(threads: int, seconds: float, limit: int) -> float:
        started = time.monotonic()
        workers = [
            threading.Thread(target=flooder, args=(started + seconds, limit))
            for _ in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.monotonic() - started

    def storm(honest: Honest) -> None:
        honest.phase = "before the cut: "
        took = wave(32, args.seconds, args.flood)
        print(f"  {sent[0]} pushes to made-up projects, wrong bearer, in {took:.0f} s")
        show("they were told", told)
        told.clear()
        proxy.set(args.mode)
        honest.phase = f"API server {args.mode}: "
        print(f"  API server {args.mode} for {args.outage:g} s; 64 senders go on flooding")
        before = sent[0]
        wave(64, args.outage, 10**9)
        print(f"  {sent[0] - before} pushes to made-up projects during the outage")
        show("they were told", told)
        proxy.set(FORWARD)
        honest.phase = "API server back: "
        spooled = full_log(gateway).count("queued build ")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            drained = full_log(gateway).count("drained spooled build")
            if drained >= spooled:
                break
            time.sleep(1)
        print(f"  builds queued in the spool: {spooled}; drained once it was back: {drained}")

    return run("flood", gateway, storm, lambda: proxy.close())


# ``bodiless``: declared lengths never sent.


def bodiless(world: World, args: argparse.Namespace) -> Result:
    gateway = world.gateway({})

    def storm(honest: Honest) -> None:
        head = (
            f"POST {GOOD} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"{SIGNED}Content-Length: 262144\r\n\r\n"
        ).encode()
        honest.phase = "while held: "
        sockets = [_send_some(gateway.port, head) for _ in range(args.bodiless)]
        print(
            f"  {len(sockets)} connections declaring 262,144 bytes with a signature,"
            f" none sent, held {args.hold:g} s"
        )
        time.sleep(args.hold)
        show("they were told", answers(sockets))
        for s in sockets:
            s.close()
        honest.phase = "after: "
        time.sleep(2)

    return run("bodiless", gateway, storm)


# ``sigterm``: the deadlock of issue 17.


def sigterm(world: World, args: argparse.Namespace) -> Result:
    proxy = Proxy(world.server)
    kubeconfig = proxied_kubeconfig(
        world.kubeconfig, world.server, proxy, world.tmp / f"proxied-{uuid.uuid4().hex[:6]}"
    )
    slow = Registry(world.tmp / "slow-registry.log", delay=120)
    gateway = world.gateway({"registry": slow.settings()}, kubeconfig)
    warm = gateway.post(GOOD, fresh(DOCKERHUB, random.randrange(10**8)), BEARER)  # noqa: S311
    print(f"  the project read first: {status_of(warm)}")
    run_id = uuid.uuid4().hex[:6]

    def storm(honest: Honest) -> None:
        # The 64 pushes are this storm's valid pushes; no other sender.
        honest.finish()
        proxy.set(HANG)
        lock = threading.Lock()

        def send(i: int) -> None:
            try:
                body = push(slow.address, [f"slow/{run_id}-{i}"])
                answer: Any = gateway.post(GOOD, body, BEARER, timeout=120)
            except OSError as e:
                answer = e
            with lock:
                honest.told[f"pushes at SIGTERM: {status_of(answer)}"] += 1

        senders = [threading.Thread(target=send, args=(i,)) for i in range(64)]
        for sender in senders:
            sender.start()
        # Every push is in flight (its lookup held by the registry) or queued.
        until(
            lambda: gateway.metric("brigade_crgw_webhooks_in_flight") >= 48,
            "48 webhooks in flight",
            60,
        )
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        try:
            code: object = gateway.process.wait(120)
        except subprocess.TimeoutExpired:
            code = "none: still running 120 s after SIGTERM"
        took = time.monotonic() - started
        for sender in senders:
            sender.join(30)
        honest.told[f"exit {code}, {took:.1f} s after SIGTERM"] += 1
        print(f"  64 pushes, lookups held, API server hanging: exit {code} {took:.1f} s after")

    def stop() -> None:
        proxy.close()
        slow.stop()

    return run("sigterm", gateway, storm, stop, exits=True)


def table(results: list[Result], commit: str) -> None:
    print(f"\ncommit {commit}, {os.cpu_count()} cores")
    for r in results:
        print(
            f"{r.storm:<12} peak RSS {r.peak_mib:.1f} MiB, slowest /healthz"
            f" {r.watched['worst']:.2f} s new connection ({r.watched['over_limit']} of"
            f" {r.watched['samples']} over 1 s), {r.watched['kept']['worst']:.2f} s kept"
            f" connection, load {r.load[0]:.1f}-{r.load[1]:.1f}"
            f"{'' if r.within else '  OVER'}"
        )
        for answer, n in sorted(r.honest.items()):
            print(f"{'':12} {n:5d}  {answer}")
        print(f"{'':12} honest pushes: {r.timing}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storm", default="all", help="all, or some of " + ",".join(STORMS))
    parser.add_argument("--connections", type=int, default=2000, help="connections storm")
    parser.add_argument("--body", type=int, default=100_000, help="connections storm")
    parser.add_argument("--pushes", type=int, default=200, help="registry storm")
    parser.add_argument("--repositories", type=int, default=3, help="registry: images a push")
    parser.add_argument("--senders", type=int, default=8, help="registry: pushes at a time")
    parser.add_argument("--flood", type=int, default=5000, help="flood: unknown projects first")
    parser.add_argument("--mode", choices=[REFUSE, HANG], default=REFUSE, help="flood's outage")
    parser.add_argument("--outage", type=float, default=30.0, help="flood: seconds")
    parser.add_argument("--bodiless", type=int, default=200, help="bodiless: connections")
    parser.add_argument("--hold", type=float, default=40.0, help="bodiless: seconds")
    parser.add_argument("--backlog", type=int, default=0, help="listen backlog (0: Twisted's 50)")
    parser.add_argument("--seconds", type=float, default=120.0, help="bound of a storm's sending")
    args = parser.parse_args()
    storms = STORMS if args.storm == "all" else tuple(args.storm.split(","))
    if unknown := set(storms) - set(STORMS):
        parser.error(f"no such storm: {', '.join(sorted(unknown))}")
    open_files(max(args.connections, args.bodiless) + 500)

    cp = Plane()
    cp.up()
    api = cp.admin_api()
    core = client.CoreV1Api(api)
    ns = f"hostile-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
    core.create_namespaced_secret(ns, project_secret("bench/app"))  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix="brigade-crgw-hostile-"))
    kubeconfig = tmp / "gateway.kubeconfig"
    cp.gateway_identity(ns, kubeconfig, 3600)
    world = World(core, ns, api.configuration.host, kubeconfig, tmp, args.backlog)
    chosen: dict[str, Callable[[World, argparse.Namespace], Result]] = {
        "connections": connections,
        "registry": registry,
        "flood": flood,
        "bodiless": bodiless,
        "sigterm": sigterm,
    }
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    results = []
    try:
        for name in storms:
            results.append(chosen[name](world, args))
    finally:
        core.delete_namespace(ns)
    table(results, commit)
    return 0 if all(r.within for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
