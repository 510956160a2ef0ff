"""The processes the bench runs and watches: the plane (etcd compacted, its
threads pinned to a CPU), the gateway (started through
:mod:`devtools.gateway`), what the kernel says of a process (CPU time, peak
RSS, the connections it opened) and py-spy."""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from bench.wrk import BenchError
from devtools import ROOT
from devtools import gateway as gateway_process
from devtools.plane import Plane, State
from devtools.projects import decoded

# The gateway runs with this group ID, so that a firewall counter can tell
# its connections from everyone else's (see SynCounter).
GATEWAY_GID = 47744


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- the control plane --------------------------------------------------------


def plane_up(time_it: bool) -> tuple[Plane, State]:
    """The worktree's local plane, started or reused."""
    plane = Plane()
    if time_it:
        plane.down(quiet=True)
        started = time.monotonic()
        plane.up()
        say(
            f"control plane up from stopped (warm binary cache): {time.monotonic() - started:.1f} s"
        )
    return plane, plane.up()


def fresh_namespace(
    plane: Plane, prefix: str, project: dict[str, Any], kubeconfig: Path
) -> tuple[Any, str]:
    """A new namespace on ``plane`` holding the project Secret ``project``,
    with the gateway's least-privilege identity written to ``kubeconfig``:
    the admin's ``CoreV1Api`` and the namespace's name."""
    from kubernetes import client

    core = client.CoreV1Api(plane.admin_api())
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]
    core.create_namespaced_secret(name, project)  # type: ignore[arg-type]
    plane.gateway_identity(name, kubeconfig, 3600)
    return core, name


def builds_by_push(core: Any, namespace: str) -> dict[int, list[str]]:
    """The build Secrets in ``namespace`` by the number of the push that made
    each (its Docker Hub ``pushed_at`` less 1700000000, as
    :func:`devtools.projects.fresh` numbers them)."""
    found: dict[int, list[str]] = {}
    for secret in core.list_namespaced_secret(namespace, label_selector="component=build").items:
        body = core.api_client.sanitize_for_serialization(secret)
        payload = json.loads(decoded(body)["payload"])
        found.setdefault(payload["push_data"]["pushed_at"] - 1700000000, []).append(
            str(body["metadata"]["name"])
        )
    return found


def api_port(state: State) -> int:
    return int(state.server.rsplit(":", 1)[1])


