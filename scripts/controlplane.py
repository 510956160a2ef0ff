"""A local Kubernetes control plane: etcd and kube-apiserver on loopback.

The gateway's job is reading and writing Secrets through the Kubernetes API,
so its tests and its quickstart talk to a real API server, not an imitation.
This module builds the two binaries once per machine (cached by version),
starts them on free loopback ports with state under ``.control-plane/``, and
writes an admin kubeconfig and a kubeconfig for the gateway's own restricted
ServiceAccount.  ``scripts/control-plane`` is its command line; the pytest
fixtures import it, so tests and people start the plane through the same code.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

KUBERNETES_VERSION = "v1.34.4"
# Kubernetes 1.34 supports etcd 3.5 and newer; Debian bookworm ships 3.4.23,
# so etcd is built from the same Go module graph, at the version
# k8s.io/kubernetes itself requires.
ETCD_MODULE = "go.etcd.io/etcd/server/v3"

ROOT = Path(__file__).resolve().parent.parent
# $BRIGADE_CRGW_PLANE_DIR moves the state, so a second plane can run beside
# the first (the lifecycle tests do that).
STATE = Path(os.environ.get("BRIGADE_CRGW_PLANE_DIR") or ROOT / ".control-plane")
RBAC_FILE = ROOT / "etc" / "kubernetes" / "rbac.yaml"
GATEWAY_ACCOUNT = "brigade-crgw"
DEFAULT_NAMESPACE = "default"
# A token for a development plane; long enough for a working day.
TOKEN_SECONDS = 7 * 24 * 3600
READY_TIMEOUT = 60.0


class PlaneError(Exception):
    """Something the plane needs is missing or did not start; the message says what."""


def say(message: str) -> None:
    print(f"control-plane: {message}", file=sys.stderr, flush=True)


# --- binaries -----------------------------------------------------------------


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "brigade-crgw" / f"kubernetes-{KUBERNETES_VERSION}"


def binaries() -> dict[str, Path]:
    bin_dir = cache_dir() / "bin"
    return {"kube-apiserver": bin_dir / "kube-apiserver", "etcd": bin_dir / "etcd"}


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    say("$ " + " ".join(cmd))
    result = subprocess.run(cmd, cwd=cwd, env=env)
    if result.returncode != 0:
        raise PlaneError(f"{' '.join(cmd)} failed with exit code {result.returncode}")


def _staging_replaces(go: str, env: dict[str, str], cwd: Path) -> list[str]:
    """The ``k8s.io/*`` staging modules that k8s.io/kubernetes replaces locally.

    As a dependency, k8s.io/kubernetes's own ``./staging`` replaces do not
    apply, so each staging module is pinned to its published ``v0.x.y``.
    """
    out = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    staging_version = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
    replaces = []
    for line in gomod.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "=>" and parts[2].startswith("./staging/"):
            replaces.append(f"{parts[0]} => {parts[0]} {staging_version}")
    if not replaces:
        raise PlaneError("found no staging replace directives in k8s.io/kubernetes's go.mod")
    return replaces


def build() -> dict[str, Path]:
    """Build kube-apiserver and etcd with this machine's Go, unless cached."""
    wanted = binaries()
    if all(p.exists() for p in wanted.values()):
        return wanted
    go = shutil.which("go")
    if go is None:
        raise PlaneError(
            "the Go toolchain (`go`) is not on PATH; it builds kube-apiserver and etcd"
        )
    bin_dir = cache_dir() / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(f"building kube-apiserver {KUBERNETES_VERSION} and etcd (first run only, several minutes)")
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    with tempfile.TemporaryDirectory(prefix="brigade-crgw-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module brigade-crgw/control-plane\n\ngo 1.24.0\n")
        replaces = _staging_replaces(go, env, work)
        with (work / "go.mod").open("a") as f:
            f.write("\nreplace (\n" + "".join(f"\t{r}\n" for r in replaces) + ")\n")
        _run([go, "get", f"k8s.io/kubernetes/cmd/kube-apiserver@{KUBERNETES_VERSION}"], work, env)
        # etcd comes at the server version Kubernetes itself requires.
        version_flags = " ".join(
            f"-X k8s.io/component-base/version.{k}={v}"
            for k, v in {
                "gitVersion": KUBERNETES_VERSION,
                "gitMajor": "1",
                "gitMinor": KUBERNETES_VERSION.split(".")[1],
            }.items()
        )
        _run(
            [
                go,
                "build",
                "-trimpath",
                "-ldflags",
                f"-s -w {version_flags}",
                "-o",
                str(wanted["kube-apiserver"]) + ".tmp",
                "k8s.io/kubernetes/cmd/kube-apiserver",
            ],
            work,
            env,
        )
        _run(
            [
                go,
                "build",
                "-trimpath",
                "-ldflags",
                "-s -w",
                "-o",
                str(wanted["etcd"]) + ".tmp",
                ETCD_MODULE,
            ],
            work,
            env,
        )
    for path in wanted.values():
        Path(str(path) + ".tmp").rename(path)
    say(f"built in {time.monotonic() - started:.0f}s, cached in {bin_dir}")
    return wanted


# --- certificates -------------------------------------------------------------


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], cwd=STATE, capture_output=True, text=True)
    if result.returncode != 0:
        raise PlaneError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _make_certificates() -> None:
    """A private CA, a serving certificate for loopback, an admin client
    certificate and the key that signs ServiceAccount tokens."""
    if shutil.which("openssl") is None:
        raise PlaneError("`openssl` is not on PATH; it makes the plane's certificates")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=brigade-crgw-dev-ca",
    )
    for name, subject, usage in (
        (
            "apiserver",
            "/CN=kube-apiserver",
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost",
        ),
        ("admin", "/O=system:masters/CN=brigade-crgw-admin", "extendedKeyUsage=clientAuth"),
    ):
        (STATE / f"{name}.ext").write_text(usage + "\n")
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-out",
            f"{name}.crt",
            "-extfile",
            f"{name}.ext",
        )
    _openssl("genrsa", "-out", "sa.key", "2048")
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")


# --- processes ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(name: str, argv: list[str]) -> int:
    log = (STATE / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=STATE,
        start_new_session=True,
    )
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still answers kill(0); reap it.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def _state() -> dict[str, Any] | None:
    try:
        return json.loads((STATE / "plane.json").read_text())
    except (OSError, ValueError):
        return None


def _readyz(state: dict[str, Any], timeout: float = 2.0) -> bool:
    context = ssl.create_default_context(cafile=str(STATE / "ca.crt"))
    context.load_cert_chain(str(STATE / "admin.crt"), str(STATE / "admin.key"))
    try:
        with urllib.request.urlopen(
            state["server"] + "/readyz", context=context, timeout=timeout
        ) as response:
            return response.status == 200 and response.read() == b"ok"
    except (OSError, urllib.error.URLError):
        return False


def running() -> dict[str, Any] | None:
    """The state of a plane that runs and is ready, else None."""
    state = _state()
    if state and all(_alive(pid) for pid in state["pids"].values()) and _readyz(state):
        return state
    return None


def _log_tail(name: str, lines: int = 15) -> str:
    try:
        text = (STATE / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _start() -> dict[str, Any]:
    bins = build()
    down(quiet=True)
    STATE.mkdir(parents=True)
    _make_certificates()
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
    pids = {
        "etcd": _spawn(
            "etcd",
            [
                str(bins["etcd"]),
                "--name",
                "plane",
                "--data-dir",
                str(STATE / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"plane={peer_url}",
                # A throwaway development store: durability buys nothing here.
                "--unsafe-no-fsync",
            ],
        ),
    }
    pids["kube-apiserver"] = _spawn(
        "kube-apiserver",
        [
            str(bins["kube-apiserver"]),
            "--etcd-servers",
            etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--secure-port",
            str(api_port),
            "--cert-dir",
            str(STATE / "certs"),
            "--tls-cert-file",
            "apiserver.crt",
            "--tls-private-key-file",
            "apiserver.key",
            "--client-ca-file",
            "ca.crt",
            "--authorization-mode",
            "Node,RBAC",
            "--service-account-issuer",
            "https://kubernetes.default.svc",
            "--service-account-key-file",
            "sa.pub",
            "--service-account-signing-key-file",
            "sa.key",
            "--service-cluster-ip-range",
            "10.96.0.0/24",
            "--endpoint-reconciler-type",
            "none",
        ],
    )
    state = {"server": f"https://127.0.0.1:{api_port}", "etcd": etcd_url, "pids": pids}
    (STATE / "plane.json").write_text(json.dumps(state, indent=2) + "\n")
    deadline = time.monotonic() + READY_TIMEOUT
    while not _readyz(state):
        for name, pid in pids.items():
            if not _alive(pid):
                raise PlaneError(f"{name} exited during start-up; its log ends:\n{_log_tail(name)}")
        if time.monotonic() > deadline:
            raise PlaneError(
                "kube-apiserver was not ready within "
                f"{READY_TIMEOUT:.0f}s; its log ends:\n{_log_tail('kube-apiserver')}"
            )
        time.sleep(0.25)
    return state


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path, server: str, ca_data: str | None, user: dict[str, str], namespace: str
) -> None:
    """Write a one-context kubeconfig (JSON, which every YAML reader reads).

    :param ca_data: the cluster's CA (base64 PEM); None trusts the system's.
    """
    cluster = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "plane", "cluster": cluster}],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {
                "name": "plane",
                "context": {"cluster": "plane", "user": "user", "namespace": namespace},
            }
        ],
        "current-context": "plane",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


def admin_kubeconfig() -> Path:
    return STATE / "admin.kubeconfig"


def gateway_kubeconfig() -> Path:
    return STATE / "gateway.kubeconfig"


def apply_rbac(api: Any, namespace: str) -> None:
    """Create (or keep) etc/kubernetes/rbac.yaml's objects in ``namespace``."""
    import yaml
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    creators = {
        "ServiceAccount": core.create_namespaced_service_account,
        "Role": rbac.create_namespaced_role,
        "RoleBinding": rbac.create_namespaced_role_binding,
    }
    for doc in yaml.safe_load_all(RBAC_FILE.read_text()):
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
        try:
            creators[doc["kind"]](namespace, doc)
        except ApiException as e:
            if e.status != 409:
                raise


def gateway_token(api: Any, namespace: str, seconds: int = TOKEN_SECONDS) -> str:
    """A token for the gateway's ServiceAccount, from the TokenRequest API."""
    from kubernetes import client

    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    answer = client.CoreV1Api(api).create_namespaced_service_account_token(
        GATEWAY_ACCOUNT, namespace, request
    )
    return str(answer.status.token)


def gateway_identity(api: Any, namespace: str, path: Path, seconds: int = TOKEN_SECONDS) -> None:
    """Give the gateway its identity in ``namespace`` of the cluster ``api``
    talks to: apply the RBAC, and write a kubeconfig holding a token of its
    ServiceAccount at ``path``."""
    apply_rbac(api, namespace)
    token = gateway_token(api, namespace, seconds)
    configuration = api.configuration
    ca = _b64(Path(configuration.ssl_ca_cert)) if configuration.ssl_ca_cert else None
    write_kubeconfig(path, configuration.host, ca, {"token": token}, namespace)


def admin_api() -> Any:
    from kubernetes import config

    return config.new_client_from_config(str(admin_kubeconfig()))


def up() -> dict[str, Any]:
    """Start the plane, or reuse the one that runs; write both kubeconfigs."""
    state = running()
    if state is None:
        started = time.monotonic()
        state = _start()
        say(f"ready at {state['server']} in {time.monotonic() - started:.1f}s")
    else:
        say(f"reusing the plane at {state['server']}")
    ca = _b64(STATE / "ca.crt")
    write_kubeconfig(
        admin_kubeconfig(),
        state["server"],
        ca,
        {
            "client-certificate-data": _b64(STATE / "admin.crt"),
            "client-key-data": _b64(STATE / "admin.key"),
        },
        DEFAULT_NAMESPACE,
    )
    if not gateway_kubeconfig().exists():
        gateway_identity(admin_api(), DEFAULT_NAMESPACE, gateway_kubeconfig())
    return state


def down(quiet: bool = False) -> None:
    """Stop both processes and remove the state."""
    state = _state()
    if state:
        for pid in state["pids"].values():
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in state["pids"].values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in state["pids"].values():
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
    if STATE.exists():
        shutil.rmtree(STATE)
        if not quiet:
            say("stopped, state removed")
    elif not quiet:
        say("not running")


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "help"
    try:
        if command == "up":
            up()
            say(f"admin:   {admin_kubeconfig()}")
            say(f"gateway: {gateway_kubeconfig()}")
        elif command == "down":
            down()
        elif command == "build":
            say(f"binaries: {', '.join(str(p) for p in build().values())}")
        elif command == "status":
            state = running()
            if state is None:
                print("not running")
                return 1
            pids = state["pids"]
            print(
                f"running: kube-apiserver {state['server']} (pid {pids['kube-apiserver']}),"
                f" etcd {state['etcd']} (pid {pids['etcd']}), state in {STATE}"
            )
        elif command == "env":
            print(f"export KUBECONFIG={admin_kubeconfig()}")
            print(f"# the gateway's own identity: {gateway_kubeconfig()}")
        else:
            print("usage: scripts/control-plane up|down|status|env|build", file=sys.stderr)
            return 0 if command in ("help", "-h", "--help") else 2
    except PlaneError as e:
        say(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
