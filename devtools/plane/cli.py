"""``scripts/control-plane up|down|status|env|build``."""

from __future__ import annotations

import shlex
import sys

from .build import build_kubernetes
from .errors import PlaneError, say
from .lifecycle import Plane

USAGE = "usage: scripts/control-plane up|down|status|env|build"


def main(argv: list[str]) -> int:
    """Run one command on the plane in ``$BRIGADE_CRGW_PLANE_DIR`` or ``.control-plane``."""
    command = argv[1] if len(argv) > 1 else "help"
    plane = Plane()
    try:
        if command == "up":
            plane.up()
            say(f"admin:   {plane.admin_kubeconfig}")
            say(f"gateway: {plane.gateway_kubeconfig}")
        elif command == "down":
            plane.down()
        elif command == "build":
            say(f"binaries: {', '.join(str(p) for p in build_kubernetes().values())}")
        elif command == "status":
            state = plane.status()
            if state is None:
                print("not running")
                return 1
            pids = state.pids
            print(
                f"running: kube-apiserver {state.server} (pid {pids['kube-apiserver']}),"
                f" etcd {state.etcd} (pid {pids['etcd']}), state in {plane.state_dir}"
            )
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
