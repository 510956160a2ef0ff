"""The HTTP server's limits and the service wiring, in process: a real
HTTPChannel over a string transport, and a memory reactor with a clock."""

from __future__ import annotations

import json
import signal
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from brigade_crgw.answers import Refusal
from brigade_crgw.delivery.outage import Drain
from brigade_crgw.http.inflight import FLUSH_SECONDS, InFlight
from brigade_crgw.http.requests import bounded_request
from brigade_crgw.tap import DRAIN_MARGIN, CleanExitOnTerm, ThreadPoolService

DRAIN_SECONDS = 30.0


class Echo(Resource):
    """Answers a POST with the length of its body."""

    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        return b"%d" % len(request.content.read())


class Reactor(MemoryReactorClock):
    """A memory reactor that also runs calls from threads, at once."""

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def connect(max_body: int = 10, deadline: float = 5.0) -> tuple[StringTransport, Any, Reactor]:
    clock = Reactor()
    site = Site(Echo(), requestFactory=bounded_request(max_body, deadline, clock), reactor=clock)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return transport, channel, clock


def answer(transport: StringTransport) -> tuple[int, dict[str, Any]]:
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


class BoundedRequestTests(SynchronousTestCase):
    def test_too_large_by_length(self) -> None:
        """A Content-Length over the limit is answered 413 in JSON at once,
        and the connection is closed without reading the body."""
        transport, channel, _ = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        code, body = answer(transport)
        self.assertEqual((code, body["status"]), (413, "payload too large"))
        self.assertTrue(transport.disconnecting)

    def test_too_large_while_chunked(self) -> None:
        """A chunked body is counted while it arrives and cut at the limit."""
        transport, channel, _ = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        channel.dataReceived(b"6\r\n123456\r\n")
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"6\r\n123456\r\n")
        self.assertEqual(answer(transport)[0], 413)

    def test_within_limits_is_served(self) -> None:
        """A body within the limit reaches the resource."""
        transport, channel, _ = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
        self.assertIn(b"200 OK", transport.value())
        self.assertTrue(transport.value().endswith(b"10"))

    def test_too_slow(self) -> None:
        """A request not complete within the deadline is answered 408."""
        transport, channel, clock = connect(deadline=5.0)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01")
        clock.advance(4.9)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.2)
        code, body = answer(transport)
        self.assertEqual(code, 408)
        self.assertIn("5s", body["reason"])


class InFlightTests(SynchronousTestCase):
    def test_bound_and_drain(self) -> None:
        """The bound refuses with 503 past the limit; drained() fires only once
        the last webhook left and its answer had time to be written."""
        clock = Reactor()
        in_flight = InFlight(2, clock)
        in_flight.enter()
        in_flight.enter()
        with self.assertRaises(Refusal) as refused:
            in_flight.enter()
        self.assertEqual(refused.exception.code, 503)
        drained = in_flight.drained()
        in_flight.leave()
        clock.advance(1)
        self.assertNoResult(drained)
        in_flight.leave()
        self.assertNoResult(drained)
        clock.advance(FLUSH_SECONDS)
        self.successResultOf(drained)

    def test_drain_waits_for_a_request_arriving(self) -> None:
        """A request whose body is half received holds drained() until it is
        complete and answered; one whose sender hangs up frees it too."""
        clock = Reactor()
        in_flight = InFlight(2, clock)
        site = Site(Echo(), requestFactory=bounded_request(10, 5.0, clock, in_flight))
        channels = []
        for _ in range(2):
            channel = site.buildProtocol(None)
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n01")
            channels.append((channel, transport))
        self.assertEqual(in_flight.arriving, 2)
        drained = in_flight.drained()
        clock.advance(FLUSH_SECONDS * 2)
        self.assertNoResult(drained)
        (first, first_transport), (second, _) = channels
        first.dataReceived(b"23")
        self.assertIn(b"200 OK", first_transport.value())
        clock.advance(FLUSH_SECONDS * 2)
        self.assertNoResult(drained)
        second.connectionLost(ConnectionDone())
        self.assertEqual(in_flight.arriving, 0)
        clock.advance(FLUSH_SECONDS)
        self.successResultOf(drained)


class FakePool:
    started = stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


