"""Waiting for something to happen, with a deadline: never a fixed sleep.

A test or tool that needs a state (a held connection, a log line, a
Secret, a unit's state) polls for it: quick when the machine is quiet, and
patient, up to the deadline, when it is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.05) -> T:
    """Call ``check`` until it returns something true, and return that.

    :param what: what is awaited, for the error.
    :raises AssertionError: when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(interval)