def _etcd(state: State, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 (the plane's etcd, on loopback)
        state.etcd + path, json.dumps(doc).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        return dict(json.load(response))


def compact_etcd(state: State) -> None:
    """Compact etcd's history (and defragment a large database): the deleted
    builds of a 512 KiB run would otherwise fill etcd's 2 GiB quota."""
    revision = _etcd(state, "/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
    with suppress(urllib.error.HTTPError):  # already compacted that far
        _etcd(
            state,
            "/v3/kv/compaction",
            {"revision": revision["header"]["revision"], "physical": True},
        )
    if int(_etcd(state, "/v3/maintenance/status", {}).get("dbSize", 0)) > 256 << 20:
        _etcd(state, "/v3/maintenance/defragment", {})


def _mask(pid: int) -> str:
    out = subprocess.run(
        ["taskset", "-p", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    return out.rsplit(":", 1)[1].strip()


@contextmanager
def pinned(pids: dict[str, int], cpu: int) -> Iterator[None]:
    """Move every thread of the plane's processes to ``cpu``, and back after."""
    saved = {pid: _mask(pid) for pid in pids.values()}
    try:
        for pid in saved:
            subprocess.run(
                ["taskset", "-a", "-p", "-c", str(cpu), str(pid)], capture_output=True, check=True
            )
        yield
    finally:
        for pid, mask in saved.items():
            subprocess.run(["taskset", "-a", "-p", mask, str(pid)], capture_output=True)


# --- the gateway ----------------------------------------------------------------


def start_gateway(
    tmp: Path,
    namespace: str,
    kubeconfig: Path,
    settings: dict[str, dict[str, object]],
    wrappers: list[str],
) -> gateway_process.Daemon:
    """A fresh ``twistd -n brigade-crgw`` on the shipped ini, with
    ``settings`` over it, started through ``wrappers`` (taskset, setpriv)."""
    try:
        return gateway_process.start(
            tmp,
            namespace,
            kubeconfig,
            settings,
            timeout=60,
            base=gateway_process.shipped_settings(),
            wrappers=wrappers,
        )
    except RuntimeError as e:
        raise BenchError(str(e)[-3000:]) from e


def cpu_ms(pid: int) -> float:
    """User + system CPU time of all the threads of ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The peak resident set of ``pid`` over its life (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class SynCounter:
    """Counts the TCP connections the gateway opens to the API server: an
    nftables rule on the output hook counts SYN packets (without ACK) from
    sockets of the gateway's group to 127.0.0.1 on the API server's port.
    The kernel counts them, not the gateway."""

    def __init__(self, api_port: int, gid: int) -> None:
        self.gid = gid
        self.table = f"brigade_crgw_bench_{os.getpid()}"
        ruleset = (
            f"table inet {self.table} {{\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f"    meta skgid {gid} ip daddr 127.0.0.1 tcp dport {api_port}"
            " tcp flags & (syn | ack) == syn counter\n"
            "  }\n"
            "}\n"
        )
        done = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"nft refused the counter: {done.stderr.strip()}")

    def read(self) -> int:
        done = subprocess.run(
            ["nft", "-j", "list", "chain", "inet", self.table, "out"],
            capture_output=True,
            text=True,
            check=True,
        )
        for item in json.loads(done.stdout)["nftables"]:
            for expression in item.get("rule", {}).get("expr", []):
                if "counter" in expression:
                    return int(expression["counter"]["packets"])
        raise BenchError("the nftables counter is gone")

    def wrapper(self) -> list[str]:
        """The command that runs a process in the counted group."""
        return ["setpriv", f"--regid={self.gid}", "--clear-groups", "--"]

    def close(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)

    @classmethod
    def create(cls, api_port: int) -> SynCounter | None:
        """A counter, or None (and why) when this machine cannot have one."""
        if os.geteuid() != 0:
            say("not root: connections to the API server are not counted")
            return None
        if shutil.which("nft") is None:
            say("installing nftables (apt-get install -y nftables) to count connections")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "install", "-y", "-qq", "nftables"], env=env)
        if shutil.which("nft") is None or shutil.which("setpriv") is None:
            say("nft or setpriv is missing: connections to the API server are not counted")
            return None
        try:
            return cls(api_port, GATEWAY_GID)
        except BenchError as e:
            say(f"{e}: connections to the API server are not counted")
            return None


def start_py_spy(
    pid: int, out: Path, seconds: float, kind: str, cpu: int | None
) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` (on ``cpu``): ``active`` samples (threads
    running or ready to run), or ``gil`` (the thread holding the GIL)."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("py-spy is missing: `make bench` installs it (the bench extra)")
    argv = [
        spy,
        "record",
        "--format=raw",
        "--threads",
        "--nonblocking",
        "--rate=100",
        f"--duration={max(1, int(seconds))}",
        f"--output={out}",
        f"--pid={pid}",
        *(["--gil"] if kind == "gil" else []),
    ]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- the machine ------------------------------------------------------------------


def machine(wrk_path: str) -> dict[str, str]:
    """What the report says of the machine and the programs measured."""
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    version = subprocess.run([wrk_path, "-v"], capture_output=True, text=True).stdout
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "CPU": model,
        "load average at start (1, 5, 15 min)": load_average(),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "wrk": version.splitlines()[0] if version else "unknown",
        "gateway": f"brigade-crgw at {commit()}, "
        + ", ".join(f"{name} {package_version(name)}" for name in ("Twisted", "kubernetes")),
    }


def commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])
