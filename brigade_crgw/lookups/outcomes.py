"""How a lookup ended: a bounded set of outcomes, counted in the metrics."""

from __future__ import annotations

from typing import Any

import attr
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..events import ImageFacts

log = Logger()

# Outcomes, as counted in the metrics (a bounded set).
FOUND = "found"
CACHED = "cached"
UNLISTED = "unlisted"
NOT_FOUND = "not_found"
UNAUTHORIZED = "unauthorized"
REFUSED = "refused"
TOO_LARGE = "too_large"
TIMEOUT = "timeout"
FAILED = "failed"
OUTCOMES = (FOUND, CACHED, UNLISTED, NOT_FOUND, UNAUTHORIZED, REFUSED, TOO_LARGE, TIMEOUT, FAILED)


class LookupFailed(Exception):
    """A lookup gave nothing.

    :param outcome: one of :data:`OUTCOMES` (not ``found`` or ``cached``).
    :param reason: one line for the log, never holding a credential.
    """

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


@attr.s(frozen=True, auto_attribs=True)
class LookupResult:
    """What one lookup gave: facts, or why there are none.

    :param outcome: one of :data:`OUTCOMES`.
    :param reason: empty when facts were found.
    """

    outcome: str
    facts: ImageFacts | None = None
    reason: str = ""


def failed(outcome: str, reason: str) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(LookupFailed(outcome, reason))
    return d


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""
