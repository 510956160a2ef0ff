"""What every verb shares: its record, its failure, the ini."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

import attr

if TYPE_CHECKING:
    from ..config import Config


class Failed(Exception):
    """The verb could not do what was asked; str() is one line for the
    operator, naming the problem (and, where one is known, the fix).

    :param code: the exit code.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@attr.s(frozen=True, auto_attribs=True)
class Verb:
    """One verb of the command.

    :param name: what the operator types (``token``).
    :param summary: one line for ``--help``.
    :param configure: adds the verb's arguments to its parser, and sets
        ``run`` (``parser.set_defaults(run=...)``): a function of the parsed
        arguments that returns the exit code or raises :class:`Failed`.
    """

    name: str
    summary: str
    configure: Callable[[argparse.ArgumentParser], None]


def add_config_option(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--config INI``, the gateway's own ini, and ``--spool`` over its path."""
    parser.add_argument(
        "--config",
        "-c",
        required=required,
        metavar="INI",
        help="the gateway's ini file (as given to twistd brigade-crgw --config)",
    )
    parser.add_argument(
        "--spool", metavar="PATH", help="the spool file, over the ini's [spool] path"
    )


def load_config(args: argparse.Namespace, **overrides: str) -> Config:
    """The gateway's configuration as the daemon would read it: the ini, then
    $BRIGADE_NAMESPACE, then the command line's overrides.

    :raises Failed: naming the mistake.
    """
    from ..config import Config, ConfigError

    if getattr(args, "spool", None) is not None:
        overrides["spool"] = args.spool
    try:
        config = Config.from_ini(args.config) if args.config else Config.from_string("")
        # As twistd's options: an empty value leaves the ini's, except
        # --spool '' (no spool).
        given = {k: v for k, v in overrides.items() if v is not None and (v or k == "spool")}
        return config.replace(**given)
    except ConfigError as e:
        raise Failed(str(e)) from None
