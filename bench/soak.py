"""The fleet soak: replicas behind the real HAProxy with the documented
configuration (etc/haproxy.cfg), pushes flowing the whole time, while a
replica is SIGKILLed, every replica is restarted in turn, and the API server
is away for longer than the retry budget.

Starts (or reuses) the local control plane, a fresh namespace with the
gateway's RBAC and a project, ``--replicas`` real ``twistd -n brigade-crgw``
processes (each with its own spool and ``[server] shutdown_delay``), all
reaching the API server through one loopback proxy that can refuse every
connection (the API server "killed", without killing the plane others share),
and HAProxy in front.  Two kinds of sender push distinct Docker Hub pushes:

- single-attempt senders (Docker Hub, GitHub): one POST, whatever happens;
- retrying senders: up to 5 attempts on a refusal or a cut connection.

One round is: SIGKILL a replica (restarted 2 s later, as a supervisor
would), a rolling restart through every replica (SIGTERM, wait for the
exit, start again, wait until HAProxy sees it up), then an outage of the
API server of ``--outage`` seconds (twice the retry budget by default),
each with ``--settle`` seconds of pushes between.  Rounds repeat for
``--minutes``.  Afterwards it waits for the spools to drain and counts,
per push, the build Secrets in Kubernetes.

    make soak SOAK_ARGS="--minutes 5"
    PYTHONPATH=. .venv/bin/python -m bench.soak --scenario rolling --retry-on none

``--retry-on none`` is the balancer that never retries (as a Service or
most ingresses), which cannot save what a SIGKILLed replica was handling:
``--scenario rolling`` is rolling restarts only, ``--scenario no-kill``
rolling restarts and outages.  It prints the
table; the exit status is 0 when no push was lost after a 2xx, none was
duplicated and no single-attempt push was refused.  It asserts no timing.
"""

from __future__ import annotations

import argparse
import errno
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import attr

from bench.processes import builds_by_push, fresh_namespace, plane_up
from devtools import ROOT, haproxy
from devtools import gateway as daemon
from devtools.gateway import exchange
from devtools.outage import FORWARD, HANG, REFUSE, Proxy, proxied_kubeconfig
from devtools.plane.processes import free_port
from devtools.projects import TOKEN, fresh, project_secret

PAYLOAD = (ROOT / "tests" / "payloads" / "dockerhub" / "push-docs.json").read_bytes()
URL = f"/events/webhook/bench/app?token={TOKEN}"
ATTEMPTS = 5
SINGLE, RETRYING = "single-attempt", "retrying"


@attr.s(auto_attribs=True)
class Push:
    kind: str
    codes: list[str] = attr.ib(factory=list)
    builds: list[str] = attr.ib(factory=list)

    @property
    def final(self) -> str:
        return self.codes[-1]

    @property
    def accepted(self) -> bool:
        return self.final in ("200", "202")


@attr.s(auto_attribs=True)
class Fleet:
    """The replicas, their ports and settings, and the balancer."""

    tmp: Path
    namespace: str
    kubeconfig: Path
    settings: dict[str, dict[str, object]]
    ports: list[int]
    replicas: list[daemon.Daemon] = attr.ib(factory=list)
    balancer: haproxy.Balancer | None = None

    def start(self, i: int) -> daemon.Daemon:
        settings = {k: dict(v) for k, v in self.settings.items()}
        settings.setdefault("spool", {})["path"] = self.tmp / f"spool-{i}.sqlite"
        replica = daemon.start(
            self.tmp,
            self.namespace,
            self.kubeconfig,
            settings,
            60,
            base=daemon.shipped_settings(),
            port=self.ports[i],
        )
        if i < len(self.replicas):
            self.replicas[i] = replica
        else:
            self.replicas.append(replica)
        return replica

    def name(self, i: int) -> str:
        return f"gateway-{i + 1}"

    def wait_up(self, i: int) -> None:
        assert self.balancer is not None
        self.balancer.wait_for({self.name(i): "UP"}, timeout=120)


def single_push(port: int, n: int, host: str = "127.0.0.1") -> str:
    """Push number ``n``, one attempt on a new connection: the status, or the
    error's name (with its errno's, when it has one)."""
    try:
        answer = exchange(
            port,
            "POST",
            URL,
            fresh(PAYLOAD, n),
            {"Content-Type": "application/json"},
            timeout=60,
            host=host,
        )
    except OSError as e:
        return type(e).__name__ + (f" ({errno.errorcode.get(e.errno, e.errno)})" if e.errno else "")
    return str(answer.status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to keep pushing")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--scenario", choices=["full", "no-kill", "rolling"], default="full")
    parser.add_argument(
        "--retry-on", default=None, help="replace the recipe's retry-on (e.g. none)"
    )
    parser.add_argument("--check-interval", default=None, help="replace the recipe's inter")
    parser.add_argument("--single", type=int, default=4, help="single-attempt senders")
    parser.add_argument("--retrying", type=int, default=2, help="retrying senders")
    parser.add_argument("--rate", type=float, default=20.0, help="pushes per second, in all")
    parser.add_argument("--retry-seconds", type=float, default=8.0)
    parser.add_argument("--outage", type=float, default=None, help="default: 2 x retry budget")
    parser.add_argument(
        "--outage-mode",
        choices=[REFUSE, HANG],
        default=REFUSE,
        help="the API server refuses connections, or takes them and never answers",
    )
    parser.add_argument("--shutdown-delay", type=float, default=6.0)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds between events")
    parser.add_argument("--drain", type=float, default=300.0, help="seconds allowed to drain")
    args = parser.parse_args()
    outage = args.outage if args.outage is not None else 2 * args.retry_seconds

    plane, state = plane_up(False)
    tmp = Path(tempfile.mkdtemp(prefix="brigade-crgw-soak-"))
    core, ns = fresh_namespace(
        plane, "soak", project_secret("bench/app"), tmp / "gateway.kubeconfig"
    )
    proxy = Proxy(state.server)
    kubeconfig = proxied_kubeconfig(
        tmp / "gateway.kubeconfig", state.server, proxy, tmp / "via-proxy.kubeconfig"
    )
    fleet = Fleet(
        tmp,
        ns,
        kubeconfig,
        {
            "server": {"read_timeout": 30, "shutdown_delay": args.shutdown_delay},
            "kubernetes": {
                "threads": 8,
                "request_timeout": 10,
                "retry_seconds": args.retry_seconds,
            },
        },
        [free_port() for _ in range(args.replicas)],
    )
    pushes: dict[int, Push] = {}
    lock = threading.Lock()
    counter = iter(range(10**9))
    stop = threading.Event()
    senders = args.single + args.retrying
    interval = senders / args.rate
    events: list[str] = []
    began = time.monotonic()

    def note(what: str) -> None:
        line = f"{time.monotonic() - began:7.1f}s  {what}"
        events.append(line)
        print(line, flush=True)

    def sender(kind: str) -> None:
        assert fleet.balancer is not None
        port = fleet.balancer.port
        while not stop.is_set():
            started = time.monotonic()
            with lock:
                n = next(counter)
                push = pushes[n] = Push(kind)
            for attempt in range(ATTEMPTS if kind == RETRYING else 1):
                code = single_push(port, n)
                push.codes.append(code)
                if push.accepted or code.startswith("4"):
                    break
                time.sleep(min(2**attempt, 8))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def restart(i: int, how: str) -> None:
        replica = fleet.replicas[i]
        if how == "kill":
            replica.process.kill()
            replica.process.wait()
            note(f"{fleet.name(i)} SIGKILLed")
            time.sleep(2)
        else:
            note(f"{fleet.name(i)} SIGTERM")
            code = replica.stop(timeout=args.shutdown_delay + 60)
            note(f"{fleet.name(i)} exited {code}")
        fleet.start(i)
        fleet.wait_up(i)
        note(f"{fleet.name(i)} back and up in HAProxy")

    threads: list[threading.Thread] = []
    try:
        for i in range(args.replicas):
            fleet.start(i)
        fleet.balancer = haproxy.start(
            tmp,
            [(fleet.name(i), p) for i, p in enumerate(fleet.ports)],
            check_interval=args.check_interval,
            retry_on=args.retry_on,
        )
        for i in range(args.replicas):
            fleet.wait_up(i)
        note(f"{args.replicas} replicas up behind HAProxy on port {fleet.balancer.port}")
        threads = [
            threading.Thread(target=sender, args=(SINGLE if k < args.single else RETRYING,))
            for k in range(senders)
        ]
        for t in threads:
            t.start()
        end = began + args.minutes * 60
        victim = 0
        while True:
            time.sleep(args.settle)  # the replicas' project caches are warm by now
            if time.monotonic() > end:
                break
            if args.scenario == "full":
                restart(victim % args.replicas, "kill")
                victim += 1
                time.sleep(args.settle)
            for i in range(args.replicas):
                restart(i, "term")
            if args.scenario != "rolling":
                time.sleep(args.settle)
                note(f"API server away ({args.outage_mode}) for {outage:g} s")
                proxy.set(args.outage_mode)
                time.sleep(outage)
                proxy.set(FORWARD)
                note("API server back")
        stop.set()
        for t in threads:
            t.join(300)
        note("senders stopped; waiting for the spools to drain")

        def found() -> dict[int, list[str]]:
            return builds_by_push(core, ns)

        accepted = {n for n, p in pushes.items() if p.accepted}
        deadline = time.monotonic() + args.drain
        builds = found()
        while not accepted <= set(builds) and time.monotonic() < deadline:
            time.sleep(2)
            builds = found()
        print()
        print(
            f"{args.minutes:g} min, {args.replicas} replicas, scenario {args.scenario}, "
            f"retry-on {args.retry_on or 'as in etc/haproxy.cfg'}, "
            f"checks {args.check_interval or 'as in etc/haproxy.cfg'}, "
            f"shutdown_delay {args.shutdown_delay:g} s, outage ({args.outage_mode}) {outage:g} s"
        )
        failed = _report(pushes, builds)
        return 1 if failed else 0
    finally:
        stop.set()
        proxy.set(FORWARD)
        for t in threads:
            t.join(120)
        for replica in fleet.replicas:
            replica.stop()
        if fleet.balancer is not None:
            fleet.balancer.stop()
        proxy.close()
        core.delete_namespace(ns)


def _report(pushes: dict[int, Push], builds: dict[int, list[str]]) -> bool:
    """Print the table; whether the acceptance failed."""
    rows = [
        "| senders | pushes | answers (final, by code) | retried | lost after 2xx "
        "| duplicated | refused |",
        "|---|---|---|---|---|---|---|",
    ]
    failed = False
    for kind in (SINGLE, RETRYING):
        mine = {n: p for n, p in pushes.items() if p.kind == kind}
        if not mine:
            continue
        codes = Counter(p.final for p in mine.values())
        lost = [n for n, p in mine.items() if p.accepted and n not in builds]
        duplicated = [n for n in mine if len(set(builds.get(n, []))) > 1]
        refused = [n for n, p in mine.items() if not p.accepted]
        retried = sum(1 for p in mine.values() if len(p.codes) > 1)
        shown = ", ".join(f"{c}: {k:,}" for c, k in sorted(codes.items()))
        rows.append(
            f"| {kind} | {len(mine):,} | {shown} | {retried:,} | {len(lost)} "
            f"| {len(duplicated)} | {len(refused)} |"
        )
        failed |= bool(lost or duplicated or (kind == SINGLE and refused))
    print("\n".join(rows), flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
