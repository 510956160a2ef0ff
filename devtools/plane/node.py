"""A node beside the plane: containerd, the kubelet and kube-proxy, plus the
scheduler and the controller-manager, so a Deployment's pods really run.

The node lives in a network namespace of its own (``crgw-node-<index>``),
joined to the host by a veth pair: its bridge, its iptables rules (kube-proxy
and the CNI plugins) and its ports never touch the host's, two worktrees can
each run one, and deleting the namespace removes them all.  The host reaches
ClusterIPs and pod addresses through routes via the veth; pods reach the API
server at the host end of the veth, which is the address the plane binds and
advertises when it has a node (see :class:`Network`).

Only the network is separate: every process runs in the host's mount
namespace (the kubelet's volume mounts must be what containerd sees), and all
of the node's files are under ``<state>/node``.  Nothing is pulled: the pause
image is built here (:func:`pause_archive`) and images come in with
``scripts/control-plane load IMAGE`` (:meth:`Node.load`).

What this machine needs, learnt the hard way: containerd's
``restrict_oom_score_adj`` (the sandbox's runc may not lower
``oom_score_adj``), and a kubelet told that cgroup v1, no QoS cgroups, no
node-allocatable enforcement, swap and no hard eviction are all fine.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attr
from kubernetes import client

from . import processes
from .build import KUBERNETES_VERSION, build_node, cache_root
from .errors import PlaneError, say

NODE_NAME = "brigade-crgw-node"
PAUSE_IMAGE = "localhost/brigade-crgw-pause:3.10.1"
CNI_PLUGINS = Path("/usr/lib/cni")
# Pods, the kubelet's own start and containerd can be slow on a busy machine.
NODE_READY_TIMEOUT = 180.0
NETNS_DIR = Path("/run/netns")
LOCK_FILE = Path("/run/lock/brigade-crgw-node.lock")
# How many nodes may run on one machine at once (one per working tree).
MAX_NODES = 200
# The processes of a node, in the order they start; they stop in reverse.
NODE_PROCESSES = (
    "containerd",
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
    "kube-controller-manager",
)


@attr.s(frozen=True, auto_attribs=True)
class Network:
    """The addresses of node number ``index`` (1 to :data:`MAX_NODES`).

    - ``10.241.<index>.0/30``: the veth pair, the host's end (where the API
      server listens) and the node's;
    - ``10.242.<index>.0/24``: the pods, on the node's bridge;
    - ``10.243.<index>.0/24``: the Services (the ``kubernetes`` Service is
      the first address).
    """

    index: int

    @property
    def netns(self) -> str:
        return f"crgw-node-{self.index}"

    @property
    def host_veth(self) -> str:
        return f"crgw-node-{self.index}"

    @property
    def host_ip(self) -> str:
        return f"10.241.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"10.241.{self.index}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.242.{self.index}.0/24"

    @property
    def service_cidr(self) -> str:
        return f"10.243.{self.index}.0/24"

    @property
    def kubernetes_service_ip(self) -> str:
        return f"10.243.{self.index}.1"

    def in_netns(self, argv: list[str]) -> list[str]:
        """``argv`` run in the node's network namespace, and no other."""
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", "--", *argv]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise PlaneError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@contextmanager
def _machine_lock() -> Iterator[None]:
    """One node setup or teardown at a time on this machine."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _check_tools() -> None:
    for tool in ("ip", "nsenter", "containerd", "containerd-shim-runc-v2", "runc", "ctr"):
        if shutil.which(tool) is None:
            raise PlaneError(
                f"`{tool}` is not on PATH; the node needs Debian's containerd, runc and"
                " iproute2 (scripts/provision installs them)"
            )
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        if not (CNI_PLUGINS / plugin).exists():
            raise PlaneError(
                f"the CNI plugin {CNI_PLUGINS / plugin} is missing"
                " (apt-get install containernetworking-plugins)"
            )


def allocate_network() -> Network:
    """A free node index, its network namespace and veth made and routed."""
    _check_tools()
    with _machine_lock():
        for index in range(1, MAX_NODES + 1):
            network = Network(index)
            if not (NETNS_DIR / network.netns).exists() and not _link_exists(network.host_veth):
                _make_network(network)
                return network
    raise PlaneError(f"{MAX_NODES} nodes already run on this machine")


def _link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def _make_network(n: Network) -> None:
    _ip("netns", "add", n.netns)
    try:
        _ip("link", "add", n.host_veth, "type", "veth", "peer", "name", "uplink", "netns", n.netns)
        _ip("addr", "add", f"{n.host_ip}/30", "dev", n.host_veth)
        _ip("link", "set", n.host_veth, "up")
        _ip("-n", n.netns, "link", "set", "lo", "up")
        _ip("-n", n.netns, "addr", "add", f"{n.node_ip}/30", "dev", "uplink")
        _ip("-n", n.netns, "link", "set", "uplink", "up")
        # No default route: the API server is on the veth's own link, and
        # nothing in the node (a pod, containerd pulling an image it lacks)
        # can reach beyond this machine.
        for cidr in (n.pod_cidr, n.service_cidr):
            _ip("route", "add", cidr, "via", n.node_ip, "dev", n.host_veth)
        # Routing between the bridge and the uplink (needed), and Service
        # rules that see bridged traffic (a pod reaching a Service backed by
        # a pod on the same bridge; without br_netfilter only that fails).
        for key, needed in (
            ("net/ipv4/ip_forward", True),
            ("net/bridge/bridge-nf-call-iptables", False),
        ):
            result = subprocess.run(
                n.in_netns(["sh", "-c", f"echo 1 > /proc/sys/{key}"]),
                capture_output=True,
                text=True,
            )
            if needed and result.returncode != 0:
                raise PlaneError(f"could not set {key} in {n.netns}: {result.stderr.strip()}")
    except PlaneError:
        remove_network(n)
        raise


def remove_network(n: Network) -> None:
    """Delete the node's namespace (its bridge and iptables rules go with it)
    and the host's end of the veth (and so its routes)."""
    _ip("link", "delete", n.host_veth, check=False)
    _ip("netns", "delete", n.netns, check=False)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@attr.s(frozen=True, auto_attribs=True)
