"""``make bench``: the gateway beside the API server it writes to.

For each CPU layout, body size and concurrency, the same API server is
driven twice by wrk, over loopback, one run after the other:

(a) *direct*: wrk POSTs the build Secret the gateway would write for such a
    push to ``/api/v1/namespaces/<ns>/secrets`` over https, with
    ``metadata.generateName``, as the gateway's own least-privilege identity
    (the token of its kubeconfig) -- the API server's own create rate;
(b) *gateway*: a fresh ``twistd -n brigade-crgw`` with the shipped
    ``etc/brigade-crgw.ini`` (only the port, namespace and kubeconfig
    changed, and ``max_body_bytes`` for bodies above it), wrk POSTing
    Docker Hub pushes that are each distinct (a repeated push is a
    redelivery and rightly makes no build).

Each run has a 1-second warm-up, then ``--duration`` measured seconds.  It
prints the table and writes it, with the machine, the method and a plot,
to ``docs/benchmark.md`` and ``docs/performance.png`` (a filtered run
writes to ``.bench/`` unless ``--out`` says otherwise).

    make bench [BENCH_ARGS="--quick --profile"]
    PYTHONPATH=. .venv/bin/python -m bench.run [--quick] [--layout pinned]
        [--concurrency 1,32] [--body 1k,64k] [--duration 5] [--profile] [--plane]
        [--set kubernetes.threads=32]
"""

from __future__ import annotations

import argparse
import base64
import configparser
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import attr

from bench import profile as profiling
from bench import report, wrk
from bench.wrk import BenchError
from brigade_crgw import brigade, registries
from devtools import ROOT
from devtools.plane import KUBERNETES_VERSION, Plane, State
from devtools.plane.processes import free_port
from devtools.projects import project_secret as brig_project_secret

SHIPPED_INI = ROOT / "etc" / "brigade-crgw.ini"
TWISTD = Path(sys.executable).parent / "twistd"

BODIES = {"1k": 1024, "64k": 64 * 1024, "512k": 512 * 1024}
CONCURRENCY = (1, 8, 32, 128)
LAYOUTS = ("pinned", "shared")
WARM_UP_SECONDS = 1.0
# The largest body the gateway can be configured to take (a build Secret
# holds at most 1 MiB); set only for bodies above the shipped default.
MAX_BODY_CEILING = 786432
# The gateway runs with this group ID, so that a firewall counter can tell
# its connections from everyone else's (see SynCounter).
GATEWAY_GID = 47744
PROJECT = "bench/app"
TOKEN = "bench-token-" + uuid.uuid4().hex

# A Docker Hub push, in the shape Docker Hub documents, with markers where
# each request puts its own values.
PUSH: dict[str, object] = {
    "callback_url": "https://registry.hub.docker.com/u/bench/app/hook/0123456789abcdef/",
    "push_data": {"pushed_at": wrk.PUSHED_AT, "pusher": "bench", "tag": wrk.TAG},
    "repository": {
        "comment_count": 0,
        "date_created": 1700000000,
        "description": "the image the bench pushes",
        "is_official": False,
        "is_private": True,
        "is_trusted": False,
        "name": "app",
        "namespace": "bench",
        "owner": "bench",
        "repo_name": "bench/app",
        "repo_url": "https://hub.docker.com/r/bench/app",
        "star_count": 0,
        "status": "Active",
    },
    # Not a Docker Hub field: it brings the body to the size under test.
    "padding": wrk.PADDING,
}


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


# --- the namespace, the project and the counting of builds ----------------------


def project_secret() -> dict[str, Any]:
    """The bench's project, as ``brig project create`` writes one, with a token."""
    return brig_project_secret(PROJECT, TOKEN)


def count_secrets(core: Any, namespace: str) -> int:
    """The Secrets in ``namespace``, counted by the API server without
    sending them (``limit=1`` and ``remainingItemCount``)."""
    response = core.list_namespaced_secret(namespace, limit=1, _preload_content=False)
    doc = json.loads(response.data)
    remaining = doc["metadata"].get("remainingItemCount")
    if remaining is not None or not doc["metadata"].get("continue"):
        return len(doc["items"]) + int(remaining or 0)
    total, token = 0, None
    while True:  # an API server that does not count: page through them
        response = core.list_namespaced_secret(
            namespace, limit=200, _continue=token, _preload_content=False
        )
        doc = json.loads(response.data)
        total += len(doc["items"])
        token = doc["metadata"].get("continue")
        if not token:
            return total


