"""Acceptance: an API-server outage in the middle of a burst from a sender
that never retries loses no push and duplicates none.

Starts (or reuses) the local control plane, a fresh namespace with the
gateway's RBAC and a project, and the real ``twistd -n brigade-crgw`` with
the shipped retry budget and a spool, talking to the API server through a
loopback proxy (tests/outage.py).  Client threads send distinct Docker Hub
pushes, each exactly once, for the whole run; in the middle the proxy
refuses (or holds) every connection for ``--outage`` seconds.  Afterwards it
waits for the spool to drain and counts, per push, the build Secrets in
Kubernetes.  It prints the counts; it asserts no timing.

    PYTHONPATH=. .venv/bin/python bench/outage.py [--outage 30] [--before 10] [--after 10]
        [--senders 4] [--rate 20] [--mode refuse|hang]

Exit status 0 when every push was answered 2xx and has exactly one build.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.processes import builds_by_push, fresh_namespace, plane_up
from devtools import ROOT
from devtools import gateway as daemon
from devtools.outage import FORWARD, HANG, REFUSE, Proxy, proxied_kubeconfig
from devtools.projects import TOKEN, fresh, project_secret

PAYLOAD = (ROOT / "tests" / "payloads" / "dockerhub" / "push-docs.json").read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the API server is away")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of burst before it")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of burst after it")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="pushes per second, in all")
    parser.add_argument("--mode", choices=[REFUSE, HANG], default=REFUSE)
    parser.add_argument("--drain", type=float, default=120.0, help="seconds allowed to drain")
    args = parser.parse_args()

    plane, state = plane_up(False)
    tmp = Path(tempfile.mkdtemp(prefix="brigade-crgw-outage-"))
    core, ns = fresh_namespace(
        plane, "outage", project_secret("bench/app"), tmp / "gateway.kubeconfig"
    )
    proxy = Proxy(state.server)
    kubeconfig = proxied_kubeconfig(
        tmp / "gateway.kubeconfig", state.server, proxy, tmp / "via-proxy.kubeconfig"
    )
    # The shipped pool, timeouts and retry budget, with a spool.
    gateway = daemon.start(
        tmp,
        ns,
        kubeconfig,
        {
            "server": {"read_timeout": 30},
            "kubernetes": {"threads": 8, "request_timeout": 10, "retry_seconds": 8},
            "spool": {"path": tmp / "spool.sqlite"},
        },
    )
    answers: dict[int, Any] = {}
    lock = threading.Lock()
    counter = iter(range(10**9))
    stop = threading.Event()
    interval = args.senders / args.rate

    def sender() -> None:
        while not stop.is_set():
            started = time.monotonic()
            with lock:
                n = next(counter)
            try:
                answer: Any = gateway.post(
                    f"/events/webhook/bench/app?token={TOKEN}", fresh(PAYLOAD, n), timeout=60
                )
            except OSError as e:
                answer = e
            with lock:
                answers[n] = answer
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    threads = [threading.Thread(target=sender) for _ in range(args.senders)]
    try:
        for t in threads:
            t.start()
        time.sleep(args.before)
        print(f"API server {args.mode} for {args.outage:g} s", flush=True)
        proxy.set(args.mode)
        time.sleep(args.outage)
        proxy.set(FORWARD)
        print("API server back", flush=True)
        time.sleep(args.after)
        stop.set()
        for t in threads:
            t.join(120)

        def found() -> Counter[int]:
            return Counter({n: len(names) for n, names in builds_by_push(core, ns).items()})

        ok = {n for n, a in answers.items() if getattr(a, "status", 0) in (200, 202)}
        deadline = time.monotonic() + args.drain
        builds = found()
        while not ok <= set(builds) and time.monotonic() < deadline:
            time.sleep(1)
            builds = found()
        codes = Counter(getattr(a, "status", type(a).__name__) for a in answers.values())
        lost = sorted(set(answers) - set(builds))
        duplicated = sorted(n for n, c in builds.items() if c > 1)
        print(f"pushes sent once each: {len(answers)}")
        print("answers: " + ", ".join(f"{code}: {n}" for code, n in sorted(codes.items(), key=str)))
        print(f"pushes with a build: {len(set(builds) & set(answers))}")
        print(f"lost: {len(lost)}  duplicated: {len(duplicated)}")
        log = gateway.log()
        spooled, drained = log.count("queued build "), log.count("drained spooled build")
        print(f"log: {spooled} builds spooled, {drained} drained")
        return 0 if not lost and not duplicated and set(codes) <= {200, 202} else 1
    finally:
        stop.set()
        proxy.set(FORWARD)
        gateway.stop()
        proxy.close()
        core.delete_namespace(ns)


if __name__ == "__main__":
    sys.exit(main())
