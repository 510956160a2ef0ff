"""What the test modules share: the payload catalogue, the headers each
registry sends, the webhook URL forms and the build listing.

Every payload ``tests/payloads/<registry>/<name>.json`` (sources in
SOURCES.md) has beside it ``<name>.toml``, written by hand from the payload:
the headers it is sent with (a set in the folder's ``HEADERS.toml``, itself
from ``HEADERS.md``) and what it decodes to. Top-level keys:

``headers``
    the header set it is sent with.
``registry``
    the registry the delivery is decoded as (every event's too).
``refused``
    instead of events: the reason of the PayloadError it is refused with.
``reply``
    a handshake's answer (Event Grid's validation), instead of events.
``[[events]]``
    each event in order: the :class:`ImageEvent` fields that are not empty
    (``timestamp`` a TOML date-time), ``payload`` the path of the event's
    own JSON in the body when it is not the whole body, and the build's
    ``short_title`` and ``long_title``.
"""

from __future__ import annotations

import json
import socket
import textwrap
import threading
import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attr
import pytest

from brigade_crgw.brigade import Project, build_id, build_secret, project_id
from brigade_crgw.events import ImageEvent
from devtools import ROOT
from devtools.gateway import Answer, Daemon
from devtools.outage import Proxy
from devtools.projects import TOKEN, fresh, project_secret
from devtools.waiting import until

from .memory import MemoryStore

if TYPE_CHECKING:
    from .conftest import Namespace

PAYLOADS = Path(__file__).resolve().parent / "payloads"

# The URLs a project's webhook answers at, and the commit-ish each names.
URL_FORMS = {
    "/events/dockerhub/acme/app/feature/x": "feature/x",
    "/events/dockerhub/acme/app": "",
    "/events/dockerhub/acme/app?commit=v2": "v2",
    f"/events/webhook/{project_id('acme/app')}": "",
    f"/events/webhook/{project_id('acme/app')}?commit=main": "main",
    "/events/webhook/acme/app": "",
    "/events/webhook/acme/app/abc123": "abc123",
    "/events/webhook/acme/app?commit=release/1.0": "release/1.0",
}

# The credential every test project accepts, as a header.
BEARER = {"Authorization": f"Bearer {TOKEN}"}

Path_ = tuple[str | int, ...]


def body(name: str) -> bytes:
    """A payload's bytes, by ``registry/file.json``."""
    return (PAYLOADS / name).read_bytes()


@cache
def _header_sets(registry: str) -> dict[str, dict[str, str]]:
    with (PAYLOADS / registry / "HEADERS.toml").open("rb") as f:
        return tomllib.load(f)


def sent_headers(registry: str, header_set: str) -> dict[str, str]:
    """The headers a registry sends, from its ``HEADERS.toml``, with the
    project's token where the registry carries it."""
    return {
        name: value.replace("{token}", TOKEN)
        for name, value in _header_sets(registry)[header_set].items()
    }


def at_path(doc: Any, path: Path_) -> Any:
    """The value at ``path`` (keys and indexes) in a parsed document."""
    for step in path:
        doc = doc[step]
    return doc


def edit(raw: bytes, path: Path_, change: Any) -> bytes:
    """A JSON body with the field at ``path`` set to ``change`` (to
    ``change(old)`` when callable; removed when ``None``)."""
    doc = json.loads(raw)
    parent = at_path(doc, path[:-1])
    if change is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = change(parent[path[-1]]) if callable(change) else change
    return json.dumps(doc).encode()


@attr.s(frozen=True, auto_attribs=True)
class Payload:
    """One real payload and what it must decode to.

    :param name: ``registry/file.json``.
    :param expected: its ``.toml`` file, parsed.
    """

    name: str
    expected: dict[str, Any] = attr.ib(repr=False)

    @property
    def folder(self) -> str:
        """The registry whose folder holds it."""
        return self.name.split("/")[0]

    @property
    def body(self) -> bytes:
        return body(self.name)

    @property
    def headers(self) -> dict[str, str]:
        """The headers it is sent with."""
        return sent_headers(self.folder, self.expected["headers"])

    @property
    def registry(self) -> str:
        """The registry it is decoded as."""
        return str(self.expected["registry"])

    def events(self) -> tuple[ImageEvent, ...]:
        """The events it must decode to, payloads included."""
        return tuple(self._event(fields) for fields in self.expected.get("events", ()))

    def titles(self) -> list[tuple[str, str]]:
        """Each event's build titles, ``(short_title, long_title)``."""
        return [(e["short_title"], e["long_title"]) for e in self.expected.get("events", ())]

    def actions(self) -> list[str]:
        """Each event's action, in order."""
        return [e["action"] for e in self.expected.get("events", ())]

    def _event(self, fields: dict[str, Any]) -> ImageEvent:
        fields = dict(fields)
        del fields["short_title"], fields["long_title"]
        fields.setdefault("repository", "")
        path = fields.pop("payload", None)
        payload = self.body if path is None else compact(at_path(json.loads(self.body), path))
        return ImageEvent(registry=self.registry, payload=payload, **fields)


def compact(value: object) -> bytes:
    """A JSON value as the decoders carry one event of several."""
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def payload(name: str) -> Payload:
    """One payload of the catalogue, by ``registry/file.json``."""
    with (PAYLOADS / name).with_suffix(".toml").open("rb") as f:
        return Payload(name, tomllib.load(f))


def catalogue() -> list[Payload]:
    """Every payload, by name."""
    return [payload(str(p.relative_to(PAYLOADS))) for p in sorted(PAYLOADS.glob("*/*.json"))]


def builds(namespace: Namespace) -> dict[str, dict[str, Any]]:
    """Every build Secret in the namespace, as the admin sees it."""
    core, api = namespace.plane.core, namespace.plane.api
    secrets = core.list_namespaced_secret(namespace.name, label_selector="component=build")
    return {s.metadata.name: api.sanitize_for_serialization(s) for s in secrets.items}


def acme_store(down: bool = False) -> MemoryStore:
    """A memory store holding the project acme/app (the builds of
    :func:`build_for_tag` are its builds)."""
    store = MemoryStore(down=down)
    store.put(project_secret("acme/app"))
    return store


def build_for_tag(tag: str) -> dict[str, Any]:
    """A real build Secret for a push of acme/app:<tag>, the same every time
    (the event has a delivery identity)."""
    project = acme_project()
    event = push_event(tag=tag, delivery_id=f"push-{tag}", payload=b"{}")
    return build_secret(project, event, build_id(project, event))


# The Docker Hub push most tests send.
DOCKERHUB = body("dockerhub/push-docs.json")


def docs_block(page: str, kind: str, name: str) -> str:
    """The literal block that follows ``.. <kind>: <name>`` in the docs page
    ``docs/<page>.rst`` (``helm-test``, ``systemd-test``), dedented."""
    text = (ROOT / "docs" / f"{page}.rst").read_text()
    marker = text.index(f"\n.. {kind}: {name}\n")
    start = text.index("::\n\n", marker) + 4
    lines = []
    for line in text[start:].splitlines():
        if line and not line.startswith(" "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


def read_all(s: socket.socket) -> bytes:
    """Everything the peer sends until it closes, resets or times out."""
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def acme_project(**data: str) -> Project:
    """The project acme/app as read from its Secret, ``data`` over the defaults."""
    project = Project.from_secret(project_id("acme/app"), project_secret("acme/app", **data))
    assert project is not None
    return project


def push_event(**fields: object) -> ImageEvent:
    """A tag push of acme/app from Docker Hub, ``fields`` over the defaults."""
    values: dict[str, object] = {
        "registry": "dockerhub",
        "action": "image_push",
        "repository": "acme/app",
        "tag": "v1",
        "payload": b'{"x": 1}',
    }
    values.update(fields)
    return ImageEvent(**values)  # type: ignore[arg-type]


def held_webhook(gateway: Daemon, proxy: Proxy, n: int) -> Callable[[float], Answer]:
    """Send a fresh Docker Hub push (the ``n``-th) from another thread and
    wait until the gateway handles it and a call to Kubernetes is held by
    ``proxy`` (set to hang); a function that waits up to its timeout for the
    answer."""
    result: list[Answer] = []
    sender = threading.Thread(
        target=lambda: result.append(
            gateway.post("/events/webhook/acme/app", fresh(DOCKERHUB, n), BEARER)
        )
    )
    sender.start()
    gateway.wait_in_flight(1)
    proxy.wait_held(1)

    def answer(timeout: float) -> Answer:
        sender.join(timeout)
        assert result, "the webhook got no answer"
        return result[0]

    return answer


# The kernel's view of loopback TCP connections (/proc/net/tcp): what a test
# waits on when the gateway gives no sign of its own.
_ESTABLISHED, _CLOSE_WAIT = 0x01, 0x08


def _tcp(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """The state and receive queue of the IPv4 socket from ``local_port`` to
    ``remote_port``, or None when there is none."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        if (local, remote) == (local_port, remote_port):
            return int(fields[3], 16), int(fields[4].split(":")[1], 16)
    return None


def established(port: int) -> int:
    """How many connections the gateway listening on ``port`` has open now."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and int(fields[3], 16) == _ESTABLISHED:
            count += 1
    return count


def wait_read(sender: socket.socket, timeout: float = 30.0) -> None:
    """Until the gateway has read everything ``sender`` sent it (its socket's
    receive queue is empty): the gateway's reactor has taken those bytes in."""
    here, there = sender.getsockname()[1], sender.getpeername()[1]

    def read() -> bool:
        found = _tcp(there, here)
        return found is not None and found[1] == 0

    until(read, "the gateway to read what was sent", timeout)


def wait_hung_up(ports: list[tuple[int, int]], timeout: float = 30.0) -> None:
    """Until the gateway has closed its side of each connection the test
    hung up, given as (the test's port, the gateway's port): it noticed."""

    def noticed() -> bool:
        return all(
            (found := _tcp(there, here)) is None or found[0] not in (_ESTABLISHED, _CLOSE_WAIT)
            for here, there in ports
        )

    until(noticed, "the gateway to notice the connections closed", timeout)


def ends(sender: socket.socket) -> tuple[int, int]:
    """The ports of a connection: the test's, the gateway's."""
    return sender.getsockname()[1], sender.getpeername()[1]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The ``brigade-crgw`` command run in this process: its exit code,
    stdout and stderr."""
    from brigade_crgw.cli import main

    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
