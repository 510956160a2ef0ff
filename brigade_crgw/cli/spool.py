"""``brigade-crgw spool list|show BUILD|drop BUILD --config INI``: the builds
that wait in the spool while Kubernetes is away.

The spool is SQLite in write-ahead-log mode, so it is read and changed
safely beside a running gateway: each command is one short transaction.  A
build dropped while the drainer is creating it may still be made, once;
it is never tried again.
Run it as the gateway's user or as root: the ``-wal`` and ``-shm`` files
SQLite makes beside the spool when the gateway is not running are removed
when the command ends.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._verb import Failed, Verb, add_config_option, load_config

if TYPE_CHECKING:
    from ..delivery.spool import Listed, Spool

_PREFIX = "brigade-worker-"


def _configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="every build in the spool: name, project, age, last error",
        description="Every build in the spool, oldest first: its name, its project, how "
        "long it has waited, and the last error (why it was spooled, or why Kubernetes "
        "refused it for good).",
    )
    add_config_option(listing)
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(run=_list)
    show = actions.add_parser(
        "show",
        help="one spooled build: its fields and its payload",
        description="One spooled build: its state, its last error and its build Secret's "
        "fields, decoded (the project's script is left out; --json prints the Secret whole).",
    )
    add_config_option(show)
    show.add_argument("build", metavar="BUILD", help="its name (brigade-worker-…) or its ID")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(run=_show)
    drop = actions.add_parser(
        "drop",
        help="remove one build from the spool, never to be made",
        description="Remove one build from the spool: it will not be made.",
    )
    add_config_option(drop)
    drop.add_argument("build", metavar="BUILD", help="its name (brigade-worker-…) or its ID")
    drop.set_defaults(run=_drop)


@contextlib.contextmanager
def _opened(args: argparse.Namespace) -> Iterator[Spool]:
    from ..delivery.spool import Spool, SpoolError

    config = load_config(args)
    if not config.spool_path:
        raise Failed(f"{args.config} names no spool ([spool] path is empty)")
    path = config.spool_path
    try:
        with Spool.open_existing(path, config.spool_max_entries) as spool:
            yield spool
    except SpoolError as e:
        raise Failed(str(e)) from None


def _name(build: str) -> str:
    return build if build.startswith(_PREFIX) else _PREFIX + build


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _list(args: argparse.Namespace) -> int:
    now = time.time()
    with _opened(args) as spool:
        rows = spool.listing()
    if args.json:
        print(json.dumps({"path": spool.path, "builds": [_row(r, now) for r in rows]}))
        return 0
    if not rows:
        print(f"The spool {spool.path} is empty.")
        return 0
    print(f"{'BUILD':<41} {'PROJECT':<62} {'AGE':>5}  LAST ERROR")
    for r in rows:
        error = f"rejected: {r.rejected}" if r.rejected else r.error or "-"
        print(f"{r.name:<41} {r.project:<62} {_age(now - r.queued):>5}  {error}")
    waiting = sum(1 for r in rows if not r.rejected)
    print(f"{waiting} waiting, {len(rows) - waiting} rejected for good.")
    return 0


def _row(row: Listed, now: float) -> dict[str, Any]:
    return {
        "name": row.name,
        "project": row.project,
        "queued": row.queued,
        "age_seconds": round(now - row.queued, 3),
        "state": "rejected" if row.rejected else "waiting",
        "error": row.rejected or row.error,
    }


def _show(args: argparse.Namespace) -> int:
    now = time.time()
    with _opened(args) as spool:
        found = spool.find(_name(args.build))
    if found is None:
        raise Failed(f"no build {_name(args.build)} in the spool {spool.path}")
    row, secret = found
    if args.json:
        print(json.dumps({**_row(row, now), "secret": secret}))
        return 0
    data = secret.get("data") or {}
    fields = {key: str(value) for key, value in _row(row, now).items()}
    for key in sorted(data):
        if key != "script":  # the project's, not the build's; often long
            fields[key] = base64.b64decode(data[key]).decode("utf-8", "replace")
    width = max(map(len, fields)) + 2
    for key, value in fields.items():
        print(f"{key + ':':<{width}}{value}")
    return 0


def _drop(args: argparse.Namespace) -> int:
    with _opened(args) as spool:
        dropped = spool.drop(_name(args.build))
    if not dropped:
        raise Failed(f"no build {_name(args.build)} in the spool {spool.path}")
    print(f"Dropped {_name(args.build)} from the spool {spool.path}: it will not be made.")
    return 0


VERB = Verb("spool", "list, show or drop the builds waiting in the spool", _configure)