class Node:
    """Node number ``network.index`` with its files in ``directory``
    (``<state>/node``); ``plane_dir`` holds the plane's certificates and
    kubeconfigs."""

    network: Network
    plane_dir: Path

    @property
    def directory(self) -> Path:
        return self.plane_dir / "node"

    @property
    def socket(self) -> Path:
        return self.directory / "containerd.sock"

    # --- start ----------------------------------------------------------------

    def start(self, server: str) -> dict[str, int]:
        """Start containerd (with the pause image), the kubelet, kube-proxy,
        the scheduler and the controller-manager; their process IDs by name.
        Returns once the node is Ready."""
        bins = build_node()
        self.directory.mkdir(parents=True, exist_ok=True)
        pids: dict[str, int] = {}
        try:
            pids["containerd"] = self._spawn(
                "containerd",
                ["containerd", "--config", str(self._containerd_config())],
                in_netns=True,
            )
            self._wait("containerd", pids, self._containerd_answers, 30)
            self._import(pause_archive(), "pause image")
            pids["kubelet"] = self._spawn(
                "kubelet",
                [
                    str(bins["kubelet"]),
                    *("--config", str(self._kubelet_config())),
                    *("--kubeconfig", str(self.plane_dir / "kubelet.kubeconfig")),
                    *("--root-dir", str(self.directory / "kubelet")),
                    *("--cert-dir", str(self.directory / "kubelet-pki")),
                    *("--hostname-override", NODE_NAME, "--node-ip", self.network.node_ip),
                ],
                in_netns=True,
            )
            pids["kube-proxy"] = self._spawn(
                "kube-proxy",
                [
                    str(bins["kube-proxy"]),
                    *("--kubeconfig", str(self.plane_dir / "kube-proxy.kubeconfig")),
                    *("--proxy-mode", "iptables", "--hostname-override", NODE_NAME),
                    *("--cluster-cidr", self.network.pod_cidr),
                    # Leave the machine-wide conntrack table size alone.
                    *("--conntrack-max-per-core", "0"),
                ],
                in_netns=True,
            )
            pids["kube-scheduler"] = self._spawn(
                "kube-scheduler",
                [
                    str(bins["kube-scheduler"]),
                    *("--kubeconfig", str(self.plane_dir / "kube-scheduler.kubeconfig")),
                    *("--bind-address", "127.0.0.1"),
                    *("--secure-port", str(processes.free_port())),
                    "--leader-elect=false",
                ],
            )
            pids["kube-controller-manager"] = self._spawn(
                "kube-controller-manager",
                [
                    str(bins["kube-controller-manager"]),
                    *("--kubeconfig", str(self.plane_dir / "admin.kubeconfig")),
                    *("--bind-address", "127.0.0.1"),
                    *("--secure-port", str(processes.free_port())),
                    *("--service-account-private-key-file", str(self.plane_dir / "sa.key")),
                    *("--root-ca-file", str(self.plane_dir / "ca.crt")),
                    "--leader-elect=false",
                ],
            )
            self._wait("node", pids, self._node_ready, NODE_READY_TIMEOUT)
        except BaseException:
            self.stop(pids)
            raise
        return pids

    def _spawn(self, name: str, argv: list[str], in_netns: bool = False) -> int:
        if in_netns:
            argv = self.network.in_netns(argv)
        return processes.spawn(self.directory, name, argv)

    def _wait(self, what: str, pids: dict[str, int], ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, pid in pids.items():
                if not processes.alive(pid):
                    tail = processes.log_tail(self.directory, name)
                    raise PlaneError(f"{name} exited during start-up; its log ends:\n{tail}")
            if time.monotonic() > deadline:
                last = list(pids)[-1]
                tail = processes.log_tail(self.directory, last)
                raise PlaneError(
                    f"the {what} was not ready within {timeout:.0f}s; {last}'s log ends:\n{tail}"
                )
            time.sleep(0.25)

    def _containerd_answers(self) -> bool:
        return self.ctr("version", check=False).returncode == 0

    def _node_ready(self) -> bool:
        from kubernetes import config

        api = config.new_client_from_config(str(self.plane_dir / "admin.kubeconfig"))
        try:
            node = client.CoreV1Api(api).read_node(NODE_NAME)
        except client.ApiException:
            return False
        finally:
            api.close()
        conditions = (node.status and node.status.conditions) or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def _containerd_config(self) -> Path:
        d = self.directory
        cni = d / "cni"
        bridge = {
            "cniVersion": "1.0.0",
            "name": "crgw",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "crgw0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.network.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(d / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        _write(cni / "10-crgw.conflist", json.dumps(bridge, indent=2) + "\n")
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        runc = f"{cri}.containerd.runtimes.runc"
        return _write(
            d / "containerd.toml",
            f"""version = 2
root = "{d / "containerd-root"}"
state = "{d / "containerd-state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "containerd-opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine refuses to lower oom_score_adj: without this every sandbox
  # fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  # The pods' network namespaces under the node's own directory.
  netns_mounts_under_state_dir = true
[{cri}.cni]
  bin_dir = "{CNI_PLUGINS}"
  conf_dir = "{cni}"
[{runc}]
  runtime_type = "io.containerd.runc.v2"
[{runc}.options]
  SystemdCgroup = false
""",
        )

    def _kubelet_config(self) -> Path:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            # What this machine needs: cgroup v1, no QoS cgroup tree, nothing
            # reserved or enforced, swap allowed, no evictions.
            "failCgroupV1": False,
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "evictionHard": {},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "address": self.network.node_ip,
            "healthzBindAddress": "127.0.0.1",
            "readOnlyPort": 0,
            "podLogsDir": str(self.directory / "pod-logs"),
            "resolvConf": "",
            "clusterDomain": "cluster.local",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.plane_dir / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
        }
        return _write(self.directory / "kubelet.json", json.dumps(config, indent=2) + "\n")

    # --- images ---------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ctr`` against this node's containerd, in the namespace the kubelet uses."""
        result = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
        )
        if check and result.returncode != 0:
            raise PlaneError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def _import(self, archive: Path, what: str) -> None:
        started = time.monotonic()
        self.ctr("images", "import", str(archive))
        say(f"{what} imported into the node in {time.monotonic() - started:.1f}s")

    def load(self, image: str) -> None:
        """Make ``image`` (in podman's storage, e.g. from ``make image``)
        available to the node's kubelet under the same name."""
        with tempfile.TemporaryDirectory(prefix="brigade-crgw-load-") as tmp:
            archive = Path(tmp) / "image.tar"
            result = subprocess.run(
                ["podman", "save", "--quiet", "--format", "oci-archive", "-o", str(archive), image],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise PlaneError(f"podman save {image} failed: {result.stderr.strip()}")
            self._import(archive, image)
        listed = self.ctr("images", "list", "--quiet").stdout.split()
        if _normalised(image) not in listed:
            raise PlaneError(f"{image} was imported but the node lists only {listed}")

    # --- stop -----------------------------------------------------------------

    def stop(self, pids: dict[str, int]) -> None:
        """Stop the node's processes and containers, unmount what they mounted
        and delete the network namespace (its bridge and rules with it)."""
        processes.stop([pid for name, pid in pids.items() if name != "containerd"])
        if "containerd" in pids and processes.alive(pids["containerd"]):
            for task in self.ctr("tasks", "list", "--quiet", check=False).stdout.split():
                self.ctr("tasks", "delete", "--force", task, check=False)
            processes.stop([pids["containerd"]])
        self._kill_shims()
        self._delete_pod_netns()
        unmount_under(self.directory)
        with _machine_lock():
            remove_network(self.network)
            # containerd's parent cgroup for its namespace, once no node uses it.
            for parent in Path("/sys/fs/cgroup").glob("*/k8s.io"):
                try:
                    parent.rmdir()
                except OSError:
                    pass

    def _kill_shims(self) -> None:
        """SIGKILL any shim of this containerd left behind, and its containers."""
        shims = [p for p in _processes() if str(self.socket) in p[1] and "shim" in p[1]]
        children = _children()
        for pid, _ in shims:
            for victim in [*_descendants(pid, children), pid]:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _delete_pod_netns(self) -> None:
        """The pods' network namespaces (``cni-*``) that hold an address of
        this node's pod range."""
        prefix = self.network.pod_cidr.rsplit(".", 1)[0] + "."
        for path in NETNS_DIR.glob("cni-*"):
            addresses = _ip("-n", path.name, "-4", "-o", "addr", "show", check=False).stdout
            if f"inet {prefix}" in addresses:
                _ip("netns", "delete", path.name, check=False)


def _normalised(image: str) -> str:
    """The name containerd gives ``image`` (a tag of ``latest`` when none)."""
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last or "@" in last else f"{image}:latest"


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found.append((int(entry.name), cmdline))
    return found


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    return children


def _descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    found = []
    for child in children.get(pid, []):
        found += [*_descendants(child, children), child]
    return found


def unmount_under(directory: Path) -> None:
    """Lazily unmount every mount point under ``directory``, deepest first."""
    root = str(directory.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(root):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def pause_archive() -> Path:
    """The pause image as an OCI archive, built once and cached: the
    ``pause.c`` of the k8s.io/kubernetes module at the plane's version,
    compiled static, in an image ``buildah`` makes from scratch."""
    archive = cache_root() / f"pause-{KUBERNETES_VERSION}" / "pause.oci.tar"
    if archive.exists():
        return archive
    for tool in ("gcc", "buildah", "go"):
        if shutil.which(tool) is None:
            raise PlaneError(f"`{tool}` is not on PATH; it builds the node's pause image")
    archive.parent.mkdir(parents=True, exist_ok=True)
    source = _module_dir() / "build" / "pause" / "linux" / "pause.c"
    tag = PAUSE_IMAGE.rsplit(":", 1)[1]
    with tempfile.TemporaryDirectory(prefix="brigade-crgw-pause-") as tmp:
        binary = Path(tmp) / "pause"
        _run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{tag}-brigade-crgw",
              "-o", str(binary), str(source)])  # fmt: skip
        container = _run(["buildah", "from", "scratch"]).stdout.strip()
        try:
            _run(["buildah", "copy", container, str(binary), "/pause"])
            _run(["buildah", "config", "--entrypoint", '["/pause"]', "--user", "65535:65535",
                  container])  # fmt: skip
            _run(["buildah", "commit", "--quiet", container, PAUSE_IMAGE])
        finally:
            _run(["buildah", "rm", container])
        partial = archive.with_suffix(".tmp")
        _run(["buildah", "push", "--quiet", PAUSE_IMAGE, f"oci-archive:{partial}:{PAUSE_IMAGE}"])
    partial.rename(archive)
    say(f"pause image built, cached at {archive}")
    return archive


def _module_dir() -> Path:
    """The k8s.io/kubernetes module's source, downloaded to Go's module cache."""
    with tempfile.TemporaryDirectory(prefix="brigade-crgw-build-") as tmp:
        out = _run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
            cwd=tmp,
            env=dict(os.environ, GOFLAGS="-mod=mod"),
        ).stdout
    return Path(json.loads(out)["Dir"])


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise PlaneError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result
