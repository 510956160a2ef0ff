"""Rolling updates on a real node: single-attempt pushes through the chart's
Service while ``kubectl rollout restart`` and a pod deletion happen.

Starts (or reuses) the local plane with its node (``scripts/control-plane
up --node``), loads this tree's image (``make image``) into it, and installs
the chart with its defaults but the image and ``[server] shutdown_delay``
(``shutdownDelaySeconds``: ``--shutdown-delay``, else the chart's) in a
fresh namespace with a project.  ``--senders`` threads then POST distinct
Docker Hub pushes to the Service's ClusterIP (kube-proxy's iptables rules in
the node's network namespace, reached through the host's route), each push
one attempt on a new connection, whatever happens.  After ``--settle``
seconds: ``kubectl rollout restart`` of the Deployment and ``kubectl
rollout status`` until it is done; ``--settle`` seconds; ``kubectl delete
pod`` of one replica and a wait until two are ready again; ``--settle``
seconds; stop.  Every push is then matched to the build Secrets made from it
(its ``pushed_at``).  It prints the table of bench/soak.py: refused, lost
after a 2xx, duplicated; the exit status is 0 when all three are 0.  It
asserts no timing.

    PYTHONPATH=. .venv/bin/python -m bench.rollout                     # the chart's delay
    PYTHONPATH=. .venv/bin/python -m bench.rollout --shutdown-delay 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import attr
import yaml
from kubernetes import client

from bench.soak import SINGLE, Push, _report, single_push
from devtools import ROOT, helm, image, kubectl
from devtools.gateway import exchange
from devtools.plane import Plane
from devtools.projects import decoded, project_secret
from devtools.waiting import until

CHART = ROOT / "charts" / "brigade-crgw"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
RELEASE = "gw"
FULLNAME = f"{RELEASE}-brigade-crgw"


@attr.s(frozen=True, auto_attribs=True)
class Installed:
    """The chart installed on the local plane's node, in its own namespace."""

    plane: Plane
    api: Any
    core: Any  # CoreV1Api: its models type every field Optional
    namespace: str
    env: dict[str, str]

    def run(self, *argv: str) -> str:
        """A command (helm, kubectl: on PATH) as the plane's admin; its output."""
        return subprocess.run(argv, env=self.env, check=True, capture_output=True, text=True).stdout

    def pods(self) -> list[Any]:
        selector = f"app.kubernetes.io/instance={RELEASE}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def ready_pods(self) -> list[Any]:
        """The release's pods that are Ready and not being deleted."""
        return [
            p
            for p in self.pods()
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]

    def service(self) -> tuple[str, int]:
        """The Service's ClusterIP and port."""
        service = self.core.read_namespaced_service(FULLNAME, self.namespace)
        return service.spec.cluster_ip, service.spec.ports[0].port

    def builds(self) -> dict[int, list[str]]:
        """The build Secrets, by the number of the push they were made from."""
        seen: dict[int, list[str]] = {}
        for s in self.core.list_namespaced_secret(
            self.namespace, label_selector="component=build"
        ).items:
            body = self.api.sanitize_for_serialization(s)
            payload = json.loads(decoded(body)["payload"])
            n = payload["push_data"]["pushed_at"] - 1700000000
            seen.setdefault(n, []).append(str(body["metadata"]["name"]))
        return seen

    def remove(self) -> None:
        subprocess.run(
            ["helm", "uninstall", RELEASE, "-n", self.namespace], env=self.env, capture_output=True
        )
        self.core.delete_namespace(self.namespace)


