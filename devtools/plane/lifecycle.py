"""The plane in one directory: :class:`Plane` starts, reuses, reports and stops it."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import attr
from kubernetes import config

from devtools import ROOT

from . import pki, processes
from .build import build_kubernetes
from .errors import PlaneError, say
from .identity import TOKEN_SECONDS, b64, gateway_identity, write_kubeconfig
from .node import NODE_PROCESSES, Network, Node, allocate_network, remove_network

# Chooses the state directory when a Plane is made without one, so a second
# plane can run beside the first.
STATE_DIR_VARIABLE = "BRIGADE_CRGW_PLANE_DIR"
DEFAULT_NAMESPACE = "default"
READY_TIMEOUT = 60.0


def default_state_dir() -> Path:
    """``$BRIGADE_CRGW_PLANE_DIR``, else ``.control-plane`` in the working tree."""
    return Path(os.environ.get(STATE_DIR_VARIABLE) or ROOT / ".control-plane")


@attr.s(frozen=True, auto_attribs=True)
class State:
    """A started plane: the API server's and etcd's URLs, the process IDs by
    name, and the number of its node's :class:`~.node.Network` (None: no node)."""

    server: str
    etcd: str
    pids: dict[str, int]
    node: int | None = None

    def to_json(self) -> str:
        return json.dumps(attr.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        doc = json.loads(text)
        pids = {k: int(v) for k, v in doc["pids"].items()}
        return cls(doc["server"], doc["etcd"], pids, doc.get("node"))


@attr.s(frozen=True)
class Plane:
    """The local plane whose state (certificates, etcd data, logs,
    kubeconfigs, ``plane.json``) lives in ``state_dir``."""

    state_dir: Path = attr.ib(factory=default_state_dir, converter=Path)

    @property
    def admin_kubeconfig(self) -> Path:
        """Cluster admin (``system:masters``), namespace ``default``."""
        return self.state_dir / "admin.kubeconfig"

    @property
    def gateway_kubeconfig(self) -> Path:
        """The gateway's own restricted identity in namespace ``default``."""
        return self.state_dir / "gateway.kubeconfig"

    def env(self) -> dict[str, str]:
        """The environment that points ``kubectl`` at this plane, as its admin."""
        return {"KUBECONFIG": str(self.admin_kubeconfig)}

    def admin_api(self) -> Any:
        """A kubernetes ``ApiClient`` for the admin (the plane must be up)."""
        return config.new_client_from_config(str(self.admin_kubeconfig))

    def gateway_identity(self, namespace: str, path: Path, seconds: int = TOKEN_SECONDS) -> None:
        """The gateway's RBAC in ``namespace`` of this plane, and its kubeconfig at ``path``."""
        gateway_identity(self.admin_api(), namespace, path, seconds)

    def _saved(self) -> State | None:
        try:
            return State.from_json((self.state_dir / "plane.json").read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _ready(self, state: State, timeout: float = 2.0) -> bool:
        context = ssl.create_default_context(cafile=str(self.state_dir / "ca.crt"))
        context.load_cert_chain(
            str(self.state_dir / "admin.crt"), str(self.state_dir / "admin.key")
        )
        # https, to this plane's own server on loopback.
        try:
            with urllib.request.urlopen(  # noqa: S310
                state.server + "/readyz", context=context, timeout=timeout
            ) as response:
                return response.status == 200 and response.read() == b"ok"
        except (OSError, urllib.error.URLError):
            return False

    def status(self) -> State | None:
        """The state of a plane that runs and is ready, else None."""
        state = self._saved()
        if state and all(processes.alive(pid) for pid in state.pids.values()):
            if self._ready(state):
                return state
        return None

    def up(self, node: bool = False) -> State:
        """Start the plane, or reuse the one that runs; write both kubeconfigs.

        :param node: with a node (:mod:`.node`) too; a running plane without
            one is started again, since its API server must then listen
            where pods reach it.
        """
        state = self.status()
        if state is not None and node and state.node is None:
            say("the running plane has no node: starting it again with one")
            state = None
        if state is None:
            started = time.monotonic()
            state = self._start(node)
            say(f"ready at {state.server} in {time.monotonic() - started:.1f}s")
        else:
            say(f"reusing the plane at {state.server}")
        self._write_kubeconfigs(state)
        if not self.gateway_kubeconfig.exists():
            self.gateway_identity(DEFAULT_NAMESPACE, self.gateway_kubeconfig)
        return state

    def _write_kubeconfigs(self, state: State) -> None:
        """The admin's kubeconfig, and with a node its components' (each
        with its own client certificate but the controller-manager's)."""
        names = {"admin": self.admin_kubeconfig}
        if state.node is not None:
            names |= {n: self.state_dir / f"{n}.kubeconfig" for n, _ in pki.NODE_CLIENTS}
        for name, path in names.items():
            write_kubeconfig(
                path,
                state.server,
                b64(self.state_dir / "ca.crt"),
                {
                    "client-certificate-data": b64(self.state_dir / f"{name}.crt"),
                    "client-key-data": b64(self.state_dir / f"{name}.key"),
                },
                DEFAULT_NAMESPACE,
            )

    def node(self) -> Node:
        """The node of the running plane (:meth:`up` with ``node=True``)."""
        state = self.status()
        if state is None or state.node is None:
            raise PlaneError("no node runs here: start one with `scripts/control-plane up --node`")
        return Node(Network(state.node), self.state_dir)

    def down(self, quiet: bool = False) -> None:
        """Stop the node (if any) and both processes, and remove the state
        directory."""
        state = self._saved()
        if state and state.node is not None:
            node_pids = {k: v for k, v in state.pids.items() if k in NODE_PROCESSES}
            Node(Network(state.node), self.state_dir).stop(node_pids)
        if state:
            # The API server first: stopped together with etcd, it waits out
            # the whole grace period for the store it lost.  With a node, its
            # lease endpoint reconciler then waits up to 20 s to remove its
            # endpoint from a Service about to be deleted anyway: 2 s is enough.
            grace = 2.0 if state.node is not None else 10.0
            processes.stop([state.pids["kube-apiserver"]], grace)
            processes.stop([state.pids["etcd"]])
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
            if not quiet:
                say("stopped, state removed")
        elif not quiet:
            say("not running")

    def _start(self, node: bool) -> State:
        bins = build_kubernetes()
        self.down(quiet=True)
        directory = self.state_dir
        directory.mkdir(parents=True)
        network = allocate_network() if node else None
        try:
            state = self._start_server(bins, network)
            if network is not None:
                self._write_kubeconfigs(state)
                pids = Node(network, directory).start(state.server)
                state = attr.evolve(state, pids={**state.pids, **pids})
                (directory / "plane.json").write_text(state.to_json())
        except BaseException:
            if network is not None and self._saved() is None:
                remove_network(network)
            raise
        return state

    def _start_server(self, bins: dict[str, Path], network: Network | None) -> State:
        """etcd and kube-apiserver, on loopback; with a node's ``network``,
        the API server listens at the host's end of the node's veth instead,
        where pods reach it, and keeps the ``kubernetes`` Service's endpoints
        there (the lease reconciler)."""
        directory = self.state_dir
        if network is None:
            pki.make_certificates(directory)
            address, services = "127.0.0.1", "10.96.0.0/24"
            node_args: list[str] = ["--endpoint-reconciler-type", "none"]
        else:
            pki.make_certificates(
                directory, [network.host_ip, network.kubernetes_service_ip], pki.NODE_CLIENTS
            )
            address, services = network.host_ip, network.service_cidr
            node_args = [
                *("--kubelet-client-certificate", "admin.crt"),
                *("--kubelet-client-key", "admin.key"),
                "--kubelet-preferred-address-types=InternalIP",
                # Projected tokens expire when they say, so a test can see
                # the kubelet rotate them (the default stretches the
                # kube-api-access token's hour to a year).
                "--service-account-extend-token-expiration=false",
            ]
        etcd_port, peer_port, api_port = (processes.free_port() for _ in range(3))
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        pids = {
            "etcd": processes.spawn(
                directory,
                "etcd",
                [
                    str(bins["etcd"]),
                    *("--name", "plane", "--data-dir", str(directory / "etcd")),
                    *("--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url),
                    *("--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url),
                    *("--initial-cluster", f"plane={peer_url}"),
                    # A throwaway development store: durability buys nothing here.
                    "--unsafe-no-fsync",
                ],
            ),
        }
        pids["kube-apiserver"] = processes.spawn(
            directory,
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                *("--etcd-servers", etcd_url),
                *("--bind-address", address, "--advertise-address", address),
                *("--secure-port", str(api_port), "--cert-dir", str(directory / "certs")),
                *("--tls-cert-file", "apiserver.crt", "--tls-private-key-file", "apiserver.key"),
                *("--client-ca-file", "ca.crt", "--authorization-mode", "Node,RBAC"),
                *("--service-account-issuer", "https://kubernetes.default.svc"),
                *("--service-account-key-file", "sa.pub"),
                *("--service-account-signing-key-file", "sa.key"),
                *("--service-cluster-ip-range", services),
                *node_args,
            ],
        )
        state = State(
            f"https://{address}:{api_port}",
            etcd_url,
            pids,
            None if network is None else network.index,
        )
        (directory / "plane.json").write_text(state.to_json())
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready(state):
            for name, pid in pids.items():
                if not processes.alive(pid):
                    tail = processes.log_tail(directory, name)
                    raise PlaneError(f"{name} exited during start-up; its log ends:\n{tail}")
            if time.monotonic() > deadline:
                tail = processes.log_tail(directory, "kube-apiserver")
                raise PlaneError(
                    f"kube-apiserver was not ready within {READY_TIMEOUT:.0f}s;"
                    f" its log ends:\n{tail}"
                )
            time.sleep(0.25)
        return state
