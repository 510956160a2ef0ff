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

    PYTHONPATH=. .venv/bin/python bench/hostile.py [--connections 2000] [--body 100000]
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from kubernetes import client

from devtools import ROOT
from devtools import gateway as daemon
from devtools.plane import Plane
from devtools.projects import TOKEN, project_secret

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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--body", type=int, default=100_000)
    parser.add_argument("--modes", default="unknown,signed")
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
    try:
        for mode in args.modes.split(","):
            storm(gateway, args.connections, args.body, mode)
        deliveries(gateway, 256 * 1024)
        alive = gateway.alive()
    finally:
        gateway.stop()
        core.delete_namespace(ns)
    print(f"\ngateway alive throughout: {alive}")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