def install(prefix: str, values: dict[str, Any]) -> Installed:
    """The plane and its node up, this tree's image loaded, a fresh namespace
    with the project bench/app, and the chart installed there with
    ``values`` (the image's added) and both replicas ready."""
    plane = Plane()
    plane.up(node=True)
    reference = image.build()
    plane.node().load(reference)
    api = plane.admin_api()
    core = client.CoreV1Api(api)
    ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
    core.create_namespaced_secret(ns, project_secret("bench/app"))  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix=f"brigade-crgw-{prefix}-"))
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "helm").symlink_to(helm.build())
    (bin_dir / "kubectl").symlink_to(kubectl.kubectl())
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(plane.admin_kubeconfig),
        "HOME": str(tmp),
    }
    installed = Installed(plane, api, core, ns, env)
    repository, tag = reference.rsplit(":", 1)
    values = {**values, "image": {"repository": repository, "tag": tag}}
    (tmp / "values.json").write_text(json.dumps(values))
    installed.run("helm", "install", RELEASE, str(CHART), "-n", ns,
                  "--values", str(tmp / "values.json"), "--wait", "--timeout", "5m")  # fmt: skip
    # Ready pods are not yet a routed Service: kube-proxy writes its rules
    # for a new Service on its next sync.
    until(lambda: routed(*installed.service()), "the Service routed by kube-proxy", 60)
    return installed


def routed(host: str, port: int) -> bool:
    """Whether ``GET /healthz`` through the Service is answered 200."""
    try:
        return exchange(port, "GET", "/healthz", timeout=5, host=host).status == 200
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shutdown-delay", type=int, default=None, help="shutdownDelaySeconds (the chart's: 10)"
    )
    parser.add_argument("--senders", type=int, default=4, help="single-attempt senders")
    parser.add_argument("--rate", type=float, default=20.0, help="pushes per second, in all")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds between events")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds allowed to drain")
    args = parser.parse_args()

    began = time.monotonic()
    delay = VALUES["shutdownDelaySeconds"] if args.shutdown_delay is None else args.shutdown_delay
    release = install("rollout", {"shutdownDelaySeconds": delay})
    ns = release.namespace
    pushes: dict[int, Push] = {}
    lock = threading.Lock()
    counter = iter(range(10**9))
    stop = threading.Event()
    interval = args.senders / args.rate

    def note(what: str) -> None:
        print(f"{time.monotonic() - began:7.1f}s  {what}", flush=True)

    try:
        host, port = release.service()
        note(f"2 replicas ready; Service {host}:{port}")

        def sender() -> None:
            while not stop.is_set():
                started = time.monotonic()
                with lock:
                    n = next(counter)
                    pushes[n] = Push(SINGLE)
                code = single_push(port, n, host)
                pushes[n].codes.append(code)
                if code != "200":
                    note(f"push {n}: {code}")
                time.sleep(max(0.0, interval - (time.monotonic() - started)))

        def two_ready() -> bool:
            return len(release.ready_pods()) == 2 and len(release.pods()) == 2

        threads = [threading.Thread(target=sender) for _ in range(args.senders)]
        for t in threads:
            t.start()
        time.sleep(args.settle)
        note("kubectl rollout restart")
        release.run("kubectl", "-n", ns, "rollout", "restart", f"deployment/{FULLNAME}")
        release.run("kubectl", "-n", ns, "rollout", "status", f"deployment/{FULLNAME}",
                    "--timeout", "5m")  # fmt: skip
        until(two_ready, "two ready replicas after the rollout", 300)
        note("rollout done")
        time.sleep(args.settle)
        victim = release.pods()[0].metadata.name
        note(f"kubectl delete pod {victim}")
        release.run("kubectl", "-n", ns, "delete", "pod", victim)
        until(two_ready, "two ready replicas after the deletion", 300)
        note("two replicas ready again")
        time.sleep(args.settle)
        stop.set()
        for t in threads:
            t.join(120)
        note("senders stopped; matching pushes to builds")

        accepted = {n for n, p in pushes.items() if p.accepted}
        deadline = time.monotonic() + args.drain
        builds = release.builds()
        while not accepted <= set(builds) and time.monotonic() < deadline:
            time.sleep(2)
            builds = release.builds()
        print()
        print(
            f"rollout restart + pod delete through the Service (kube-proxy iptables), "
            f"2 replicas, shutdownDelaySeconds {delay}, {args.senders} senders "
            f"at {args.rate:g}/s"
        )
        failed = _report(pushes, builds)
        return 1 if failed else 0
    finally:
        stop.set()
        release.remove()


if __name__ == "__main__":
    sys.exit(main())
