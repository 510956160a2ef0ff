"""A hostile container registry on loopback, for the hardening tests and
``bench/hostile.py``.

docker-registry cannot be made to misbehave, so this plays the registry a
gateway may meet in the worst case.  One server, several behaviours chosen
by the first path segment of the repository (``/v2/<mode>/<name>/...``), so
one gateway configuration (one listed host) reaches all of them:

``wide``
    every repository is a multi-platform image whose index lists
    :attr:`HostileRegistry.platforms` platforms (a different index, and so a
    different digest, for each repository name); its one real image, config
    and labels are served too, so a lookup finds it;
``slow``
    every request is held :attr:`HostileRegistry.delay` seconds before the
    answer (a registry that is slow, not down);
``folded``
    every request is answered 401 with a ``WWW-Authenticate: Bearer``
    challenge of :attr:`HostileRegistry.fold_lines` folded lines of
    :attr:`HostileRegistry.fold_bytes` bytes each;
``realm``
    every request without a bearer token is answered 401 naming a token
    realm on another port of the same host (:attr:`HostileRegistry.realm`),
    which records the ``Authorization`` it was sent and hands out a token
    that this registry then accepts.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from functools import cache, lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
TOKEN = "hostile-registry-token"  # noqa: S105 (a test value)


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Held requests must not keep the test's process from ending.
    block_on_close = False


class HostileRegistry:
    """The server; :attr:`url` is its endpoint, :meth:`stop` ends it.

    :param platforms: how many platforms a ``wide`` index lists.
    :param delay: how long a ``slow`` request is held.
    :param fold_lines: the folded lines of a ``folded`` challenge.
    :param fold_bytes: the bytes of each such line.
    """

    def __init__(
        self,
        platforms: int = 15_000,
        delay: float = 60.0,
        fold_lines: int = 30,
        fold_bytes: int = 16_000,
    ) -> None:
        self.platforms, self.delay = platforms, delay
        self.fold_lines, self.fold_bytes = fold_lines, fold_bytes
        #: The Authorization header each token request carried ("" for none).
        self.realm_saw: list[str] = []
        self.requests: list[str] = []
        self._stopping = threading.Event()
        self._blobs: dict[str, tuple[str, bytes]] = {}
        self._indexes: dict[str, str] = {}
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.tokens = _Server(("127.0.0.1", 0), self._token_handler())
        for server in (self.httpd, self.tokens):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as ``[registry] hosts`` lists it."""
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def realm(self) -> str:
        """The token realm ``realm`` repositories name: same host, another port."""
        return f"http://127.0.0.1:{self.tokens.server_address[1]}/token"

    def stop(self) -> None:
        self._stopping.set()
        for server in (self.httpd, self.tokens):
            server.shutdown()
            server.server_close()

    def _wide(self, repository: str) -> tuple[str, bytes]:
        """The ``wide`` index of ``repository``; its small blobs are
        remembered, and the index by its digest (it is made again when asked)."""
        config, manifest = _image(repository)
        self._remember(OCI_CONFIG, config)
        body = _wide_index(repository, self.platforms, self._remember(OCI_MANIFEST, manifest))
        with self._lock:
            self._indexes[_digest(body)] = repository
        return OCI_INDEX, body

    def _remember(self, media_type: str, body: bytes) -> str:
        digest = _digest(body)
        with self._lock:
            self._blobs[digest] = (media_type, body)
        return digest

    def _challenge(self) -> str:
        line = "a" * max(0, self.fold_bytes - 2)
        folded = "".join(f"\r\n {line}" for _ in range(self.fold_lines))
        return f'Bearer realm="{self.realm}",service="hostile{folded}'

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, code: int, media_type: str, body: bytes, head: bool) -> None:
                self.send_response(code)
                if media_type:
                    self.send_header("Content-Type", media_type)
                if code == 200 and media_type != OCI_CONFIG:
                    self.send_header("Docker-Content-Digest", _digest(body))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _answer(self, head: bool) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts == ["v2"] or len(parts) < 5 or parts[0] != "v2":
                    self._send(200 if parts == ["v2"] else 404, "application/json", b"{}", head)
                    return
                mode, repository = parts[1], "/".join(parts[1:-2])
                kind, reference = parts[-2], parts[-1]
                try:
                    if mode == "slow":
                        outer._stopping.wait(outer.delay)
                    elif mode == "folded":
                        self._folded()
                        return
                    elif mode == "realm" and self.headers.get("Authorization") != (
                        f"Bearer {TOKEN}"
                    ):
                        self.send_response(401)
                        self.send_header(
                            "WWW-Authenticate",
                            f'Bearer realm="{outer.realm}",service="hostile",'
                            f'scope="repository:{repository}:pull"',
                        )
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self._content(repository, kind, reference, head)
                except OSError:
                    pass  # the gateway hung up, as it may

            def _folded(self) -> None:
                challenge = outer._challenge().encode("latin-1")
                self.wfile.write(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                    b"WWW-Authenticate: " + challenge + b"\r\n\r\n"
                )

            def _content(self, repository: str, kind: str, reference: str, head: bool) -> None:
                if kind == "manifests" and not reference.startswith("sha256:"):
                    self._send(200, *outer._wide(repository), head)
                    return
                with outer._lock:
                    found = outer._blobs.get(reference)
                    named = outer._indexes.get(reference)
                if named is not None:
                    self._send(200, *outer._wide(named), head)
                elif found is None:
                    self._send(404, "application/json", b"{}", head)
                else:
                    self._send(200, found[0], found[1], head)

            def do_HEAD(self) -> None:
                self._answer(True)

            def do_GET(self) -> None:
                self._answer(False)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _token_handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.realm_saw.append(self.headers.get("Authorization") or "")
                body = json.dumps({"token": TOKEN}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@cache
def _image(repository: str) -> tuple[bytes, bytes]:
    """The one real image of a repository: its config and manifest."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.opencontainers.image.version": repository}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [],
        }
    ).encode()
    return config, manifest


@lru_cache(maxsize=8)
def _wide_index(repository: str, platforms: int, child: str) -> bytes:
    """An index of ``platforms`` entries, all standing for ``child`` (only
    the first, linux/amd64, is ever fetched)."""
    _, manifest = _image(repository)
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": child,
            "size": len(manifest),
            "platform": {"os": "linux", "architecture": f"arch{n}"}
            if n
            else {"os": "linux", "architecture": "amd64"},
        }
        for n in range(platforms)
    ]
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
            "annotations": {"org.opencontainers.image.source": f"https://example.com/{repository}"},
        },
        separators=(",", ":"),
    ).encode()


def push_event(host: str, repository: str, tag: str = "v1") -> bytes:
    """A Distribution push of ``host/repository:tag`` without a digest, as
    registry:2 would send it, so that the gateway asks the registry."""
    event = {
        "id": f"event-{uuid.uuid4().hex}",
        "timestamp": "2026-01-02T15:04:05Z",
        "action": "push",
        "target": {
            "mediaType": OCI_MANIFEST,
            "repository": repository,
            "url": f"https://{host}/v2/{repository}/manifests/{tag}",
            "tag": tag,
        },
        "request": {"id": "r1", "addr": "10.0.0.1", "host": host, "method": "PUT"},
    }
    return json.dumps({"events": [event]}).encode()


def main() -> None:
    """Serve until interrupted: ``python -m devtools.hostile_registry``."""
    registry = HostileRegistry()
    print(f"hostile registry at {registry.url}, token realm {registry.realm}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        registry.stop()


if __name__ == "__main__":
    main()
