"""Benchmark: webhooks per second, latency and memory of the real gateway.

Starts (or reuses) the local control plane, a fresh namespace with the
gateway's RBAC and a project, and the real ``twistd -n brigade-crgw``; then
sends Docker Hub pushes over loopback HTTP from several client threads and
reports throughput, latency percentiles and the daemon's resident memory.
Each 200 means a build Secret exists, so this measures the whole path
through the API server and etcd.  With ``--plane`` it also times a warm
``scripts/control-plane up`` from a stopped plane.

    PYTHONPATH=. .venv/bin/python bench/run.py [--requests 400] [--concurrency 8] [--plane]
"""

from __future__ import annotations

import argparse
import statistics
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

PAYLOAD = (ROOT / "tests" / "payloads" / "dockerhub" / "push-docs.json").read_bytes()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--plane", action="store_true", help="also time a warm `up`")
    args = parser.parse_args()

    cp = Plane()
    if args.plane:
        cp.down(quiet=True)
        started = time.monotonic()
        cp.up()
        print(f"control plane up (warm cache): {time.monotonic() - started:.1f} s")
    else:
        cp.up()
    api = cp.admin_api()
    core = client.CoreV1Api(api)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_secret(ns, project_secret("bench/app"))
    tmp = Path(tempfile.mkdtemp(prefix="brigade-crgw-bench-"))
    kubeconfig = tmp / "gateway.kubeconfig"
    cp.gateway_identity(ns, kubeconfig, 3600)
    # The shipped defaults for the pool and timeouts, not the tests' small ones.
    gateway = daemon.start(
        tmp, ns, kubeconfig, {"kubernetes": {"threads": 8, "request_timeout": 10}}
    )
    idle_rss = rss_kib(gateway.process.pid)

    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    remaining = iter(range(args.requests))

    def worker() -> None:
        for _ in remaining:
            started = time.monotonic()
            answer = gateway.post(
                "/events/webhook/bench/app", PAYLOAD, {"Authorization": f"Bearer {TOKEN}"}
            )
            elapsed = time.monotonic() - started
            with lock:
                (latencies if answer.status == 200 else failures).append(
                    elapsed if answer.status == 200 else answer.status
                )

    # Warm up connections and caches before measuring.
    for _ in range(10):
        gateway.post("/events/webhook/bench/app", PAYLOAD, {"Authorization": f"Bearer {TOKEN}"})
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    busy_rss = rss_kib(gateway.process.pid)
    gateway.stop()
    core.delete_namespace(ns)

    ms = sorted(x * 1000 for x in latencies)
    print(f"requests: {args.requests}  concurrency: {args.concurrency}  failures: {len(failures)}")
    print(f"throughput: {len(ms) / wall:.0f} webhooks/s (each a build Secret created)")
    if ms:
        print(
            f"latency ms: p50 {statistics.median(ms):.1f}  "
            f"p90 {ms[int(len(ms) * 0.9) - 1]:.1f}  p99 {ms[int(len(ms) * 0.99) - 1]:.1f}  "
            f"max {ms[-1]:.1f}"
        )
    print(f"gateway RSS: {idle_rss / 1024:.1f} MiB idle, {busy_rss / 1024:.1f} MiB after the run")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
