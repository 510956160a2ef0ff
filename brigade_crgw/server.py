"""The HTTP server around the app: bounded requests, the count of webhooks
in flight, and the access log.

These limits act before a request reaches a route: a body too large or too
slow is refused while it arrives, and a webhook past ``max_in_flight`` is
refused before any work starts.
"""

from __future__ import annotations

import json
import re
import resource
from collections.abc import Callable
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.http import RESPONSES, combinedLogFormatter
from twisted.web.http import Request as HTTPRequest
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from .deliver import Refusal, unavailable

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


# Twisted splits a query on both separators, and decodes '+' and
# percent-escapes in each name (twisted.web.http.parse_qs).
_QUERY_SEPARATORS = re.compile(rb"([&;])")


def redact_query(uri: bytes) -> bytes:
    """``uri`` with the value of every query parameter that Twisted would read
    as ``token`` replaced by ``REDACTED``.

    The query is split and each name decoded exactly as Twisted's own parser
    does, so ``?x=1;token=…``, ``?%74oken=…`` and ``?to%6Ben=…`` are all
    caught; a name that differs from ``token`` only in case is redacted too.
    The rest of the URI is kept as it came.
    """
    path, question, query = uri.partition(b"?")
    if not question:
        return uri
    parts = _QUERY_SEPARATORS.split(query)
    for i in range(0, len(parts), 2):
        name, equals, _ = parts[i].partition(b"=")
        if equals and unquote_to_bytes(name.replace(b"+", b" ")).lower() == b"token":
            parts[i] = name + b"=REDACTED"
    return path + question + b"".join(parts)


class _Redacted:
    """A request as the access log sees it: its URI without a token."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.uri = redact_query(request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_log_formatter(timestamp: str, request: Request) -> str:
    """The combined log format, with any ``token`` query value redacted."""
    return combinedLogFormatter(timestamp, _Redacted(request))


def raw_answer(transport: Any, refusal: Refusal) -> None:
    """Write ``refusal`` as a whole HTTP answer, then close: whatever else
    the sender has sent is not read."""
    body = json.dumps(refusal.body()).encode() + b"\n"
    headers = b"".join(
        b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in refusal.headers.items()
    )
    transport.write(
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
        b"%sContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (refusal.code, RESPONSES.get(refusal.code, b"Error"), headers, len(body), body)
    )
    transport.loseConnection()


def _raw_refusal(request: HTTPRequest, code: int, phrase: str, reason: str) -> None:
    """Answer before the body is complete, then close: the rest is not read."""
    transport = request.channel.transport
    assert transport is not None
    raw_answer(transport, Refusal(code, phrase.lower(), reason))
    log.info(
        "refused a request while reading it: code={code} reason={reason}", code=code, reason=reason
    )


@attr.s(auto_attribs=True)
class BodyBudget:
    """The bytes of request bodies held at once, across all connections.

    A body takes its share when it is admitted (its ``Content-Length``, or
    each chunk as it arrives) and gives it back when its request is over or
    its connection is gone.
    """

    limit: int
    held: int = 0

    def take(self, size: int) -> bool:
        """Take ``size`` bytes of the budget; False (taking nothing) when it
        would pass the limit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


# Answers webhooks before their body is read: fires with a Refusal to send,
# or None to read the body (see Gateway.screen).
Screen = Callable[[bytes, bytes, Headers], "Deferred[Refusal | None]"]


