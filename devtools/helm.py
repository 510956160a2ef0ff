"""Helm, built from its Go module at a pinned version and cached per machine.

The chart tests run the real ``helm``; like kube-apiserver it is built once
with this machine's Go (``helm.sh/helm/v3/cmd/helm``, through
:func:`devtools.plane.build_go_binary`) and kept under
``~/.cache/brigade-crgw/helm-<version>/bin``.  ``python -m devtools.helm``
builds it (if needed) and prints its path.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .plane import build_go_binary
from .plane.build import print_binary

HELM_VERSION = "v3.22.0"
MODULE = "helm.sh/helm/v3"
# The Kubernetes version helm assumes without a cluster (`helm template`,
# `helm lint`): helm's Makefile derives it from its k8s.io/client-go (v0.37
# for v3.22.0, so 1.37); without it helm would assume 1.20.
DEFAULT_KUBERNETES = ("1", "37")


def build() -> Path:
    """Build helm with this machine's Go, unless it is cached; its path."""
    # What helm's own Makefile stamps in, so `helm version` tells the truth.
    major, minor = DEFAULT_KUBERNETES
    ldflags = [f"-X {MODULE}/internal/version.version={HELM_VERSION}"]
    for package in ("pkg/lint/rules", "pkg/chartutil"):
        ldflags += [
            f"-X {MODULE}/{package}.k8sVersionMajor={major}",
            f"-X {MODULE}/{package}.k8sVersionMinor={minor}",
        ]
    return build_go_binary(
        MODULE, HELM_VERSION, f"{MODULE}/cmd/helm", "helm", ldflags=" ".join(ldflags)
    )


def main() -> int:
    return print_binary("helm", build)


if __name__ == "__main__":
    sys.exit(main())
