"""The one error of the plane, and how it talks to the person at the terminal."""

from __future__ import annotations

import sys


class PlaneError(Exception):
    """Something the plane needs is missing or did not start; the message says what."""


def say(message: str) -> None:
    """A progress line on stderr, prefixed like every line of the command."""
    print(f"control-plane: {message}", file=sys.stderr, flush=True)