def settled_count(core: Any, namespace: str, timeout: float = 60.0) -> int:
    """The Secret count once it stops moving (requests that were in flight
    when wrk stopped finish or fail)."""
    deadline = time.monotonic() + timeout
    last, steady = count_secrets(core, namespace), 0
    while steady < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
        now = count_secrets(core, namespace)
        steady = steady + 1 if now == last else 0
        last = now
    return last


def delete_builds(core: Any, namespace: str, state: State) -> None:
    core.delete_collection_namespaced_secret(namespace, label_selector="component=build")
    compact_etcd(state)


def direct_body(body: bytes) -> bytes:
    """The build Secret the gateway writes for the push ``body``, named by
    the API server (``generateName``) instead of the build ID."""
    project = brigade.Project.from_secret(brigade.project_id(PROJECT), project_secret())
    assert project is not None
    delivery = registries.decode(body, {"content-type": "application/json"}, None)
    event = delivery.events[0]
    secret = brigade.build_secret(project, event, brigade.build_id(project, event))
    metadata = secret["metadata"]
    assert isinstance(metadata, dict)
    del metadata["name"]
    metadata["generateName"] = "brigade-worker-"
    return json.dumps(secret).encode()


def sample_push(size: int) -> bytes:
    """One push of the size under test, as the wrk script makes them."""
    pieces, padding = wrk.push_template(PUSH, size, "r0000")
    values = (wrk.push_pushed_at(1), wrk.push_tag("r0000", 1, 1), "x" * padding)
    return (pieces[0] + "".join(v + p for v, p in zip(values, pieces[1:], strict=True))).encode()


# --- the gateway process --------------------------------------------------------


@attr.s(auto_attribs=True)
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_ms(self) -> float:
        """User + system CPU time of all its threads so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def gateway_ini(
    port: int,
    namespace: str,
    kubeconfig: Path,
    max_body: int | None,
    overrides: dict[tuple[str, str], str] | None = None,
) -> str:
    """The shipped ini, with only what this machine needs changed (and the
    ``--set`` overrides of an experiment)."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(SHIPPED_INI.read_text())
    ini["server"]["listen"] = f"tcp:{port}:interface=127.0.0.1"
    if max_body is not None:
        ini["server"]["max_body_bytes"] = str(max_body)
    ini["kubernetes"]["namespace"] = namespace
    ini["kubernetes"]["kubeconfig"] = str(kubeconfig)
    if ini.has_option("spool", "path") and ini["spool"]["path"]:
        # The shipped spool lives in systemd's StateDirectory; this one is
        # the bench's, one file per gateway.
        ini["spool"]["path"] = str(kubeconfig.parent / f"spool-{port}.sqlite")
    for (section, key), value in (overrides or {}).items():
        ini[section][key] = value
    lines = []
    for section in ini.sections():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in ini[section].items()]
        lines.append("")
    return "\n".join(lines)


