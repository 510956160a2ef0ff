"""The count of webhooks in flight: past ``max_in_flight`` a webhook is
refused before any work starts, and shutdown waits for the count to reach 0."""

from __future__ import annotations

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..answers import unavailable

log = Logger()

# How long a finished answer is given to leave its socket buffer before
# shutdown closes the connections.
FLUSH_SECONDS = 0.2


@attr.s(auto_attribs=True)
class InFlight:
    """Counts webhooks being handled: bounds them, and lets shutdown wait.

    A webhook counts from the moment it is taken until its work is over and
    its answer was handed to the connection, whichever is later: a sender
    that hangs up does not free a slot while its builds are still being made.
    Requests still arriving (their first line read, not yet their whole
    body) are not bounded here, but shutdown waits for them too, so that a
    body half received at SIGTERM is still read and answered.
    """

    limit: int
    clock: IReactorTime
    count: int = 0
    arriving: int = 0
    _waiting: list[Deferred[None]] = attr.ib(factory=list)

    def enter(self) -> None:
        """Take a slot.

        :raises Refusal: 503 when every slot is taken.
        """
        if self.count >= self.limit:
            raise unavailable("too many webhooks in flight; retry shortly")
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.idle and self._waiting:
            self._release_soon()

    def arrive(self) -> None:
        """A request began to arrive."""
        self.arriving += 1

    def arrived(self) -> None:
        """That request is complete (and handed on), refused or gone."""
        self.arriving -= 1
        if self.idle and self._waiting:
            self._release_soon()

    @property
    def idle(self) -> bool:
        return self.count == 0 and self.arriving == 0

    def _release_soon(self) -> None:
        # A finished answer may still sit in its connection's buffer, and
        # shutdown closes connections without flushing them: give the
        # reactor a few turns to write it first.
        self.clock.callLater(FLUSH_SECONDS, self._release)

    def _release(self) -> None:
        if self.idle:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def drained(self) -> Deferred[None]:
        """Fires once no webhook is being handled or arriving and the last
        answers had time to leave."""
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        if self.idle:
            self._release_soon()
        return d
