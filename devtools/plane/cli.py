"""``scripts/control-plane up [--node]|load IMAGE|down|status|env|build``."""

from __future__ import annotations

import shlex
import sys

from .build import build_kubernetes, build_node
from .errors import PlaneError, say
from .lifecycle import Plane
from .node import NODE_NAME, NODE_PROCESSES, pause_archive

USAGE = (
    "usage: scripts/control-plane up [--node] | load IMAGE | down | status | env | build [--node]"
)


def main(argv: list[str]) -> int:
    """Run one command on the plane in ``$BRIGADE_CRGW_PLANE_DIR`` or ``.control-plane``."""
    command = argv[1] if len(argv) > 1 else "help"
    plane = Plane()
    try:
        if command == "up" and argv[2:] in ([], ["--node"]):
            state = plane.up(node=argv[2:] == ["--node"])
            say(f"admin:   {plane.admin_kubeconfig}")
            say(f"gateway: {plane.gateway_kubeconfig}")
            if state.node is not None:
                network = plane.node().network
                say(f"node:    {NODE_NAME} at {network.node_ip}, pods {network.pod_cidr},"
                    f" Services {network.service_cidr}")  # fmt: skip
        elif command == "load" and len(argv) == 3:
            plane.node().load(argv[2])
        elif command == "down":
            plane.down()
        elif command == "build" and argv[2:] in ([], ["--node"]):
            built = list(build_kubernetes().values())
            if argv[2:] == ["--node"]:
                built += [*build_node().values(), pause_archive()]
            say(f"built: {', '.join(str(p) for p in built)}")
        elif command == "status":
            running = plane.status()
            if running is None:
                print("not running")
                return 1
            pids = running.pids
            print(
                f"running: kube-apiserver {running.server} (pid {pids['kube-apiserver']}),"
                f" etcd {running.etcd} (pid {pids['etcd']}), state in {plane.state_dir}"
            )
            if running.node is not None:
                others = ", ".join(f"{n} (pid {pids[n]})" for n in NODE_PROCESSES if n in pids)
                print(f"node {NODE_NAME}: {others}")
        elif command == "env":
            for name, value in plane.env().items():
                print(f"export {name}={shlex.quote(value)}")
            print(f"# the gateway's own identity: {plane.gateway_kubeconfig}")
        else:
            print(USAGE, file=sys.stderr)
            return 0 if command in ("help", "-h", "--help") else 2
    except PlaneError as e:
        say(f"error: {e}")
        return 1
    return 0