def start_gateway(
    tmp: Path,
    namespace: str,
    kubeconfig: Path,
    max_body: int | None,
    cpu: int | None,
    gid: int | None,
    overrides: dict[tuple[str, str], str] | None = None,
) -> Gateway:
    port = free_port()
    config = tmp / f"gateway-{port}.ini"
    config.write_text(gateway_ini(port, namespace, kubeconfig, max_body, overrides))
    log = tmp / f"gateway-{port}.log"
    argv = [
        str(TWISTD),
        "--nodaemon",
        "--pidfile=",
        f"--logfile={log}",
        "brigade-crgw",
        "--config",
        str(config),
    ]
    # Each wrapper execs the next, so the process is twistd itself.
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    if gid is not None:
        argv = ["setpriv", f"--regid={gid}", "--clear-groups", "--", *argv]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("BRIGADE_NAMESPACE", None)
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    gateway = Gateway(process, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise BenchError(f"the gateway exited with {process.returncode}:\n{text[-3000:]}")
        try:
            url = f"http://127.0.0.1:{port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return gateway
        except OSError:
            time.sleep(0.1)
    gateway.stop()
    raise BenchError("the gateway did not answer /healthz within 60 s")


# --- measuring: connections, CPUs, the machine ----------------------------------


class SynCounter:
    """Counts the TCP connections the gateway opens to the API server: an
    nftables rule on the output hook counts SYN packets (without ACK) from
    sockets of the gateway's group to 127.0.0.1 on the API server's port.
    The kernel counts them, not the gateway."""

    def __init__(self, api_port: int, gid: int) -> None:
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


def machine(wrk_path: str) -> dict[str, str]:
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


# --- the runs -------------------------------------------------------------------


@attr.s(auto_attribs=True)
class Bench:
    wrk_path: str
    state: State
    core: Any
    namespace: str
    kubeconfig: Path
    token: str
    tmp: Path
    duration: float
    counter: SynCounter | None
    cpus: tuple[int, int] | None
    pool: int
    shipped_max_body: int
    overrides: dict[tuple[str, str], str]
    runs: int = 0

    def run_name(self) -> str:
        self.runs += 1
        return f"r{self.runs:04d}"

    def load(
        self, url: str, script: str, concurrency: int, seconds: float, layout: str
    ) -> wrk.WrkResult:
        cpus = str(self.cpus[1]) if layout == "pinned" and self.cpus else None
        return wrk.run(self.wrk_path, url, script, concurrency, seconds, cpus)

    def direct(self, body: str, concurrency: int, layout: str) -> tuple[wrk.WrkResult, int]:
        script = wrk.direct_script(self.token, direct_body(sample_push(BODIES[body])))
        url = f"{self.state.server}/api/v1/namespaces/{self.namespace}/secrets"
        self.load(url, script, concurrency, WARM_UP_SECONDS, layout)
        before = settled_count(self.core, self.namespace)
        result = self.load(url, script, concurrency, self.duration, layout)
        return result, settled_count(self.core, self.namespace) - before

    def push(self, body: str) -> str:
        run = self.run_name()
        pieces, padding = wrk.push_template(PUSH, BODIES[body], run)
        return wrk.push_script(f"/events/webhook/{PROJECT}?token={TOKEN}", pieces, padding, run)

    def gateway(
        self, body: str, concurrency: int, layout: str, profile: Path | None = None
    ) -> tuple[wrk.WrkResult, int, float, float, int | None]:
        """One fresh gateway: warm-up, the measured run; its result, the
        Secrets made, CPU-ms, peak RSS and connections opened."""
        size = BODIES[body]
        max_body = MAX_BODY_CEILING if size > self.shipped_max_body else None
        opened = self.counter.read() if self.counter else 0
        gateway = start_gateway(
            self.tmp,
            self.namespace,
            self.kubeconfig,
            max_body,
            self.cpus[0] if layout == "pinned" and self.cpus else None,
            GATEWAY_GID if self.counter else None,
            self.overrides,
        )
        spies: list[subprocess.Popen[bytes]] = []
        try:
            url = f"http://127.0.0.1:{gateway.port}"
            self.load(url, self.push(body), concurrency, WARM_UP_SECONDS, layout)
            before = settled_count(self.core, self.namespace)
            cpu = gateway.cpu_ms()
            if profile is not None:
                # Two samplers side by side: threads running or ready to
                # run, and the thread holding the GIL (Python executing).
                spies = [
                    start_py_spy(
                        gateway.pid, profile / f"{kind}.txt", self.duration, self.cpus, kind
                    )
                    for kind in ("active", "gil")
                ]
            result = self.load(url, self.push(body), concurrency, self.duration, layout)
            made = settled_count(self.core, self.namespace) - before
            cpu = gateway.cpu_ms() - cpu
            rss = gateway.peak_rss_mib()
            connections = self.counter.read() - opened if self.counter else None
            for spy in spies:
                spy.wait(timeout=60)
        finally:
            for spy in spies:
                if spy.poll() is None:
                    spy.terminate()
            gateway.stop()
        return result, made, cpu, rss, connections

    def row(self, layout: str, body: str, concurrency: int) -> report.Row:
        direct, direct_made = self.direct(body, concurrency, layout)
        delete_builds(self.core, self.namespace, self.state)
        gateway, made, cpu, rss, connections = self.gateway(body, concurrency, layout)
        delete_builds(self.core, self.namespace, self.state)
        return report.Row(
            layout,
            body,
            concurrency,
            direct,
            direct_made,
            gateway,
            made,
            rss,
            cpu,
            connections,
            self.pool,
        )


def start_py_spy(
    pid: int, out: Path, duration: float, cpus: tuple[int, int] | None, kind: str
) -> subprocess.Popen[bytes]:
    """py-spy recording the gateway (on the load's CPU): ``active`` samples
    (threads running or ready to run), or ``gil`` (the thread holding the GIL)."""
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
        f"--duration={max(1, int(duration))}",
        f"--output={out}",
        f"--pid={pid}",
        *(["--gil"] if kind == "gil" else []),
    ]
    if cpus is not None:
        argv = ["taskset", "-c", str(cpus[1]), *argv]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _list(value: str, allowed: list[str]) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
    return chosen


