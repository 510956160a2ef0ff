"""The blocking side of lookups: a pool thread asks, the reactor looks.
Nothing here knows Kubernetes or HTTP serving."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attr
from twisted.logger import Logger

from ..events import canonical_host
from .client import RegistryClient
from .credentials import Credential
from .outcomes import (
    CACHED,
    FAILED,
    FOUND,
    TIMEOUT,
    UNLISTED,
    LookupFailed,
    LookupResult,
    first_line,
)
from .references import Reference

log = Logger()


@attr.s(auto_attribs=True)
class LookupBridge:
    """The blocking side: looks images up from a pool thread, through the reactor.

    :param client: the registry client (reactor side).
    :param call: runs a Deferred-returning function on the reactor and
        waits (``partial(blockingCallFromThread, reactor)``).
    :param record: counts an outcome (the metrics).
    :param clock: monotonic seconds, for the budget of one webhook.
    """

    client: RegistryClient
    call: Callable[..., Any]
    record: Callable[[str], None] = lambda outcome: None
    clock: Callable[[], float] = time.monotonic

    def allowed(self, host: str) -> bool:
        """Whether ``host`` (as an event names it) may be looked up."""
        return canonical_host(host) in self.client.endpoints

    def inspect(
        self, reference: Reference | None, credential: Credential | None, deadline: float
    ) -> LookupResult:
        """Look one image up, by ``deadline`` (on :attr:`clock`).  Never raises."""
        result = self._inspect(reference, credential, deadline)
        self.record(result.outcome)
        return result

    def _inspect(
        self, reference: Reference | None, credential: Credential | None, deadline: float
    ) -> LookupResult:
        if reference is None:
            return LookupResult(FAILED, reason="the event names no image that can be looked up")
        if reference.host not in self.client.endpoints:
            return LookupResult(UNLISTED, reason=f"{reference.host} is not in [registry] hosts")
        budget = deadline - self.clock()
        if budget <= 0:
            return LookupResult(TIMEOUT, reason="no time left for this webhook's lookups")
        try:
            facts, cached = self.call(self.client.inspect, reference, credential, budget)
        except LookupFailed as e:
            return LookupResult(e.outcome, reason=e.reason)
        except Exception as e:  # never at the cost of the build
            log.failure("registry lookup failed unexpectedly")
            return LookupResult(FAILED, reason=f"{type(e).__name__}: {first_line(e)}")
        return LookupResult(CACHED if cached else FOUND, facts)
