"""Directives that take the registry pages' facts from the code, so that the
pages, ``brigade-crgw url`` and ``brigade-crgw send`` cannot disagree.

``.. crgw-setup:: NAME``
    What to enter in that registry: its ``SETUP`` record
    (``brigade_crgw/registries/<name>.py``), rendered for an example
    project, as ``brigade-crgw url`` prints it.
``.. crgw-registries::``
    The table of registries, each with its page and where its token goes.
``.. crgw-pushed:: NAME``
    Its sample push (the one ``brigade-crgw send`` posts), with the token
    where that registry puts it, and what the gateway's own decoder and
    build code make of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

#: The project URL every page's example names.
EXAMPLE_URL = "https://gateway.example.com/events/webhook/acme/app"
#: The event types the shipped ini builds (``[gateway] event_types``).
BUILT = {"image_push"}
#: What stands for the token in the examples.
PLACEHOLDER = "<token>"


def _indent(text: str, by: str = "   ") -> list[str]:
    return [by + line if line.strip() else "" for line in text.splitlines()]


def _plain(text: str) -> str:
    """Plain text, shown as it is inside a reStructuredText paragraph."""
    for char in "\\*`_|[":
        text = text.replace(char, "\\" + char)
    return text


def _registry(name: str) -> Any:
    from brigade_crgw.registries import REGISTRIES

    for registry in REGISTRIES:
        if registry.name == name:
            return registry
    raise KeyError(name)


def setup_lines(name: str) -> list[str]:
    """A registry's ``SETUP``, rendered for the example project."""
    setup = _registry(name).setup.render(EXAMPLE_URL)
    lines: list[str] = []
    for label, value in (
        ("Where", setup.where),
        ("URL", setup.url),
        ("Token", setup.placement),
        ("Events", setup.events),
        ("Content type", setup.content_type),
    ):
        lines += [f":{label}:", *_indent(_plain(value))]
    lines.append("")
    if setup.command:
        lines += [
            "As a command:" if setup.language == "shell" else "In its configuration:",
            "",
            f".. code-block:: {setup.language or 'none'}",
            "",
            *_indent(setup.command),
            "",
        ]
    for note in setup.notes:
        lines += [_plain(note), ""]
    lines += [
        "For a real project, with its URL and token written in: "
        f"``brigade-crgw url PROJECT --registry {name} --base URL --token T`` "
        "(:doc:`/cli`).",
        "",
    ]
    return lines


def _request(setup: Any, body: bytes) -> list[str]:
    """The request line and headers of the sample push, the token shown as
    ``<token>`` and a signature described rather than computed."""
    from brigade_crgw.delivery.auth import present

    extra, query = present(setup.auth, PLACEHOLDER, body)
    url = "/events/webhook/acme/app" + (f"?token={PLACEHOLDER}" if query is not None else "")
    lines = [f"POST {url} HTTP/1.1", *(f"{k}: {v}" for k, v in setup.headers.items())]
    for key, value in extra.items():
        if PLACEHOLDER not in value:
            algorithm = value.partition("=")[0] + "=" if "=" in value else ""
            value = f"{algorithm}<HMAC of the body, keyed with the token>"
        lines.append(f"{key}: {value}")
    return lines