def _setting(text: str) -> tuple[tuple[str, str], str]:
    name, equals, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not (equals and dot and section and key):
        raise argparse.ArgumentTypeError("write SECTION.KEY=VALUE, e.g. kubernetes.threads=32")
    return (section, key), value.strip()


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="only the pinned layout, c=32, 1 KiB bodies"
    )
    parser.add_argument(
        "--layout",
        type=lambda v: _list(v, list(LAYOUTS)),
        default=None,
        help="pinned and/or shared (comma-separated)",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda v: [int(c) for c in _list(v, [str(c) for c in CONCURRENCY])],
        default=None,
        help="any of 1,8,32,128",
    )
    parser.add_argument(
        "--body", type=lambda v: _list(v, list(BODIES)), default=None, help="any of 1k,64k,512k"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the gateway (py-spy) under the pinned c=32 1 KiB load",
    )
    parser.add_argument(
        "--plane", action="store_true", help="also time a warm `control-plane up` from stopped"
    )
    parser.add_argument(
        "--set",
        action="append",
        type=_setting,
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="an experiment: change the gateway's ini (e.g. kubernetes.threads=32); "
        "the output says so",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where benchmark.md and performance.png go"
        " (default: docs/ for the full matrix, else .bench/)",
    )
    args = parser.parse_args(argv)
    filtered = args.quick or any((args.layout, args.concurrency, args.body, args.set))
    if args.quick:
        args.layout, args.concurrency, args.body = ["pinned"], [32], ["1k"]
    args.layout = args.layout or list(LAYOUTS)
    args.concurrency = args.concurrency or list(CONCURRENCY)
    args.body = args.body or list(BODIES)
    if args.out is None:
        args.out = ROOT / (".bench" if filtered else "docs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    # SIGTERM unwinds like Ctrl-C: the plane's CPUs are given back, the
    # counter removed and the gateway stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _main(args)
    except BenchError as e:
        say(f"error: {e}")
        return 1


def _main(args: argparse.Namespace) -> int:
    from kubernetes import client

    wrk_path = wrk.ensure_wrk()
    about = machine(wrk_path)
    say(f"machine: {about}")
    plane, state = plane_up(args.plane)
    about["API server"] = f"kube-apiserver {KUBERNETES_VERSION}, etcd (the local plane)"
    api = plane.admin_api()
    core = client.CoreV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})  # type: ignore[arg-type]
    core.create_namespaced_secret(namespace, project_secret())  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix="brigade-crgw-bench-"))
    try:
        result = _measure(args, about, wrk_path, plane, state, api, core, namespace, tmp)
    except BaseException:
        say(f"the gateways' logs are kept in {tmp}")
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def _measure(
    args: argparse.Namespace,
    about: dict[str, str],
    wrk_path: str,
    plane: Plane,
    state: State,
    api: Any,
    core: Any,
    namespace: str,
    tmp: Path,
) -> int:
    kubeconfig = tmp / "gateway.kubeconfig"
    plane.gateway_identity(namespace, kubeconfig, 3600)
    token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
    shipped = configparser.ConfigParser(interpolation=None)
    shipped.read_string(SHIPPED_INI.read_text())
    overrides: dict[tuple[str, str], str] = dict(args.set)
    for (section, key), value in overrides.items():
        if not shipped.has_option(section, key):
            raise BenchError(f"--set {section}.{key}: the shipped ini has no such key")
        shipped[section][key] = value
    usable = sorted(os.sched_getaffinity(0))
    cpus = (usable[0], usable[1]) if len(usable) >= 2 else None
    layouts = [layout for layout in args.layout if layout == "shared" or cpus]
    if layouts != args.layout:
        say("fewer than two CPUs: no pinned layout")
    counter = SynCounter.create(api_port(state))
    bench = Bench(
        wrk_path,
        state,
        core,
        namespace,
        kubeconfig,
        token,
        tmp,
        args.duration,
        counter,
        cpus,
        shipped.getint("kubernetes", "threads"),
        shipped.getint("server", "max_body_bytes"),
        overrides,
    )
    rows: list[report.Row] = []
    started = time.monotonic()
    profile = None
    try:
        for layout in layouts:
            with pinned(state.pids, cpus[1]) if layout == "pinned" and cpus else _nothing():
                for body in args.body:
                    for concurrency in args.concurrency:
                        say(f"{layout}, {body}, c={concurrency} ...")
                        row = bench.row(layout, body, concurrency)
                        rows.append(row)
                        print(report.table([row]).splitlines()[-1], flush=True)
                if args.profile and layout == "pinned":
                    profile = run_profile(bench)
        if args.profile and profile is None and cpus:
            with pinned(state.pids, cpus[1]):
                profile = run_profile(bench)
    finally:
        if counter is not None:
            counter.close()
        with suppress(Exception):
            delete_builds(core, namespace, state)
            core.delete_namespace(namespace)
    about["load average at end"] = load_average()
    about["the bench took"] = f"{(time.monotonic() - started) / 60:.1f} minutes"
    document = report.document(
        about,
        rows,
        pool=bench.pool,
        shipped_max_body=bench.shipped_max_body,
        raised_max_body=MAX_BODY_CEILING,
        duration=args.duration,
        warm_up=WARM_UP_SECONDS,
        counted=counter is not None,
        profile=profile,
        overrides=[f"[{section}] {key} = {value}" for (section, key), value in overrides.items()],
    )
    print()
    print(report.table(rows))
    target_row = report.find(rows, "pinned", "1k", 32)
    if target_row is not None:
        print(report.targets_table(target_row))
    if profile is not None:
        print(profile)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.md").write_text(document)
    try:
        report.plot(rows, args.out / "performance.png")
    except ImportError:
        say("matplotlib is missing (`pip install '.[bench]'`): no plot")
    say(f"wrote {args.out / 'benchmark.md'} and performance.png")
    return 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def run_profile(bench: Bench) -> str:
    """py-spy on a gateway under the pinned c=32 1 KiB load; the headline."""
    say("profiling the gateway (py-spy), pinned, 1k, c=32 ...")
    where = bench.tmp / "profile"
    where.mkdir()
    result, made, cpu, _, _ = bench.gateway("1k", 32, "pinned", profile=where)
    delete_builds(bench.core, bench.namespace, bench.state)
    raw = {kind: where / f"{kind}.txt" for kind in ("active", "gil")}
    if not all(path.exists() for path in raw.values()):
        raise BenchError("py-spy wrote no profile (is ptrace allowed here?)")
    share = cpu / (result.seconds * 1000.0) if result.seconds else 0.0
    return (
        f"In the profiled run the gateway made {made} builds at {result.ok_per_second:.0f}/s"
        f" and used {share:.0%} of a core ({cpu / made if made else 0:.2f} CPU-ms per build).\n\n"
        "### Threads running or ready to run\n\n"
        + profiling.markdown(profiling.summarise(raw["active"].read_text()))
        + "\n### The thread holding the GIL (Python code running)\n\n"
        + profiling.markdown(profiling.summarise(raw["gil"].read_text()))
    )


if __name__ == "__main__":
    sys.exit(main())
