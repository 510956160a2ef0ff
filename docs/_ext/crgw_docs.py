"""Directives that take the documentation's facts from the repository, so
that the pages cannot drift from what the tests check.

``.. crgw-sample:: <registry>/<file>.json``
    One payload of the catalogue in ``tests/payloads``: the headers it is
    sent with (the folder's ``HEADERS.toml``), the body as sent, and what it
    decodes to and builds (its ``.toml`` entry, which the tests hold the
    decoders to).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "tests" / "payloads"
#: The event types the shipped ini builds (``[gateway] event_types``).
BUILT = {"image_push"}


def _load(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def _indent(text: str, by: str = "   ") -> list[str]:
    return [by + line if line.strip() else "" for line in text.splitlines()]


def _image(event: dict[str, Any]) -> str:
    name = "/".join(p for p in (event.get("host", ""), event.get("repository", "")) if p)
    if event.get("tag"):
        name += ":" + event["tag"]
    if event.get("digest"):
        name += "@" + event["digest"][:19]
    return name or "(none named)"


def _path(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def sample_lines(name: str, auth: list[str] | None = None) -> list[str]:
    """The reStructuredText for one catalogue payload, ``registry/file.json``.

    :param auth: header lines that carry the token, shown instead of the
        catalogue's own (which the tests send); for a registry that signs.
    """
    body_path = PAYLOADS / name
    expected = _load(body_path.with_suffix(".toml"))
    folder = name.split("/")[0]
    headers = _load(PAYLOADS / folder / "HEADERS.toml")[expected["headers"]]
    if auth:
        headers = {k: v for k, v in headers.items() if "{token}" not in v}
    in_header = bool(auth) or any("{token}" in value for value in headers.values())
    url = "/events/webhook/acme/app" + ("" if in_header else "?token=<token>")
    sent = [f"POST {url} HTTP/1.1"] + [
        f"{key}: {value.replace('{token}', '<token>')}" for key, value in headers.items()
    ]
    sent += auth or []
    text = body_path.read_text(encoding="utf-8")
    try:
        json.loads(text)
        language = "json"
    except ValueError:
        language = "none"
    lines = [
        f"Sent to the project ``acme/app`` with these headers (the set "
        f"``{expected['headers']}`` of ``tests/payloads/{folder}/HEADERS.toml``)::",
        "",
        *_indent("\n".join(sent)),
        "",
        f"and this body, ``tests/payloads/{name}``, as the registry sent it:",
        "",
        f".. code-block:: {language}",
        "",
        *_indent(text.rstrip("\n")),
        "",
    ]
    registry = expected["registry"]
    if "refused" in expected:
        lines += [f"The gateway refuses it (400): *{expected['refused']}*.", ""]
        return lines
    if "reply" in expected:
        lines += ["It is a handshake: the gateway answers it and makes no build.", ""]
        return lines
    events = expected.get("events", [])
    lines += [
        f"It decodes as ``{registry}`` into {len(events)} "
        f"event{'s' if len(events) != 1 else ''}; with the shipped "
        "``[gateway] event_types = image_push``, these make builds:",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - action (``e.type``)",
        "     - image",
        "     - build",
        "     - titles (``short_title``, ``long_title``)",
        "     - ``e.payload``",
    ]
    for event in events:
        payload = (
            f"``{_path(event['payload'])}`` of the body, alone"
            if "payload" in event
            else "the whole body"
        )
        lines += [
            f"   * - ``{event['action']}``",
            f"     - ``{_image(event)}``",
            f"     - {'yes' if event['action'] in BUILT else 'no'}",
            f"     - ``{event['short_title']}``; {event['long_title']}",
            f"     - {payload}",
        ]
    lines += [
        "",
        f"Each build's ``event_provider`` (``e.provider``) is ``{registry}``; "
        "``commit_ref`` (``e.revision.ref``) is the commit-ish of the URL, "
        "empty here; ``commit_id`` (``e.revision.commit``) is empty, or the "
        "image's revision label after a lookup (see :doc:`/lookups`).",
        "",
    ]
    return lines


class Sample(SphinxDirective):
    """``.. crgw-sample:: registry/file.json``: a payload and what it makes;
    the directive's content, if any, is the header lines that carry the
    token in place of the catalogue's."""

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        body_path = PAYLOADS / name
        if not body_path.is_file():
            raise self.error(f"no payload tests/payloads/{name}")
        folder = name.split("/")[0]
        for path in (body_path, body_path.with_suffix(".toml"), PAYLOADS / folder / "HEADERS.toml"):
            self.env.note_dependency(str(path))
        container = nodes.container(classes=["crgw-sample"])
        lines = StringList(sample_lines(name, list(self.content)), source=f"tests/payloads/{name}")
        self.state.nested_parse(lines, self.content_offset, container)
        return [container]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("crgw-sample", Sample)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
