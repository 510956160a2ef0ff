"""`make run`: the gateway in the foreground on port 7744, with a demo project.

With no cluster configured ($KUBECONFIG, ~/.kube/config) the local control
plane is started (or reused) and the gateway runs with its own restricted
identity; otherwise the configured cluster's current context is used.  A
project ``demo/hello`` with a fresh token is created (or updated),
and a ``curl`` that triggers a build is printed before the gateway starts.
The gateway runs the shipped ini with ``[gateway] annotate_payload = true``,
so the demo project's script reads the image from ``e.payload`` in the same
shape whichever registry sent the webhook: a Brigade v1 script sees only
``e.type``, ``e.provider``, ``e.revision`` and ``e.payload`` of a build.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import os
import secrets
import shlex
import sys
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from brigade_crgw.brigade import project_id
from devtools import ROOT
from devtools.plane import DEFAULT_NAMESPACE, Plane, PlaneError

PROJECT = "demo/hello"
# Only what brigadier 1.5 gives a script: e.type, e.provider, e.revision
# and e.payload (the titles are for brig and Brigade's API, not scripts).
SCRIPT = """const { events } = require("brigadier");
events.on("image_push", (e, p) => {
  // The gateway adds "brigade_crgw" to the payload: annotate_payload = true.
  const image = JSON.parse(e.payload).brigade_crgw;
  console.log(`${e.type} from ${e.provider}: ${image.host}/${image.repository}:${image.tag}`);
  console.log(`digest ${image.digest || "(not in the webhook)"}, pushed by ${image.pusher || "?"}`);
  console.log(`commit-ish ${e.revision.ref || "(none in the URL)"}`);
});
"""


def configured_kubeconfig() -> str | None:
    """The user's own cluster, if one is configured."""
    for candidate in (
        os.environ.get("KUBECONFIG", "").split(os.pathsep)[0],
        str(Path.home() / ".kube" / "config"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def put_project(api: client.ApiClient, namespace: str, token: str) -> None:
    """Create or replace the demo project as `brig project create` would."""
    values = {
        "repository": PROJECT,
        "cloneURL": "",
        "defaultScript": SCRIPT,
        "crGatewayToken": token,
    }
    body = {
        "metadata": {
            "name": project_id(PROJECT),
            "labels": {"app": "brigade", "heritage": "brigade", "component": "project"},
            "annotations": {"projectName": PROJECT},
        },
        "type": "brigade.sh/project",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as e:
        if e.status != 409:
            raise
        core.replace_namespaced_secret(project_id(PROJECT), namespace, body)


def demo_ini(path: Path, port: int, namespace: str, kubeconfig: str) -> Path:
    """The shipped ini with the demo's port, cluster and spool (in the
    working tree: the shipped /var/lib path is systemd's StateDirectory=),
    and the payload annotated for the demo's script."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string((ROOT / "etc" / "brigade-crgw.ini").read_text())
    ini["server"]["listen"] = f"tcp:{port}:interface=127.0.0.1"
    ini["kubernetes"]["namespace"] = namespace
    ini["kubernetes"]["kubeconfig"] = kubeconfig
    ini["gateway"]["annotate_payload"] = "true"
    ini["spool"]["path"] = str(path.parent / "spool.sqlite")
    with path.open("w") as f:
        ini.write(f)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7744)
    parser.add_argument("--namespace", default=os.environ.get("BRIGADE_NAMESPACE", "default"))
    args = parser.parse_args()

    kubeconfig = configured_kubeconfig()
    if kubeconfig is None:
        plane = Plane()
        try:
            plane.up()
        except PlaneError as e:
            print(f"make run: the local control plane did not start: {e}", file=sys.stderr)
            return 1
        admin, gateway = str(plane.admin_kubeconfig), str(plane.gateway_kubeconfig)
        if args.namespace != DEFAULT_NAMESPACE:
            print(
                "make run: the local plane's gateway identity is for namespace default",
                file=sys.stderr,
            )
            return 2
    else:
        admin = gateway = kubeconfig
        print(f"make run: using the cluster configured in {kubeconfig}", file=sys.stderr)
    token = secrets.token_urlsafe(24)
    put_project(config.new_client_from_config(admin), args.namespace, token)
    payload = ROOT / "tests" / "payloads" / "dockerhub" / "push-docs.json"
    url = f"http://127.0.0.1:{args.port}/events/webhook/{PROJECT}?token={token}"
    print(
        f"\nProject {PROJECT} is ready in namespace {args.namespace}. Trigger a build with:\n\n"
        f"  curl -sS -X POST -H 'Content-Type: application/json' \\\n"
        f"    --data-binary @{shlex.quote(str(payload))} \\\n    {shlex.quote(url)}\n\n"
        f"Builds: kubectl --kubeconfig {admin} get secrets -l component=build\n",
        flush=True,
    )
    run = ROOT / ".run"
    run.mkdir(mode=0o700, exist_ok=True)
    ini = demo_ini(run / "brigade-crgw.ini", args.port, args.namespace, gateway)
    twistd = Path(sys.executable).parent / "twistd"
    argv = [
        str(twistd),
        "--nodaemon",
        "--pidfile=",
        "--logfile=-",
        "brigade-crgw",
        "--config",
        str(ini),
    ]
    os.environ["PYTHONPATH"] = str(ROOT)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