class ServiceTests(SynchronousTestCase):
    def started(self) -> tuple[Reactor, InFlight, FakePool, ThreadPoolService]:
        """A started service over a fake pool, on a fake clock."""
        clock = Reactor()
        in_flight = InFlight(4, clock)
        pool = FakePool()
        self.told: list[str] = []
        service = ThreadPoolService(
            pool,  # type: ignore[arg-type]
            in_flight,
            clock,
            Drain(clock.seconds),
            DRAIN_SECONDS,
            give_up=lambda: len(self.told.append("503") or self.told),
            off_reactor=maybeDeferred,
        )
        service.startService()
        return clock, in_flight, pool, service

    def test_pool_stops_after_the_drain(self) -> None:
        """Stopping waits for the webhooks in flight, then stops the pool."""
        clock, in_flight, pool, service = self.started()
        self.assertTrue(pool.started)
        in_flight.enter()
        stopped: Deferred[None] = service.stopService()
        clock.advance(DRAIN_SECONDS / 2)
        self.assertFalse(pool.stopped)
        in_flight.leave()
        clock.advance(FLUSH_SECONDS)
        self.successResultOf(stopped)
        self.assertTrue(pool.stopped)

    def test_pool_stops_at_the_drain_timeout(self) -> None:
        """A webhook that never ends does not hold shutdown past drain_seconds:
        the pipeline's deadline is set DRAIN_MARGIN before it, what still
        waits is told 503 at it, and the pool is stopped after the flush."""
        clock, in_flight, pool, service = self.started()
        in_flight.enter()
        stopped = service.stopService()
        self.assertEqual(service.drain.deadline, DRAIN_SECONDS - DRAIN_MARGIN)
        clock.advance(DRAIN_SECONDS - 0.1)
        self.assertEqual(self.told, [])
        clock.advance(0.2)
        self.assertEqual(self.told, ["503"])
        self.assertNoResult(stopped)
        clock.advance(FLUSH_SECONDS)
        self.successResultOf(stopped)
        self.assertTrue(pool.stopped)

    def test_a_pool_that_will_not_stop_does_not_hold_the_exit(self) -> None:
        """A pool whose threads do not end is left after JOIN_SECONDS."""
        from brigade_crgw.tap import JOIN_SECONDS

        clock, _, _, service = self.started()
        service.off_reactor = lambda f: Deferred()
        stopped = service.stopService()
        clock.advance(FLUSH_SECONDS)
        self.assertNoResult(stopped)
        clock.advance(JOIN_SECONDS)
        self.successResultOf(stopped)

    def test_sigterm_stops_the_reactor(self) -> None:
        """Once the reactor runs, SIGTERM's handler is ours, and it stops the
        reactor (a clean stop that exits 0, not twistd's re-raise)."""
        clock = Reactor()
        before = signal.getsignal(signal.SIGTERM)
        try:
            CleanExitOnTerm(clock).startService()
            [(install, args, _)] = clock.whenRunningHooks
            install(*args)
            handler = signal.getsignal(signal.SIGTERM)
            assert callable(handler)
            self.assertFalse(clock.hasStopped)
            handler(signal.SIGTERM, None)
            self.assertTrue(clock.hasStopped)
        finally:
            signal.signal(signal.SIGTERM, before)

    def test_sigterm_waits_shutdown_delay_while_unready(self) -> None:
        """With a shutdown delay, SIGTERM at once makes the gateway unready
        but stops the reactor (and so the listener) only once the delay has
        passed; a second SIGTERM stops it at once."""
        for second_term in (False, True):
            clock = Reactor()
            told: list[str] = []
            before = signal.getsignal(signal.SIGTERM)
            try:
                CleanExitOnTerm(clock, 10.0, partial(told.append, "stopping")).startService()
                [(install, args, _)] = clock.whenRunningHooks
                install(*args)
                handler = signal.getsignal(signal.SIGTERM)
                assert callable(handler)
                handler(signal.SIGTERM, None)
                self.assertEqual(told, ["stopping"])
                clock.advance(9.9)
                self.assertFalse(clock.hasStopped)
                if second_term:
                    handler(signal.SIGTERM, None)
                else:
                    clock.advance(0.1)
                self.assertTrue(clock.hasStopped)
                self.assertEqual(told, ["stopping"])
            finally:
                signal.signal(signal.SIGTERM, before)


class ExpectContinueTests(SynchronousTestCase):
    def test_no_100_after_a_413(self) -> None:
        """A body declared over the limit with Expect: 100-continue gets the
        413 and never a 100 after it."""
        transport, channel, _ = connect()
        channel.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertNotIn(b"100 Continue", transport.value())

    def test_100_once_the_body_is_wanted(self) -> None:
        """A body that may come is told 100 Continue, once, then answered."""
        transport, channel, _ = connect()
        channel.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        channel.dataReceived(b"0123")
        self.assertEqual(transport.value().count(b"100 Continue"), 1)
        self.assertIn(b"200 OK", transport.value())


class UndecodablePathTests(SynchronousTestCase):
    def test_percent_ff_is_a_json_400(self) -> None:
        """A path that is not UTF-8 once decoded gets a JSON 400."""
        transport, channel, _ = connect()
        channel.dataReceived(b"GET /ac%ffme HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "))
        self.assertIn(b"application/json", head)
        self.assertEqual(json.loads(body)["status"], "bad request")
