"""``brigade-crgw url PROJECT --registry NAME --base URL``: what to enter in
a registry so that its pushes reach a project.

The text is each registry's :class:`~brigade_crgw.registries._setup.Setup`,
the same that the documentation's registry pages show.
"""

from __future__ import annotations

import argparse
import json
import textwrap

import attr

from ._verb import Verb
from .token import webhook_url


def _configure(parser: argparse.ArgumentParser) -> None:
    from ..registries import NAMES

    parser.add_argument("project", metavar="PROJECT", help="its name (acme/app) or its ID")
    parser.add_argument(
        "--registry", required=True, choices=NAMES, metavar="NAME", help=", ".join(NAMES)
    )
    parser.add_argument(
        "--base",
        required=True,
        metavar="URL",
        help="the gateway's URL as the registry reaches it (https://gateway.example.com)",
    )
    parser.add_argument(
        "--token", metavar="T", help="the project's token, written in; default: <token>"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from ..registries import REGISTRIES

    registry = next(r for r in REGISTRIES if r.name == args.registry)
    setup = registry.setup.render(webhook_url(args.base, args.project), args.token or "")
    if args.json:
        fields = attr.asdict(setup, filter=lambda a, v: a.name not in ("sample", "headers"))
        print(json.dumps({"registry": registry.name, **fields}))
        return 0
    print(render_text(registry.name, setup))
    return 0


def render_text(name: str, setup: object) -> str:
    """A setup as the terminal shows it."""
    from ..registries._setup import Setup

    assert isinstance(setup, Setup)
    rows = [
        ("Where", setup.where),
        ("URL", setup.url),
        ("Token", setup.placement),
        ("Events", setup.events),
        ("Content type", setup.content_type),
    ]
    lines = [f"{setup.title} ({name})", ""]
    for label, value in rows:
        wrapped = textwrap.wrap(value, 62, break_long_words=False, break_on_hyphens=False)
        lines.append(f"  {label + ':':<14}{wrapped[0] if wrapped else ''}")
        lines.extend(f"  {'':<14}{more}" for more in wrapped[1:])
    if setup.command:
        lines += [
            "",
            f"  As a command ({setup.language}):"
            if setup.language == "shell"
            else f"  In its configuration ({setup.language}):",
            "",
        ]
        lines.extend(f"    {line}" for line in setup.command.splitlines())
    for note in setup.notes:
        lines.append("")
        lines.extend(f"  {line}" for line in textwrap.wrap(note, 76, break_long_words=False))
    return "\n".join(lines)


VERB = Verb("url", "what to enter in a registry so that its pushes reach a project", _configure)
