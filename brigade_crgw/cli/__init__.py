"""``brigade-crgw``: the operator's command.

``brigade-crgw token add acme/app``, ``url``, ``check``, ``spool``, ``send``,
``filter``:
each verb is one module here with one :class:`~._verb.Verb` record, and
:data:`VERBS` is the table of them; adding a verb is a module and one line.
A verb's module imports what only its run needs (the Kubernetes client, the
spool) inside that run, so ``--help`` stays quick; no verb imports the
Twisted reactor.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import check, filter, send, spool, token, url
from ._verb import Failed, Verb

__all__ = ["VERBS", "Failed", "Verb", "main"]

#: Every verb, in the order ``--help`` lists them.
VERBS: tuple[Verb, ...] = (token.VERB, url.VERB, check.VERB, spool.VERB, send.VERB, filter.VERB)


def parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-command per verb."""
    top = argparse.ArgumentParser(
        prog="brigade-crgw",
        description="The operator's tools for brigade-crgw, the Brigade container "
        "registry gateway: project tokens, registry setup, checks, the spool, test pushes, "
        "filters.",
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.configure(verbs.add_parser(verb.name, help=verb.summary, description=verb.summary))
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit code: 0 when it did what was asked."""
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except Failed as e:
        print(f"brigade-crgw {args.verb}: {e}", file=sys.stderr)
        return e.code
    return code
