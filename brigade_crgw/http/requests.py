"""Bounded requests: a body too large or too slow is refused while it
arrives, within a process-wide budget of buffered bytes, before a request
reaches a route."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import RESPONSES
from twisted.web.http import Request as HTTPRequest
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from ..answers import Refusal, unavailable
from .inflight import InFlight

log = Logger()

# What one read from a socket may take.  Twisted reads 64 KiB at a time, so
# the start of a body arrives with its headers and waits in the channel while
# the headers are judged: smaller reads keep that small for every connection.
READ_SIZE = 16 * 1024
# Bodies up to this size are read before the webhook is judged (see
# BoundedRequest.gotLength).
SCREEN_ABOVE = READ_SIZE


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
    closing: Callable[[], bool] | None = None
    refused = False
    _held = 0
    _lost = False
    _continue = False

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
        if self.closing is not None and self.closing():
            # Stopping: this answer ends its connection, so that no sender
            # (or balancer) sends the next request down it while it closes.
            self.channel.persistent = False
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
        # Twisted would answer "Expect: 100-continue" with a 100 as soon as
        # this returns, before the headers are judged and even after a 413:
        # the 100 is sent here instead, once the body is wanted.
        expect = self.requestHeaders.getRawHeaders(b"expect") or []
        if expect and expect[0].lower() == b"100-continue":
            self.requestHeaders.removeHeader(b"expect")
            self._continue = getattr(self.channel, "_version", None) == b"HTTP/1.1"
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
        """Let the body come: refused with 503 when what bodies hold already
        leaves no room for its declared length (nothing is taken for a
        declaration: bytes are charged as they arrive), else told to go on
        when it asked to be (``Expect: 100-continue``)."""
        if self.budget is not None and self._length is not None:
            if self.budget.held + self._length > self.budget.limit:
                self._too_many_bodies()
                return
        if self._continue:
            self._continue = False
            transport: Any = self.channel.transport
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _take(self, size: int) -> None:
        if self.budget is None:
            return
        if self.budget.take(size):
            self._held += size
            return
        self._too_many_bodies()

    def _too_many_bodies(self) -> None:
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
        # Every body takes its share as its bytes arrive: a declared length
        # that never comes holds nothing.
        self._take(len(data))
        if self.refused:
            return
        super().handleContentChunk(data)

    def finish(self) -> None:
        self._give_back()
        super().finish()

    def process(self) -> None:
        # Klein decodes the path as UTF-8 and, when it cannot, answers an
        # HTML 400 and logs a traceback: a JSON 400 instead, in one line.
        try:
            unquote_to_bytes(self.path).decode("utf-8")
        except UnicodeDecodeError:
            refusal = Refusal(400, "bad request", "the URL is not UTF-8")
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"application/json")
            self.setHeader(b"cache-control", b"no-store")
            body = json.dumps(refusal.body()).encode() + b"\n"
            self.setHeader(b"content-length", b"%d" % len(body))
            self.write(body)
            self.finish()
            log.info("refused a request: its URL is not UTF-8")
            return
        super().process()

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
    closing: Callable[[], bool] | None = None,
) -> type[BoundedRequest]:
    """A :class:`BoundedRequest` class with these limits, for a ``Site``;
    with ``in_flight``, shutdown waits for requests still arriving; with
    ``screen``, a request is judged on its headers before its body is read;
    with ``budget``, the bodies held at once are bounded; while ``closing``
    says so, each connection is closed after its answer."""
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
            "closing": staticmethod(closing) if closing is not None else None,
        },
    )
