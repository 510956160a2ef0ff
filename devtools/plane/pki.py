"""The plane's keys and certificates, made with ``openssl`` in its state directory."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .errors import PlaneError

DAYS = "3650"


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
    if result.returncode != 0:
        raise PlaneError(f"openssl {args[0]} failed: {result.stderr.strip()}")


# The names in-cluster clients use for the API server.
SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")  # fmt: skip
# Client certificates of a plane with a node: file name, subject.  The
# bootstrap RBAC of the API server binds each of these users; the
# controller-manager uses the admin's.
NODE_CLIENTS = (
    ("kubelet", "/O=system:nodes/CN=system:node:brigade-crgw-node"),
    ("kube-proxy", "/CN=system:kube-proxy"),
    ("kube-scheduler", "/CN=system:kube-scheduler"),
)


def make_certificates(
    directory: Path, addresses: Sequence[str] = (), clients: Sequence[tuple[str, str]] = ()
) -> None:
    """A private CA (``ca.*``), a serving certificate for loopback and
    ``addresses`` (``apiserver.*``), an admin client certificate
    (``admin.*``), one client certificate per ``(name, subject)`` of
    ``clients``, and the key that signs ServiceAccount tokens (``sa.key``,
    ``sa.pub``).  With ``addresses``, the serving certificate also names the
    ``kubernetes`` Service, as in-cluster clients call it."""
    if shutil.which("openssl") is None:
        raise PlaneError("`openssl` is not on PATH; it makes the plane's certificates")
    _openssl(
        directory,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS),
        *("-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=brigade-crgw-dev-ca"),
    )
    names = ["IP:127.0.0.1", "DNS:localhost", *(f"IP:{a}" for a in addresses)]
    if addresses:
        names += [f"DNS:{n}" for n in SERVICE_NAMES]
    for name, subject, usage in (
        (
            "apiserver",
            "/CN=kube-apiserver",
            f"extendedKeyUsage=serverAuth\nsubjectAltName={','.join(names)}",
        ),
        ("admin", "/O=system:masters/CN=brigade-crgw-admin", "extendedKeyUsage=clientAuth"),
        *((name, subject, "extendedKeyUsage=clientAuth") for name, subject in clients),
    ):
        (directory / f"{name}.ext").write_text(usage + "\n")
        _openssl(
            directory,
            *("req", "-newkey", "rsa:2048", "-nodes"),
            *("-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject),
        )
        _openssl(
            directory,
            *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
            *("-CAcreateserial", "-days", DAYS, "-out", f"{name}.crt", "-extfile", f"{name}.ext"),
        )
    _openssl(directory, "genrsa", "-out", "sa.key", "2048")
    _openssl(directory, "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
