"""kubectl, for the commands of docs/installation.rst that the systemd tests
run as written.

A build cached by an earlier run comes first, then a ``kubectl`` on PATH.
Without either it is built once with this machine's Go from
``k8s.io/kubernetes/cmd/kubectl`` at the plane's Kubernetes version
(Debian bookworm's ``kubernetes-client`` 1.20 predates ``kubectl create
token``) and cached under ``~/.cache/brigade-crgw/kubectl-<version>/bin``.
``python -m devtools.kubectl`` prints the path of the one the tests use.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .plane import KUBERNETES_VERSION
from .plane.build import (
    GoBinary,
    _staging_replaces,
    build_go_binaries,
    cache_root,
    print_binary,
)

PACKAGE = "k8s.io/kubernetes/cmd/kubectl"


def cached() -> Path:
    """Where the built kubectl lives (built or not)."""
    return cache_root() / f"kubectl-{KUBERNETES_VERSION}" / "bin" / "kubectl"


def kubectl() -> Path:
    """The cached build, else the kubectl on PATH, else a new build."""
    if cached().exists():
        return cached()
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    version = f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}"
    return build_go_binaries(
        f"kubectl-{KUBERNETES_VERSION}",
        [f"{PACKAGE}@{KUBERNETES_VERSION}"],
        [GoBinary("kubectl", PACKAGE, version)],
        _staging_replaces(),
    )["kubectl"]


def main() -> int:
    return print_binary("kubectl", kubectl)


if __name__ == "__main__":
    sys.exit(main())
