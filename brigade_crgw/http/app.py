"""The HTTP surface: routes, JSON answers, and the one log line of each
webhook (what a webhook request says is read by :mod:`.webhook`).

The work of a webhook is :meth:`~brigade_crgw.delivery.pipeline.Pipeline.deliver`,
handed to the thread pool in one trip through the injected ``run``; the
reactor thread only reads the request, routes and answers.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

import attr
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import parse_qs
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from .. import text
from ..answers import Refusal, Reply, Target, Trace, unavailable
from ..delivery import auth
from ..delivery.pipeline import Pipeline
from .inflight import InFlight
from .metrics import Metrics
from .webhook import lowered_headers, parse_target, read_webhook

log = Logger()
Runner = Callable[..., "Deferred[Any]"]

# What nginx logs for a client that closed the connection before the answer.
SENDER_GONE = 499


def write_json(
    request: IRequest, code: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> bytes:
    """Set the status and headers of a JSON answer; return its bytes."""
    request.setResponseCode(code)
    request.setHeader("Content-Type", "application/json")
    request.setHeader("Cache-Control", "no-store")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return json.dumps(body).encode("utf-8") + b"\n"


@attr.s(auto_attribs=True)
class Gateway:
    """The Klein application.

    :param pipeline: does the work of a webhook (blocking).
    :param run: runs a blocking call off the reactor thread, returning a
        Deferred (``partial(deferToThreadPool, reactor, pool)``; tests pass
        ``maybeDeferred``).
    :param in_flight: the bound on webhooks being handled.
    :param clock: seconds, for the logged duration.
    :param ready: whether the gateway can serve webhooks now, and if not
        why (:meth:`.Readiness.state`); ready by default, for tests of
        the routes alone.
    :param metrics: where answered webhooks are counted (``makeService``
        makes them and hands them to all that count); the gateway's own
        by default, for tests of the routes alone.
    """

    app = Klein()

    pipeline: Pipeline
    run: Runner
    in_flight: InFlight
    clock: Callable[[], float] = time.monotonic
    ready: Callable[[], tuple[bool, str]] = lambda: (True, "")
    metrics: Metrics = attr.ib(
        default=attr.Factory(lambda self: Metrics(lambda: self.in_flight.count), takes_self=True)
    )
    # Each webhook's answer still to come, to the work it waits for.
    _waiting: dict[Deferred[Any], Deferred[Any]] = attr.ib(factory=dict, init=False)
    # Webhooks at work whose project Kubernetes must tell while it fails.
    _unverified: int = attr.ib(default=0, init=False)

    @property
    def unverified_limit(self) -> int:
        """How many webhooks may be at work for a project the cache does not
        know: three quarters of max_in_flight, so that the rest is always
        there for known projects; while Kubernetes fails, only half the
        threads (each such webhook may wait out the retry budget)."""
        config = self.pipeline.config
        if self.pipeline.failing():
            return max(1, min(config.threads // 2, config.max_in_flight // 4))
        return max(1, config.max_in_flight * 3 // 4)

    def _hold_unverified(self, target: Target) -> Callable[[object], object]:
        """Count a webhook for ``target`` among the unverified while it works
        (see :meth:`Pipeline.unverified`); the returned callback ends that.

        :raises Refusal: 503 when as many already wait: made-up project
            names cannot take the threads and slots known projects need.
        """
        if not self.pipeline.unverified(target):
            return lambda result: result
        if self._unverified >= self.unverified_limit:
            raise unavailable("too many webhooks in flight; retry shortly")
        self._unverified += 1

        def done(result: object) -> object:
            self._unverified -= 1
            return result

        return done

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        request.setHeader("Content-Type", "text/plain")
        return b"OK"

    @app.route("/readyz", methods=["GET", "HEAD"])
    def readyz(self, request: IRequest) -> bytes:
        """200 while a push can be taken safely (:class:`.Readiness`); 503
        otherwise (a readiness probe's, or a load balancer's, question)."""
        ready, reason = self.ready()
        if ready:
            return write_json(request, 200, {"status": "ready"})
        body = {"status": "unavailable"}
        if _asked_from_this_host(request):
            # The reason names the API server and the gateway's identity:
            # only for whoever is on this host (the log has it too).
            body["reason"] = reason
        return write_json(request, 503, body)

    @app.route("/metrics", methods=["GET"])
    def metrics_text(self, request: IRequest) -> bytes:
        """The gateway's and the process's metrics, in the Prometheus text
        format (or OpenMetrics, when the scraper asks for it)."""
        accept = request.getHeader("accept") or ""
        body, content_type = self.metrics.exposition(accept)
        request.setHeader("Content-Type", content_type)
        return body

    @app.route("/events/<any(webhook, dockerhub):route>/<path:rest>", methods=["OPTIONS"])
    def handshake(self, request: IRequest, route: str, rest: str) -> bytes:
        """The CloudEvents webhook abuse-protection handshake (Event Grid's
        CloudEvents deliveries ask it before the first event)."""
        origin = lowered_headers(request.requestHeaders).get("webhook-request-origin")
        request.setHeader("Allow", "POST, OPTIONS")
        if origin:
            request.setHeader("WebHook-Allowed-Origin", origin)
            request.setHeader("WebHook-Allowed-Rate", "*")
        return b""

    def screen(self, method: bytes, uri: bytes, headers: Headers) -> Deferred[Refusal | None]:
        """Judge a request on its headers, before its body is read (see
        :class:`~brigade_crgw.http.requests.BoundedRequest`): a webhook whose
        project does not exist, or whose credentials in the URL or a header
        are wrong, is refused without its body ever being held.  Fires with
        the refusal to send (already logged and counted), or None to read
        the body; anything that is not a webhook is left to the routes.
        """
        path, _, query = uri.partition(b"?")
        route = unquote_to_bytes(path.split(b"/")[2]) if path.count(b"/") >= 3 else b""
        if method != b"POST" or route not in (b"webhook", b"dockerhub"):
            return succeed(None)
        started = self.clock()
        trace = Trace()
        try:
            target = parse_target(path, route.decode(), None)
            tokens = parse_qs(query, 1).get(b"token")
            token = tokens[0].decode("utf-8") if tokens else None
        except (Refusal, UnicodeDecodeError):
            # The whole request is refused later, with its reason.
            return succeed(None)
        lowered = lowered_headers(headers)
        try:
            presented = auth.Presented(lowered, token, b"")
            self.pipeline.refuse_the_empty_handed(target, trace, presented)
        except Refusal as refusal:
            self._log(refusal.code, trace, started, refusal.reason)
            return succeed(refusal)
        try:
            # The screen is work on the pool: it holds a slot while it runs,
            # and past max_in_flight the webhook is refused before any lookup.
            self.in_flight.enter()
        except Refusal as refusal:
            self._log(refusal.code, trace, started, refusal.reason)
            return succeed(refusal)
        try:
            unverified = self._hold_unverified(target)
        except Refusal as refusal:
            self.in_flight.leave()
            self._log(refusal.code, trace, started, refusal.reason)
            return succeed(refusal)
        work = self.run(self.pipeline.screen, target, lowered, token, trace)
        work.addBoth(unverified)

        def judged(result: object) -> Refusal | None:
            self.in_flight.leave()
            if isinstance(result, Failure):
                if not result.check(Refusal):
                    log.failure("screening a webhook failed", result)
                    return None
                refusal = result.value
                assert isinstance(refusal, Refusal)
                self._log(refusal.code, trace, started, refusal.reason or refusal.status)
                return refusal
            return None

        return work.addBoth(judged)

    @app.route("/events/<any(webhook, dockerhub):route>/<path:rest>", methods=["POST"])
    async def webhook(self, request: Request, route: str, rest: str) -> bytes:
        started = self.clock()
        trace = Trace()
        try:
            self.in_flight.enter()
        except Refusal as refusal:
            return self._refuse(request, refusal, trace, started)
        answered = request.notifyFinish()
        try:
            webhook = read_webhook(request, route)
            presented = auth.Presented(webhook.headers, webhook.query_token, b"")
            self.pipeline.refuse_the_empty_handed(webhook.target, trace, presented)
            unverified = self._hold_unverified(webhook.target)
        except Refusal as refusal:
            answered.addBoth(lambda _: self.in_flight.leave())
            return self._refuse(request, refusal, trace, started)
        work = self.run(self.pipeline.deliver, webhook, trace)
        work.addBoth(unverified)
        # The slot is held until the work is over and the answer was handed
        # to the connection (or the connection is gone), whichever is later.
        pending = [answered, work]

        def settled(result: object, which: Deferred[Any]) -> object:
            pending.remove(which)
            if not pending:
                self.in_flight.leave()
            return result

        # A sender that hangs up ends ``answered`` with ConnectionDone: no
        # error here (the abandoned webhook is logged once its work ends).
        answered.addBoth(settled, answered).addErrback(lambda failure: None)
        outcome = _detached(work)
        work.addBoth(settled, work)
        self._waiting[outcome] = work
        try:
            result = await outcome
        except CancelledError:
            # The sender hung up (Klein cancels the handler); the work goes
            # on, and its one log line is written when it ends.
            work.addBoth(self._log_abandoned, trace, started)
            raise
        except Refusal as refusal:
            return self._refuse(request, refusal, trace, started)
        except Exception:
            # A bug, not the sender's fault: the registry should retry.
            log.failure("webhook for {project} failed unexpectedly", project=trace.project)
            return self._refuse(request, unavailable("internal error"), trace, started)
        finally:
            self._waiting.pop(outcome, None)
        self._log(result.code, trace, started)
        return write_json(request, result.code, result.body)

    def give_up(self) -> int:
        """Answer 503 every webhook still waiting for its work (shutdown's
        deadline has come and the process is about to exit); their work is
        left to end, or not, unheard.  How many there were."""
        waiting, self._waiting = self._waiting, {}
        for outcome, work in waiting.items():
            work.addErrback(lambda failure: None)
            if not outcome.called:
                outcome.errback(unavailable("the gateway is stopping; retry shortly"))
        return len(waiting)

    def _log_abandoned(self, result: Reply | Failure, trace: Trace, started: float) -> None:
        reason = "the sender closed the connection before the answer"
        if isinstance(result, Failure):
            if not result.check(Refusal):
                log.failure(
                    "webhook for {project} failed unexpectedly",
                    result,
                    project=trace.project,
                )
                return
            refusal = result.value
            assert isinstance(refusal, Refusal)
            reason += f"; it would have been told {refusal.code} {refusal.reason or refusal.status}"
        self._log(SENDER_GONE, trace, started, reason)

    def _refuse(self, request: IRequest, refusal: Refusal, trace: Trace, started: float) -> bytes:
        self._log(refusal.code, trace, started, refusal.reason or refusal.status)
        # A refused sender keeps no connection open (and no max_connections
        # slot): the answer ends it.
        request.setHeader("Connection", "close")
        channel = getattr(request, "channel", None)
        if channel is not None and hasattr(channel, "persistent"):
            channel.persistent = False
        return write_json(request, refusal.code, refusal.body(), refusal.headers)

    def _log(self, code: int, trace: Trace, started: float, reason: str = "") -> None:
        """The one log line of a webhook, and its count in the metrics."""
        duration = self.clock() - started
        log.info(
            "webhook project={project} registry={registry} repository={repository} tag={tag} "
            "builds={builds} code={code} duration={duration:.3f}s{why}",
            project=trace.project,
            registry=trace.registry,
            repository=text.repository(trace.repository),
            tag=text.tag(trace.tag),
            builds=trace.builds,
            code=code,
            duration=duration,
            why=f" reason={reason!r}" if reason else "",
        )
        self.metrics.record(trace.registry or "none", code, len(trace.builds), duration)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        return write_json(
            request,
            404,
            {"status": "not found", "reason": "POST webhooks to /events/webhook/<org>/<repo>"},
        )

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Any) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        return write_json(
            request,
            405,
            {"status": "method not allowed"},
            {"Allow": ", ".join(allowed)} if allowed else None,
        )

    @app.handle_errors(Exception)
    def failed(self, request: IRequest, failure: Any) -> bytes:
        # The last handler: whatever a route did not expect is a JSON 500,
        # never Klein's HTML page.
        log.failure("{method} {path} failed", failure, method=request.method, path=request.path)
        return write_json(request, 500, {"status": "internal error"})


# Headers a proxy adds: a request that carries one came from further away.
_FORWARDED = (b"forwarded", b"x-forwarded-for", b"x-real-ip", b"via")


def _asked_from_this_host(request: IRequest) -> bool:
    """Whether the request came from a loopback address, not through a
    proxy that says so."""
    host = str(getattr(request.getClientAddress(), "host", ""))
    try:
        loopback = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
    headers = request.requestHeaders
    return loopback and not any(headers.hasHeader(name) for name in _FORWARDED)


def _detached(work: Deferred[Any]) -> Deferred[Any]:
    """A Deferred with ``work``'s result that can be cancelled without
    cancelling ``work``: a thread's work cannot be stopped half way, and a
    build half made must still be counted and logged."""
    copy: Deferred[Any] = Deferred()

    def forward(result: object) -> object:
        if copy.called:
            # Cancelled: the result stays on ``work``, for whoever logs it.
            return result
        copy.callback(result)
        return None

    work.addBoth(forward)
    return copy
