"""The connection limit, and the open-files limit raised to hold it."""

from __future__ import annotations

import resource
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from ..answers import unavailable
from .requests import READ_SIZE, raw_answer

log = Logger()


class _Connection(ProtocolWrapper):
    def makeConnection(self, transport: Any) -> None:
        if hasattr(transport, "bufferSize"):
            transport.bufferSize = READ_SIZE
        super().makeConnection(transport)


class Overflow(Protocol):
    """A connection past ``max_connections``: told 503, then closed."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        raw_answer(self.transport, unavailable("too many connections; retry shortly"))


class ConnectionLimit(WrappingFactory):
    """A factory that keeps at most ``limit`` connections open: past it, a new
    connection is answered 503 (JSON, ``Retry-After``) and closed at once,
    so open connections, and what they hold, stay bounded.

    :param factory: the ``Site``.
    """

    protocol = _Connection

    def __init__(self, factory: Any, limit: int) -> None:
        super().__init__(factory)
        self.limit = limit
        self._refusing = False

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.protocols) >= self.limit:
            if not self._refusing:
                self._refusing = True
                log.warn(
                    "max_connections ({limit}) reached: new connections get 503",
                    limit=self.limit,
                )
            return Overflow()
        self._refusing = False
        return super().buildProtocol(addr)


def raise_open_files(needed: int) -> None:
    """Raise this process's soft limit on open files to ``needed`` (within
    the hard limit), so that max_connections, not the file limit, is what
    refuses connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warn(
            "open files are limited to {hard}: fewer than max_connections can be open",
            hard=hard,
        )
