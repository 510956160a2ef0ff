"""The HTTP server around the app: bounded requests, the count of webhooks
in flight, and the access log.

These limits act before a request reaches a route: a body too large or too
slow is refused while it arrives, and a webhook past ``max_in_flight`` is
refused before any work starts.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import Request as HTTPRequest
from twisted.web.http import combinedLogFormatter
from twisted.web.server import Request

from .deliver import unavailable

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


def _raw_refusal(request: HTTPRequest, code: int, phrase: str, reason: str) -> None:
    """Answer before the body is complete, then close: the rest is not read."""
    body = json.dumps({"status": phrase.lower(), "reason": reason}).encode() + b"\n"
    transport = request.channel.transport
    assert transport is not None
    transport.write(
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (code, phrase.encode(), len(body), body)
    )
    transport.loseConnection()
    log.info(
        "refused a request while reading it: code={code} reason={reason}", code=code, reason=reason
    )


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
    refused = False

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
        if length is not None and length > self.max_body:
            self._refuse(413, "Payload Too Large", f"the body may be at most {self.max_body} bytes")
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse(413, "Payload Too Large", f"the body may be at most {self.max_body} bytes")
            return
        super().handleContentChunk(data)

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
        self._cancel_timer()
        self._done_arriving()
        super().connectionLost(reason)


def bounded_request(
    max_body: int, deadline: float, clock: IReactorTime, in_flight: InFlight | None = None
) -> type[BoundedRequest]:
    """A :class:`BoundedRequest` class with these limits, for a ``Site``;
    with ``in_flight``, shutdown waits for requests still arriving."""
    return type(
        "BoundedRequest",
        (BoundedRequest,),
        {"max_body": max_body, "deadline": deadline, "clock": clock, "in_flight": in_flight},
    )
