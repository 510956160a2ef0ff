"""A real CNCF Distribution registry for the tests, and images to put in it.

:func:`start_registry` runs Debian's ``docker-registry`` on a free loopback
port with its own config file: htpasswd Basic auth, or token auth trusting a
:class:`TokenServer` that signs JWTs with a key made for the run (the
registry verifies every token).  :func:`write_layout` writes an OCI image
layout with tiny generated layers, and :func:`push` copies it into the
registry with ``skopeo``.  A registry or tool that cannot start fails the
test; nothing is skipped.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attr
import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from devtools.gateway import free_port

USER = "pusher"
PASSWORD = "correct-horse-battery"
SERVICE = "crgw-test-registry"
ISSUER = "crgw-test-token-issuer"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: Any) -> str:
    """The key ID Distribution gives a trusted key: the SHA-256 of its DER
    SubjectPublicKeyInfo, 240 bits in base32, in groups of four."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


class TokenServer:
    """A Docker token service on loopback: Basic credentials in, a signed
    JWT out, granting the asked actions to the right user and none to anyone
    else."""

    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crgw test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "token-signer.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.kid = libtrust_key_id(self.key.public_key())
        # Each request: whether it carried valid credentials, and its scope.
        self.requests: list[tuple[bool, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        header = handler.headers.get("Authorization", "")
        authenticated = False
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if (user, password) != (USER, PASSWORD):
                handler.send_response(401)
                handler.end_headers()
                return
            authenticated = True
        scopes = query.get("scope", [])
        self.requests.append((authenticated, " ".join(scopes)))
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and authenticated:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        body = json.dumps({"token": self.token(access), "expires_in": 300}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def token(self, access: list[dict[str, Any]], issuer: str = ISSUER) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {
            "iss": issuer,
            "sub": USER,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@attr.s(auto_attribs=True)
class Registry:
    """A running ``docker-registry``."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    auth: str
    tokens: TokenServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log(self) -> str:
        return (self.directory / "registry.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.tokens is not None:
            self.tokens.stop()


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (.ci/run installs it)", pytrace=False)
    return path


def start_registry(
    directory: Path,
    auth: str = "htpasswd",
    redirect_to: str = "",
    timeout: float = 20.0,
    notifications: Mapping[str, Any] | None = None,
) -> Registry:
    """Start ``docker-registry`` on 127.0.0.1 with ``auth`` ``htpasswd``,
    ``token`` or ``none``; ``redirect_to`` sends blob downloads there (the
    storage ``redirect`` middleware, as a CDN in front of a registry);
    ``notifications`` is its config's ``notifications`` section (webhooks)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "storage")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex},
    }
    tokens = None
    if auth == "htpasswd":
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
        (directory / "htpasswd").write_text(f"{USER}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "crgw-test", "path": str(directory / "htpasswd")}}
    elif auth == "token":
        tokens = TokenServer(directory)
        config["auth"] = {
            "token": {
                "realm": tokens.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(tokens.bundle),
            }
        }
    if notifications is not None:
        config["notifications"] = notifications
    if redirect_to:
        config["middleware"] = {
            "storage": [{"name": "redirect", "options": {"baseurl": redirect_to}}]
        }
    # YAML is a superset of JSON: the registry reads this as its config.
    path = directory / "config.yml"
    path.write_text(json.dumps(config, indent=2))
    log = open(directory / "registry.log", "wb")
    process = subprocess.Popen(
        [_binary("docker-registry"), "serve", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    registry = Registry(process, port, directory, auth, tokens)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            registry.stop()
            pytest.fail(f"docker-registry exited with {process.returncode}:\n{registry.log()}")
        try:
            with urllib.request.urlopen(f"{registry.url}/v2/", timeout=1):  # noqa: S310
                return registry
        except urllib.error.HTTPError as e:
            if e.code == 401:
                return registry
        except OSError:
            pass
        time.sleep(0.1)
    registry.stop()
    pytest.fail(f"docker-registry did not answer within {timeout}s:\n{registry.log()}")


@attr.s(frozen=True, auto_attribs=True)
class Image:
    """One image written to a layout: its manifest digest and config."""

    digest: str
    platform: str
    config_digest: str


@attr.s(frozen=True, auto_attribs=True)
class Layout:
    """An OCI layout holding one tagged image or index."""

    path: Path
    tag: str
    digest: str
    media_type: str
    images: tuple[Image, ...]


class _Blobs:
    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def put(self, raw: bytes, media_type: str) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(raw)
        return {"mediaType": media_type, "digest": digest, "size": len(raw)}


def _layer(seed: str) -> tuple[bytes, str]:
    """A gzipped tar with one small file; its bytes and its diff ID."""
    content = f"brigade-crgw test layer {seed}\n".encode()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(content), 0, 0o644
        tar.addfile(info, io.BytesIO(content))
    raw = tar_bytes.getvalue()
    return gzip.compress(raw, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def write_layout(
    path: Path,
    tag: str,
    labels: Mapping[str, str],
    platforms: Sequence[str] = ("linux/amd64",),
    index: bool | None = None,
    pad_config: int = 0,
) -> Layout:
    """Write an OCI layout at ``path``: one image per platform, each with a
    tiny layer of its own and ``labels`` in its config; an index above them
    when there are several (or ``index`` says so).

    :param pad_config: bytes of padding in each config (a label), to make it large.
    """
    blobs = _Blobs(path)
    seed = uuid.uuid4().hex
    images = []
    descriptors = []
    for platform in platforms:
        os_, arch, *variant = platform.split("/")
        layer, diff_id = _layer(f"{seed} {platform}")
        layer_desc = blobs.put(layer, OCI_LAYER)
        config_labels = dict(labels)
        if pad_config:
            config_labels["padding"] = "x" * pad_config
        config = {
            "created": "2026-01-01T00:00:00Z",
            "architecture": arch,
            "os": os_,
            **({"variant": variant[0]} if variant else {}),
            "config": {"Labels": config_labels},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        config_desc = blobs.put(json.dumps(config).encode(), OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = blobs.put(json.dumps(manifest).encode(), OCI_MANIFEST)
        platform_field = {"os": os_, "architecture": arch}
        if variant:
            platform_field["variant"] = variant[0]
        descriptors.append({**manifest_desc, "platform": platform_field})
        images.append(Image(manifest_desc["digest"], platform, config_desc["digest"]))
    if index is None:
        index = len(platforms) > 1
    if index:
        top_doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
        top = blobs.put(json.dumps(top_doc).encode(), OCI_INDEX)
    else:
        top = {k: v for k, v in descriptors[0].items() if k != "platform"}
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    entry = {**top, "annotations": {"org.opencontainers.image.ref.name": tag}}
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return Layout(path, tag, top["digest"], top["mediaType"], tuple(images))


def push(layout: Layout, registry: Registry, repository: str, tag: str | None = None) -> None:
    """Copy ``layout`` into ``registry`` as ``repository:tag`` with skopeo."""
    command = [
        _binary("skopeo"),
        "--insecure-policy",
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        *(["--dest-creds", f"{USER}:{PASSWORD}"] if registry.auth != "none" else []),
        f"oci:{layout.path}:{layout.tag}",
        f"docker://{registry.address}/{repository}:{tag or layout.tag}",
    ]
    env = dict(os.environ, HOME=str(registry.directory))
    done = subprocess.run(command, capture_output=True, env=env, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"skopeo copy failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
            f"\n{registry.log()[-3000:]}"
        )


def hanging_server() -> tuple[socket.socket, int]:
    """A loopback socket that takes connections and never answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, listener.getsockname()[1]


class OversizedRegistry:
    """A loopback server that answers like a registry but serves a manifest
    larger than ``size`` for every tag (docker-registry itself refuses to
    store or serve one over 4 MiB, so a hostile or broken registry is played
    by this)."""

    def __init__(self, size: int) -> None:
        body = json.dumps({"schemaVersion": 2, "pad": "x" * size}).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Type", OCI_MANIFEST)
                self.send_header("Docker-Content-Digest", digest)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    try:
                        self.wfile.write(body)
                    except OSError:
                        pass  # the client hung up, as it should

            def do_HEAD(self) -> None:
                self._answer(False)

            def do_GET(self) -> None:
                self._answer(True)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def dockerconfigjson(
    name: str, hosts: str | Sequence[str], username: str, password: str
) -> dict[str, Any]:
    """A kubernetes.io/dockerconfigjson Secret, as ``kubectl create secret
    docker-registry`` writes it, with one credential for ``hosts``."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    entry = {"username": username, "password": password, "auth": auth}
    names = [hosts] if isinstance(hosts, str) else list(hosts)
    config = {"auths": {host: entry for host in names}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }
