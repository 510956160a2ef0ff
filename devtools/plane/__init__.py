"""A local Kubernetes control plane: etcd and kube-apiserver on loopback.

The gateway's job is reading and writing Secrets through the Kubernetes API,
so its tests and its quickstart talk to a real API server, not an imitation.
:class:`Plane` starts the two binaries (built once per machine, cached by
version) on free loopback ports with state in its directory, and writes an
admin kubeconfig and a kubeconfig for the gateway's own restricted
ServiceAccount.  ``scripts/control-plane`` is its command line
(:mod:`devtools.plane.cli`); the pytest fixtures, ``make run`` and the bench
use the same object, so tests and people start the plane through one code path.

- :mod:`.build`: Go builds into the cache (any module's main package, and
  kube-apiserver + etcd);
- :mod:`.pki`: the plane's CA, serving, client and ServiceAccount keys;
- :mod:`.processes`: spawning, watching and stopping the processes;
- :mod:`.identity`: kubeconfigs, RBAC and the gateway's token;
- :mod:`.lifecycle`: :class:`Plane`, up / status / down.
- :mod:`.cli`: the command; :mod:`.errors`: ``PlaneError`` and progress lines.
"""

from .build import KUBERNETES_VERSION, build_go_binary, build_kubernetes
from .errors import PlaneError
from .identity import GATEWAY_ACCOUNT, RBAC_FILE, gateway_identity, write_kubeconfig
from .lifecycle import DEFAULT_NAMESPACE, Plane, State

__all__ = [
    "DEFAULT_NAMESPACE",
    "GATEWAY_ACCOUNT",
    "KUBERNETES_VERSION",
    "RBAC_FILE",
    "Plane",
    "PlaneError",
    "State",
    "build_go_binary",
    "build_kubernetes",
    "gateway_identity",
    "write_kubeconfig",
]