class BoundedRequest(Request):
    """A request whose body is bounded in size and in time to arrive.

    Too large (by Content-Length, or while reading a body without one) is
    answered 413 at once; a request not complete within ``deadline`` seconds
    of its first line (a slow sender) is answered 408.  Either way the
    connection closes and nothing is handled.
    """

    max_body = 256 * 1024
    deadline = 30.0
    clock: IReactorTime
    in_flight: InFlight | None = None
    screen: Screen | None = None
    budget: BodyBudget | None = None
    refused = False
    _held = 0
    _lost = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._received = 0
        self._timer = self.clock.callLater(self.deadline, self._too_slow)
        self._arriving = self.in_flight is not None
        if self.in_flight is not None:
            self.in_flight.arrive()

    def _done_arriving(self) -> None:
        if self._arriving and self.in_flight is not None:
            self._arriving = False
            self.in_flight.arrived()

    def _refuse(self, code: int, phrase: str, reason: str) -> None:
        if not self.refused:
            self.refused = True
            _raw_refusal(self, code, phrase, reason)

    def _too_slow(self) -> None:
        self._refuse(408, "Request Timeout", f"the request took over {self.deadline:g}s to arrive")

    def _cancel_timer(self) -> None:
        if self._timer.active():
            self._timer.cancel()

    def gotLength(self, length: int | None) -> None:
        # Always in memory: Twisted would put a body of 100,000 bytes or
        # more, or of unknown length, in a temporary file, and the gateway
        # runs on a read-only root filesystem.  Memory is bounded instead,
        # by max_body and the budget.
        self.content = BytesIO()
        self._length = length
        if length is not None and length > self.max_body:
            self._refuse(413, "Payload Too Large", f"the body may be at most {self.max_body} bytes")
            return
        if length == 0:
            return
        channel = self.channel
        command, path = getattr(channel, "_command", None), getattr(channel, "_path", None)
        # A body no larger than one read costs no more to hold than the read
        # itself, so it is judged whole, in the webhook's one trip to the
        # pool; only larger bodies, or bodies of unknown length, are judged
        # at their headers first.
        worth_screening = length is None or length > SCREEN_ABOVE
        if (
            self.screen is not None
            and worth_screening
            and isinstance(path, bytes)
            and isinstance(command, bytes)
        ):
            # HTTPChannel keeps the request line there until the body is in.
            self._pause()
            screened = self.screen(command, path, self.requestHeaders)
            screened.addErrback(self._screen_failed)
            screened.addCallback(self._screened)
        else:
            self._admit()

    def _pause(self) -> None:
        # The channel stops handing on what it has (LineReceiver.paused) and
        # stops reading the socket; the sender's data waits in the kernel.
        channel: Any = self.channel
        channel.paused = True
        channel.transport.pauseProducing()

    def _screen_failed(self, failure: Any) -> None:
        # A bug in the screen: the body is read, and the webhook judged whole.
        log.failure("judging a request by its headers failed", failure)

    def _screened(self, refusal: Refusal | None) -> None:
        if self.refused or self._lost:
            return
        if refusal is not None:
            self.refused = True
            raw_answer(self.channel.transport, refusal)
            return
        self._admit()
        if not self.refused:
            channel: Any = self.channel
            channel.paused = False
            channel.transport.resumeProducing()
            channel.dataReceived(b"")

    def _admit(self) -> None:
        """Take the declared body's share of the budget, or refuse with 503."""
        if self._length is not None:
            self._take(self._length)

    def _take(self, size: int) -> None:
        if self.budget is None:
            return
        if self.budget.take(size):
            self._held += size
            return
        self.refused = True
        raw_answer(
            self.channel.transport,
            unavailable("the gateway is holding too many request bodies; retry shortly"),
        )
        log.info("refused a request body: max_buffered_bytes is reached")

    def _give_back(self) -> None:
        if self.budget is not None and self._held:
            self.budget.give(self._held)
            self._held = 0

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse(413, "Payload Too Large", f"the body may be at most {self.max_body} bytes")
            return
        if self._length is None:
            # A body of unknown length takes its share as it arrives.
            self._take(len(data))
            if self.refused:
                return
        super().handleContentChunk(data)

    def finish(self) -> None:
        self._give_back()
        super().finish()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self._cancel_timer()
        try:
            if not self.refused:
                # A webhook takes its in-flight slot in here, before it
                # stops counting as arriving: shutdown never sees a gap.
                super().requestReceived(command, path, version)
        finally:
            self._done_arriving()

    def connectionLost(self, reason: Any) -> None:
        self._lost = True
        self._cancel_timer()
        self._done_arriving()
        self._give_back()
        super().connectionLost(reason)


def bounded_request(
    max_body: int,
    deadline: float,
    clock: IReactorTime,
    in_flight: InFlight | None = None,
    screen: Screen | None = None,
    budget: BodyBudget | None = None,
) -> type[BoundedRequest]:
    """A :class:`BoundedRequest` class with these limits, for a ``Site``;
    with ``in_flight``, shutdown waits for requests still arriving; with
    ``screen``, a request is judged on its headers before its body is read;
    with ``budget``, the bodies held at once are bounded."""
    return type(
        "BoundedRequest",
        (BoundedRequest,),
        {
            "max_body": max_body,
            "deadline": deadline,
            "clock": clock,
            "in_flight": in_flight,
            "screen": staticmethod(screen) if screen is not None else None,
            "budget": budget,
        },
    )


class _Overflow(Protocol):
    """A connection past ``max_connections``: told 503, then closed."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        raw_answer(self.transport, unavailable("too many connections; retry shortly"))


# What one read from a socket may take.  Twisted reads 64 KiB at a time, so
# the start of a body arrives with its headers and waits in the channel while
# the headers are judged: smaller reads keep that small for every connection.
READ_SIZE = 16 * 1024
# Bodies up to this size are read before the webhook is judged (see
# BoundedRequest.gotLength).
SCREEN_ABOVE = READ_SIZE


class _Connection(ProtocolWrapper):
    def makeConnection(self, transport: Any) -> None:
        if hasattr(transport, "bufferSize"):
            transport.bufferSize = READ_SIZE
        super().makeConnection(transport)


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
            return _Overflow()
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