def pushed_lines(name: str) -> list[str]:
    """A registry's sample push and the builds it makes."""
    from brigade_crgw.brigade import long_title, short_title
    from brigade_crgw.registries import decode

    setup = _registry(name).setup
    body = setup.sample_body()
    text = body.decode("utf-8")
    try:
        json.loads(text)
        language = "json"
    except ValueError:
        language = "none"
    delivery = decode(body, setup.headers)
    count = len(delivery.events)
    lines = [
        f"``brigade-crgw send {name} URL`` posts this sample, as the registry "
        "sends it, with the token where the registry puts it::",
        "",
        *_indent("\n".join(_request(setup, body))),
        "",
        f".. code-block:: {language}",
        "",
        *_indent(text.rstrip("\n")),
        "",
        f"The gateway reads it as ``{delivery.registry}``, into {count} "
        f"event{'' if count == 1 else 's'}; with the shipped ``[gateway] "
        "event_types = image_push``, these make builds:",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - action (``e.type``)",
        "     - build",
        "     - ``short_title``",
        "     - ``long_title``",
        "     - ``e.payload``",
    ]
    for event in delivery.events:
        lines += [
            f"   * - ``{event.action}``",
            f"     - {'yes' if event.action in BUILT else 'no'}",
            f"     - {_plain(short_title(event))}",
            f"     - {_plain(long_title(event))}",
            "     - " + ("the whole body" if event.payload == body else "this event's own JSON"),
        ]
    lines += [
        "",
        f"The build's ``event_provider`` (``e.provider``) is ``{delivery.registry}``; "
        "``commit_ref`` (``e.revision.ref``) is the URL's commit-ish, none here; "
        "``commit_id`` (``e.revision.commit``) is empty, or the image's revision "
        "label after a registry lookup (:doc:`/lookups`).  The build's other "
        "fields are in :ref:`the-build`.",
        "",
    ]
    return lines


def index_lines(names: list[str]) -> list[str]:
    """The registries' table: each one's page, name and token placement."""
    from brigade_crgw.registries import NAMES

    missing, unknown = set(NAMES) - set(names), set(names) - set(NAMES)
    if missing or unknown:
        raise ValueError(f"not listed: {sorted(missing)}; not in REGISTRIES: {sorted(unknown)}")
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - Registry",
        "     - ``?registry=``",
        "     - Where the token goes",
    ]
    for name in names:
        setup = _registry(name).setup
        lines += [
            f"   * - :doc:`{_plain(setup.title)} <{name}>`",
            f"     - ``{name}``",
            f"     - {_plain(setup.placement)}",
        ]
    return [*lines, ""]


class IndexDirective(SphinxDirective):
    """``.. crgw-registries::`` with one registry name a line: the table of
    registries, in that order; every name in ``REGISTRIES`` must be there."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        names = [line.strip() for line in self.content if line.strip()]
        try:
            lines = index_lines(names)
        except ValueError as e:
            raise self.error(str(e)) from None
        container = nodes.container()
        source = "brigade_crgw/registries/__init__.py"
        self.state.nested_parse(StringList(lines, source=source), self.content_offset, container)
        return [container]


class _Generated(SphinxDirective):
    """A registry's part of its page, generated from its ``REGISTRY``."""

    required_arguments = 1
    make: ClassVar[Any]

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        try:
            registry = _registry(name)
        except KeyError:
            raise self.error(f"no registry named {name!r} in REGISTRIES") from None
        # Rebuild the page when the registry's module or sample changes.
        folder = Path(sys.modules[type(registry.setup).__module__].__file__ or "").parent
        for path in (folder / f"{name}.py", folder / "samples" / registry.setup.sample):
            self.env.note_dependency(str(path))
        lines = StringList(type(self).make(name), source=f"brigade_crgw/registries/{name}.py")
        container = nodes.container()
        self.state.nested_parse(lines, self.content_offset, container)
        return [container]


class SetupDirective(_Generated):
    """``.. crgw-setup:: NAME``: what to enter in that registry."""

    make = staticmethod(setup_lines)


class PushedDirective(_Generated):
    """``.. crgw-registries::``
        The table of registries, each with its page and where its token goes.
    ``.. crgw-pushed:: NAME``: its sample push and what it makes."""

    make = staticmethod(pushed_lines)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("crgw-setup", SetupDirective)
    app.add_directive("crgw-pushed", PushedDirective)
    app.add_directive("crgw-registries", IndexDirective)
    return {"version": "2", "parallel_read_safe": True, "parallel_write_safe": True}
