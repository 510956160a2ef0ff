"""Readiness: whether the API server answered recently and the project
Secrets can be reached, for ``GET /readyz``.

A small Service asks the store every ``interval`` seconds (on the thread
pool) to get a Secret that need not exist: 404 or 200 means the API server
answered and the gateway's identity may read Secrets there; a 403, a
timeout or a refused connection means webhooks would fail now.  The answer
is remembered, so ``/readyz`` costs nothing and a probe storm cannot reach
the API server.  Liveness (``/healthz``) never depends on this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..kubernetes.store import StoreUnavailable

log = Logger()

# Seconds between two checks.
INTERVAL = 5.0


@attr.s(auto_attribs=True)
class Readiness(Service):
    """Checks the road to the project Secrets every ``interval`` seconds.

    :param check: blocking; returns when a Secret get was answered as
        allowed, raises :class:`StoreUnavailable` naming the failure.
    :param run: runs ``check`` off the reactor thread, returning a Deferred.
    :param clock: the reactor, for the schedule and the age of the last answer.
    :param timeout: the longest one check can take (the Kubernetes timeout).
    """

    check: Callable[[], None]
    run: Callable[..., Deferred[Any]]
    clock: IReactorTime
    timeout: float
    interval: float = INTERVAL
    last_ok: float | None = None
    failure: str = "not checked yet"
    _loop: LoopingCall | None = None

    @property
    def stale_after(self) -> float:
        """Past this many seconds without a good answer, not ready, even
        when no check has failed (the pool is too busy to run one)."""
        return 2 * self.interval + self.timeout

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._check)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _check(self) -> Deferred[None]:
        # The loop waits for this Deferred, so checks never overlap.
        return self.run(self.check).addCallbacks(self._answered, self._failed)

    def _answered(self, _: object) -> None:
        if self.failure:
            log.info("ready: Kubernetes answers and the project Secrets can be read")
        self.last_ok, self.failure = self.clock.seconds(), ""

    def _failed(self, failure: Failure) -> None:
        reason = (
            str(failure.value)
            if failure.check(StoreUnavailable)
            else f"the check failed unexpectedly: {failure.getErrorMessage()}"
        )
        if reason != self.failure:
            log.warn("not ready: {reason}", reason=reason)
        self.failure = reason

    def state(self) -> tuple[bool, str]:
        """Whether the gateway is ready, and if not, why."""
        if self.failure:
            return False, self.failure
        assert self.last_ok is not None
        age = self.clock.seconds() - self.last_ok
        if age > self.stale_after:
            return False, f"Kubernetes has not answered a check for {age:.0f}s"
        return True, ""
