"""Bodies judged at their headers, the byte budget, the connection limit and
bodies kept in memory, in process: a real HTTPChannel over a string
transport, with the screen's answer fired by hand."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from brigade_crgw.answers import Refusal
from brigade_crgw.http.connections import ConnectionLimit
from brigade_crgw.http.requests import SCREEN_ABOVE, BodyBudget, bounded_request


class Echo(Resource):
    """Answers a POST with the length of its body; notes where it was held."""

    isLeaf = True
    held_in: Any = None

    def render_POST(self, request: Any) -> bytes:
        Echo.held_in = type(request.content)
        return b"%d" % len(request.content.read())


class Screen:
    """A screen whose answers the test gives."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes, Deferred[Refusal | None]]] = []

    def __call__(self, method: bytes, uri: bytes, headers: Any) -> Deferred[Refusal | None]:
        d: Deferred[Refusal | None] = Deferred()
        self.calls.append((method, uri, d))
        return d


class Recorded:
    """The last request made."""

    request: Any = None


def connect(
    screen: Screen | None = None, budget: BodyBudget | None = None, max_body: int = 300_000
) -> tuple[StringTransport, Any]:
    clock = MemoryReactorClock()
    factory = bounded_request(max_body, 30.0, clock, screen=screen, budget=budget)

    class Recording(factory):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            Recorded.request = self

    site = Site(Echo(), requestFactory=Recording, reactor=clock)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return transport, channel


def status(transport: StringTransport) -> int:
    return int(transport.value().split(b" ", 2)[1])


UNAUTHORIZED = Refusal(
    401, "unauthorized", "missing or invalid credentials", {"WWW-Authenticate": "Bearer"}
)


class ScreenTests(SynchronousTestCase):
    def test_refused_at_the_headers_without_reading_the_body(self) -> None:
        """While the screen runs, the channel reads nothing more and holds no
        body; its refusal is written whole, with its headers, and the
        connection closes."""
        screen = Screen()
        transport, channel = connect(screen)
        channel.dataReceived(b"POST /events/webhook/a/b?x=1 HTTP/1.1\r\nHost: x\r\n")
        channel.dataReceived(b"Content-Length: 200000\r\n\r\n" + b"x" * 1000)
        [(method, uri, d)] = screen.calls
        self.assertEqual((method, uri), (b"POST", b"/events/webhook/a/b?x=1"))
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(Recorded.request.content.getvalue(), b"")
        channel.dataReceived(b"y" * 1000)
        self.assertEqual(Recorded.request.content.getvalue(), b"")
        d.callback(UNAUTHORIZED)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 401 Unauthorized"))
        self.assertIn(b"WWW-Authenticate: Bearer", head)
        self.assertEqual(json.loads(body)["reason"], "missing or invalid credentials")
        self.assertTrue(transport.disconnecting)

    def test_admitted_body_is_read_after_the_screen(self) -> None:
        """Once the screen lets a request through, what arrived meanwhile and
        the rest of the body reach the resource."""
        screen = Screen()
        transport, channel = connect(screen)
        size = SCREEN_ABOVE + 10
        channel.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n01234" % size
        )
        channel.dataReceived(b"5" * (size - 7))
        screen.calls[0][2].callback(None)
        self.assertEqual(transport.producerState, "producing")
        channel.dataReceived(b"89")
        self.assertEqual(status(transport), 200)
        self.assertTrue(transport.value().endswith(b"%d" % size))

    def test_small_body_is_not_screened(self) -> None:
        """A body no larger than one read is read at once and judged whole
        (one trip to the pool); one a byte larger is screened."""
        screen = Screen()
        transport, channel = connect(screen)
        channel.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % SCREEN_ABOVE
            + b"x" * SCREEN_ABOVE
        )
        self.assertEqual(screen.calls, [])
        self.assertEqual(status(transport), 200)
        transport, channel = connect(screen)
        channel.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (SCREEN_ABOVE + 1)
        )
        self.assertEqual(len(screen.calls), 1)

    def test_no_screen_without_a_body(self) -> None:
        """A request without a body is not screened."""
        screen = Screen()
        transport, channel = connect(screen)
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(screen.calls, [])
        self.assertEqual(status(transport), 200)


class BudgetTests(SynchronousTestCase):
    def test_body_past_the_budget_is_503_at_its_headers(self) -> None:
        """A declared body that cannot fit in what max_buffered_bytes has
        left gets 503 with Retry-After at once; one that fits is read,
        charged as its bytes arrive, and gives its share back when its
        request is over."""
        budget = BodyBudget(10)
        transport, channel = connect(budget=budget)
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        self.assertEqual(status(transport), 503)
        self.assertIn(b"Retry-After: 5", transport.value())
        self.assertEqual(budget.held, 0)
        transport, channel = connect(budget=budget)
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        self.assertEqual(budget.held, 0)
        channel.dataReceived(b"01234")
        self.assertEqual(budget.held, 5)
        channel.dataReceived(b"56789")
        self.assertEqual(status(transport), 200)
        self.assertEqual(budget.held, 0)

    def test_declared_bodies_never_sent_hold_nothing(self) -> None:
        """Bodies declared and not sent (a sender that stalls) take nothing:
        another body that fits what is really held is read."""
        budget = BodyBudget(10)
        for _ in range(3):
            _, stalled = connect(budget=budget)
            stalled.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        transport, channel = connect(budget=budget)
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
        self.assertEqual(status(transport), 200)

    def test_chunked_body_takes_its_share_as_it_arrives(self) -> None:
        """A body of unknown length is counted chunk by chunk against the budget."""
        budget = BodyBudget(10)
        transport, channel = connect(budget=budget)
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        channel.dataReceived(b"6\r\n123456\r\n")
        self.assertEqual(budget.held, 6)
        channel.dataReceived(b"6\r\n123456\r\n")
        self.assertEqual(status(transport), 503)
        channel.connectionLost(None)
        self.assertEqual(budget.held, 0)

    def test_bodies_are_kept_in_memory(self) -> None:
        """A body of 100,000 bytes or more, and a chunked one, are held in
        memory, not in a temporary file (Twisted's own choice)."""
        transport, channel = connect()
        body = b"x" * 150_000
        channel.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.assertIs(Echo.held_in, BytesIO)
        self.assertTrue(transport.value().endswith(b"150000"))
        transport, channel = connect()
        channel.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertIs(Echo.held_in, BytesIO)


class ConnectionLimitTests(SynchronousTestCase):
    def test_past_the_limit_is_503_and_closed(self) -> None:
        """With max_connections open, a new connection is told 503 in JSON and
        closed; once one closes, the next is served."""
        clock = MemoryReactorClock()
        site = Site(Echo(), requestFactory=bounded_request(100, 30.0, clock), reactor=clock)
        limit = ConnectionLimit(site, 1)
        first = limit.buildProtocol(None)
        first.makeConnection(StringTransport())
        extra = limit.buildProtocol(None)
        refused = StringTransport()
        extra.makeConnection(refused)
        self.assertEqual(status(refused), 503)
        self.assertEqual(json.loads(refused.value().split(b"\r\n\r\n")[1])["status"], "unavailable")
        self.assertTrue(refused.disconnecting)
        first.connectionLost(None)
        served = StringTransport()
        limit.buildProtocol(None).makeConnection(served)
        self.assertEqual(served.value(), b"")
        self.assertFalse(served.disconnecting)
