"""The plane's keys and certificates, made with ``openssl`` in its state directory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import PlaneError

DAYS = "3650"


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
    if result.returncode != 0:
        raise PlaneError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_certificates(directory: Path) -> None:
    """A private CA (``ca.*``), a serving certificate for loopback
    (``apiserver.*``), an admin client certificate (``admin.*``) and the key
    that signs ServiceAccount tokens (``sa.key``, ``sa.pub``)."""
    if shutil.which("openssl") is None:
        raise PlaneError("`openssl` is not on PATH; it makes the plane's certificates")
    _openssl(
        directory,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS),
        *("-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=brigade-crgw-dev-ca"),
    )
    for name, subject, usage in (
        (
            "apiserver",
            "/CN=kube-apiserver",
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost",
        ),
        ("admin", "/O=system:masters/CN=brigade-crgw-admin", "extendedKeyUsage=clientAuth"),
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
