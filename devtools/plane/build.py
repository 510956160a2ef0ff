"""Go builds, cached per machine under ``${XDG_CACHE_HOME:-~/.cache}/brigade-crgw``.

Each build happens in a throwaway Go module that requires what it builds, so
the versions are exactly the ones named here; the result lands in
``<cache>/<directory>/bin/<name>`` and later calls return it without Go.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attr

from .errors import PlaneError, say

KUBERNETES_VERSION = "v1.34.4"
# Kubernetes 1.34 supports etcd 3.5 and newer; Debian bookworm ships 3.4.23,
# so etcd is built from the same Go module graph, at the version
# k8s.io/kubernetes itself requires.
ETCD_PACKAGE = "go.etcd.io/etcd/server/v3"
KUBE_APISERVER_PACKAGE = "k8s.io/kubernetes/cmd/kube-apiserver"


@attr.s(frozen=True, auto_attribs=True)
class GoBinary:
    """One main package to build, the file name it gets, and extra linker flags."""

    name: str
    package: str
    ldflags: str = ""


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/brigade-crgw``, read at each call."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "brigade-crgw"


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    say("$ " + " ".join(cmd))
    result = subprocess.run(cmd, cwd=cwd, env=env)
    if result.returncode != 0:
        raise PlaneError(f"{' '.join(cmd)} failed with exit code {result.returncode}")


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise PlaneError("the Go toolchain (`go`) is not on PATH; it builds the plane's binaries")
    return go


def _go_env() -> dict[str, str]:
    return dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")


def build_go_binaries(
    directory: str,
    requires: Sequence[str],
    binaries: Sequence[GoBinary],
    replaces: Sequence[str] = (),
) -> dict[str, Path]:
    """Build ``binaries`` into ``<cache>/<directory>/bin``, unless all are there.

    :param requires: ``path@version`` arguments to ``go get`` in the
        throwaway module, which fix the versions of everything built.
    :param replaces: ``old => new version`` replace directives for it.
    :return: each binary's path by name.
    """
    bin_dir = cache_root() / directory / "bin"
    wanted = {b.name: bin_dir / b.name for b in binaries}
    if all(p.exists() for p in wanted.values()):
        return wanted
    go, env = _go(), _go_env()
    bin_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(f"building {', '.join(wanted)} into {bin_dir} (first run only)")
    with tempfile.TemporaryDirectory(prefix="brigade-crgw-build-") as tmp:
        work = Path(tmp)
        gomod = "module brigade-crgw/build\n\ngo 1.24.0\n"
        if replaces:
            gomod += "\nreplace (\n" + "".join(f"\t{r}\n" for r in replaces) + ")\n"
        (work / "go.mod").write_text(gomod)
        for require in requires:
            _run([go, "get", require], work, env)
        for binary in binaries:
            ldflags = f"-s -w {binary.ldflags}".strip()
            output = str(wanted[binary.name]) + ".tmp"
            _run(
                [go, "build", "-trimpath", "-ldflags", ldflags, "-o", output, binary.package],
                work,
                env,
            )
    for path in wanted.values():
        Path(str(path) + ".tmp").rename(path)
    say(f"built in {time.monotonic() - started:.0f}s, cached in {bin_dir}")
    return wanted


def build_go_binary(
    module: str,
    version: str,
    package: str,
    name: str,
    ldflags: str = "",
    replaces: Sequence[str] = (),
) -> Path:
    """Build the main ``package`` of Go ``module`` at ``version``, unless cached.

    For example ``build_go_binary("helm.sh/helm/v3", "v3.19.0",
    "helm.sh/helm/v3/cmd/helm", "helm")`` gives ``<cache>/helm-v3.19.0/bin/helm``.
    """
    return build_go_binaries(
        f"{name}-{version}",
        [f"{module}@{version}"],
        [GoBinary(name, package, ldflags)],
        replaces,
    )[name]


def _staging_replaces() -> list[str]:
    """The ``k8s.io/*`` staging modules that k8s.io/kubernetes replaces locally.

    As a dependency, k8s.io/kubernetes's own ``./staging`` replaces do not
    apply, so each staging module is pinned to its published ``v0.x.y``.
    """
    with tempfile.TemporaryDirectory(prefix="brigade-crgw-build-") as tmp:
        out = subprocess.run(
            [_go(), "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
            cwd=tmp,
            env=_go_env(),
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


def kubernetes_binaries() -> dict[str, Path]:
    """Where kube-apiserver and etcd are cached (whether or not they are built)."""
    bin_dir = cache_root() / f"kubernetes-{KUBERNETES_VERSION}" / "bin"
    return {name: bin_dir / name for name in ("kube-apiserver", "etcd")}


NODE_BINARIES = ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager")


def _version_flags() -> str:
    """The linker flags that stamp a Kubernetes binary with its release version."""
    return " ".join(
        f"-X k8s.io/component-base/version.{k}={v}"
        for k, v in {
            "gitVersion": KUBERNETES_VERSION,
            "gitMajor": "1",
            "gitMinor": KUBERNETES_VERSION.split(".")[1],
        }.items()
    )


def build_node() -> dict[str, Path]:
    """Build the node's binaries (:data:`NODE_BINARIES`) from the same module
    graph as kube-apiserver, unless cached; their paths by name."""
    directory = f"kubernetes-{KUBERNETES_VERSION}"
    wanted = {name: cache_root() / directory / "bin" / name for name in NODE_BINARIES}
    if all(p.exists() for p in wanted.values()):
        return wanted
    say("the node's binaries are built once, in a few minutes")
    return build_go_binaries(
        directory,
        [f"{KUBE_APISERVER_PACKAGE}@{KUBERNETES_VERSION}"],
        [
            GoBinary(name, f"k8s.io/kubernetes/cmd/{name}", _version_flags())
            for name in NODE_BINARIES
        ],
        _staging_replaces(),
    )


def build_kubernetes() -> dict[str, Path]:
    """Build kube-apiserver and etcd with this machine's Go, unless cached.

    Both come from one module graph: etcd at the version k8s.io/kubernetes
    requires, kube-apiserver stamped with its release version.
    """
    wanted = kubernetes_binaries()
    if all(p.exists() for p in wanted.values()):
        return wanted
    say(f"kube-apiserver {KUBERNETES_VERSION} and etcd are built once, in several minutes")
    version_flags = _version_flags()
    return build_go_binaries(
        f"kubernetes-{KUBERNETES_VERSION}",
        [f"{KUBE_APISERVER_PACKAGE}@{KUBERNETES_VERSION}"],
        [
            GoBinary("kube-apiserver", KUBE_APISERVER_PACKAGE, version_flags),
            GoBinary("etcd", ETCD_PACKAGE),
        ],
        _staging_replaces(),
    )


def print_binary(name: str, find: Callable[[], Path]) -> int:
    """``python -m devtools.<name>``: print the path ``find`` gives (building
    the binary if it must), or the error; the exit code."""
    try:
        print(find())
    except PlaneError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
    return 0
