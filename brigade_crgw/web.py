"""The HTTP surface: webhook routes, JSON answers, errors mapped to codes.

Data flows one way: request -> project -> auth -> decode -> builds ->
response.  Everything that blocks (the Kubernetes store, signature checks,
payload decoding) goes through the injected ``run``, which puts it on the
gateway's thread pool; the reactor thread only routes and answers.  A
webhook is answered 200 only after Kubernetes has accepted every build.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import attr
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import Request as HTTPRequest
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from . import auth, brigade, registries
from .config import WHEN_CONFIGURED, Config
from .events import ImageEvent
from .kube import SecretStore, StoreUnavailable
from .metrics import Metrics

log = Logger()
Runner = Callable[..., "Deferred[Any]"]

RETRY_AFTER = "5"
FLUSH_SECONDS = 0.2
# GitHub-style names: letters, digits, '.', '_' and '-'; never '.' or '..'.
_NAME = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,100}$")
# A commit-ish as git allows it, minus anything that could be mischief.
_COMMIT = re.compile(r"^(?!.*\.\.)(?!/)(?!.*//)[A-Za-z0-9._/+@-]{1,200}(?<!/)$")
_JSON_TYPE = re.compile(r"^application/([a-z0-9.+-]*\+)?json$")


class Refusal(Exception):
    """A request the gateway answers with a 4xx or 503 and a JSON body.

    :param code: the HTTP status.
    :param status: the ``status`` word of the body.
    :param reason: a sentence for the sender, never holding a secret.
    """

    def __init__(
        self, code: int, status: str, reason: str = "", headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(reason or status)
        self.code, self.status, self.reason = code, status, reason
        self.headers = dict(headers or {})


def _unavailable(reason: str) -> Refusal:
    return Refusal(503, "unavailable", reason, {"Retry-After": RETRY_AFTER})


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


def _refusal_body(refusal: Refusal) -> dict[str, str]:
    body = {"status": refusal.status}
    if refusal.reason:
        body["reason"] = refusal.reason
    return body


def _global_reactor() -> IReactorTime:
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


@attr.s(auto_attribs=True)
class InFlight:
    """Counts webhooks being handled: bounds them, and lets shutdown wait."""

    limit: int
    clock: IReactorTime = attr.ib(factory=_global_reactor)
    count: int = 0
    _waiting: list[Deferred[None]] = attr.ib(factory=list)

    def enter(self) -> None:
        if self.count >= self.limit:
            raise _unavailable("too many webhooks in flight; retry shortly")
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0 and self._waiting:
            self._release_soon()

    def _release_soon(self) -> None:
        # A finished answer may still sit in its connection's buffer, and
        # shutdown closes connections without flushing them: give the
        # reactor a few turns to write it first.
        self.clock.callLater(FLUSH_SECONDS, self._release)

    def _release(self) -> None:
        if self.count == 0:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def drained(self) -> Deferred[None]:
        """Fires once no webhook is being handled and the last answers had
        time to leave."""
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        if self.count == 0:
            self._release_soon()
        return d


@attr.s(frozen=True, auto_attribs=True)
class Target:
    """What a webhook URL names: a project and, perhaps, a commit-ish."""

    project: str
    commit: str


def parse_target(raw_path: bytes, route: str, query_commit: str | None) -> Target:
    """Read the project and commit-ish out of the raw request path.

    The raw path is used, not a decoded one, so an encoded ``/`` or ``..``
    cannot smuggle a different project name past the checks.

    :param route: ``webhook`` (``<id or name>``, ``<org>/<repo>[/<commit…>]``)
        or ``dockerhub`` (``<org>/<repo>[/<commit…>]``).
    :raises Refusal: 400 naming what is wrong.
    """
    prefix = f"/events/{route}/".encode()
    rest = raw_path[len(prefix) :].decode("ascii", "replace")
    segments = rest.split("/")
    if route == "webhook" and len(segments) == 1:
        names, commit_parts = segments, []
    elif len(segments) >= 2:
        names, commit_parts = segments[:2], segments[2:]
    else:
        raise Refusal(400, "bad request", f"the URL must be /events/{route}/<org>/<repo>")
    for name in names:
        if not _NAME.match(name):
            raise Refusal(
                400,
                "bad request",
                "a project name is letters, digits, '.', '_' and '-' (at most 100)",
            )
    commit = "/".join(commit_parts)
    if query_commit is not None:
        if commit and query_commit != commit:
            raise Refusal(400, "bad request", "the commit is given twice, differently")
        commit = query_commit
    if commit and not _COMMIT.match(commit):
        raise Refusal(400, "bad request", "the commit is not a valid commit-ish")
    return Target(project="/".join(names), commit=commit)


def _headers(request: IRequest) -> dict[str, str]:
    """Lower-cased header names to their first value, decoded leniently."""
    return {
        name.decode("latin-1").lower(): values[0].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


def _query(request: IRequest, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "bad request", f"?{name}= is not UTF-8") from None


def _check_media_type(headers: Mapping[str, str]) -> None:
    """Only JSON bodies are accepted; a missing Content-Type is taken as JSON,
    since some registries send none."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and not _JSON_TYPE.match(content_type):
        raise Refusal(
            415, "unsupported media type", "the body must be JSON (Content-Type: application/json)"
        )


@attr.s(auto_attribs=True)
class Gateway:
    """The Klein application.

    :param config: the gateway's configuration.
    :param store: where projects are read and builds written.
    :param run: runs a blocking call off the reactor thread, returning a
        Deferred (``partial(deferToThreadPool, reactor, pool)``; tests pass
        ``maybeDeferred``).
    :param clock: seconds, for the logged duration.
    """

    app = Klein()

    config: Config
    store: SecretStore
    run: Runner
    clock: Callable[[], float] = time.monotonic
    in_flight: InFlight = attr.ib(default=None)
    policy: auth.Policy = attr.ib(init=False)
    metrics: Metrics = attr.ib(init=False)

    def __attrs_post_init__(self) -> None:
        if self.in_flight is None:
            self.in_flight = InFlight(self.config.max_in_flight)
        self.policy = auth.Policy(self.config.require, self.config.token_keys)
        self.metrics = Metrics(lambda: self.in_flight.count)

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        request.setHeader("Content-Type", "text/plain")
        return b"OK"

    @app.route("/metrics", methods=["GET"])
    def metrics_text(self, request: IRequest) -> bytes:
        """Counters in the Prometheus text format."""
        request.setHeader("Content-Type", "text/plain; version=0.0.4")
        return self.metrics.render().encode()

    @app.route("/events/<any(webhook, dockerhub):route>/<path:rest>", methods=["OPTIONS"])
    def handshake(self, request: IRequest, route: str, rest: str) -> bytes:
        """The CloudEvents webhook abuse-protection handshake (Event Grid's
        CloudEvents deliveries ask it before the first event)."""
        origin = _headers(request).get("webhook-request-origin")
        request.setHeader("Allow", "POST, OPTIONS")
        if origin:
            request.setHeader("WebHook-Allowed-Origin", origin)
            request.setHeader("WebHook-Allowed-Rate", "*")
        return b""

    @app.route("/events/<any(webhook, dockerhub):route>/<path:rest>", methods=["POST"])
    async def webhook(self, request: Request, route: str, rest: str) -> bytes:
        started = self.clock()
        fields: dict[str, Any] = {
            "project": "",
            "registry": "",
            "repository": "",
            "tag": "",
            "builds": [],
        }
        try:
            self.in_flight.enter()
        except Refusal as refusal:
            return self._refuse(request, refusal, fields, started)
        # Counted until the answer is handed to the connection, so that
        # shutdown never cuts an answer short.
        request.notifyFinish().addBoth(lambda _: self.in_flight.leave())
        try:
            code, body = await self._deliver(request, route, fields)
        except Refusal as refusal:
            return self._refuse(request, refusal, fields, started)
        except Exception:
            # A bug, not the sender's fault: the registry should retry.
            log.failure("webhook for {project} failed unexpectedly", project=fields["project"])
            return self._refuse(request, _unavailable("internal error"), fields, started)
        self._log(code, fields, started)
        return write_json(request, code, body)

    async def _deliver(
        self, request: IRequest, route: str, fields: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        headers = _headers(request)
        _check_media_type(headers)
        target = parse_target(request.path, route, _query(request, "commit"))
        project_id = brigade.project_id(target.project)
        fields["project"] = project_id
        body = request.content.read() if request.content is not None else b""

        project = None
        # A name already starting with brigade- is taken as an ID, and may not
        # be one Kubernetes could hold: no such project, without asking.
        if brigade.is_secret_name(project_id):
            try:
                project = await self.run(self.store.get_project, project_id)
            except StoreUnavailable as e:
                raise self._store_failed("reading the project", e) from None
        if project is None and self.policy.require == WHEN_CONFIGURED:
            raise Refusal(404, "project not found")
        presented = auth.Presented(headers, _query(request, "token"), body)
        try:
            method = await self.run(
                auth.authorise, self.policy, project.data if project else None, presented
            )
        except auth.Unauthorized as e:
            raise Refusal(
                401, "unauthorized", str(e), {"WWW-Authenticate": 'Bearer realm="brigade-crgw"'}
            ) from None
        if method == "none":
            log.warn(
                "project {project} has no token: anyone can trigger it "
                "([auth] require = when-configured)",
                project=project_id,
            )
        assert project is not None

        try:
            delivery = await self.run(registries.decode, body, headers, _query(request, "registry"))
        except registries.PayloadError as e:
            raise Refusal(400, "bad request", str(e)) from None
        fields["registry"] = delivery.registry
        if delivery.reply is not None:
            return 200, delivery.reply
        if delivery.registry == "generic" and self.config.strict:
            raise Refusal(
                422,
                "unrecognised payload",
                "no known registry sends this payload ([gateway] strict = true)",
            )
        chosen = [e for e in delivery.events if e.action in self.config.event_types]
        if delivery.events:
            fields["repository"] = delivery.events[0].repository
            fields["tag"] = delivery.events[0].tag
        if not chosen:
            actions = sorted({e.action for e in delivery.events}) or ["nothing"]
            return 200, {
                "status": "ignored",
                "reason": f"{delivery.registry} sent {', '.join(actions)}; "
                f"builds are made for {', '.join(sorted(self.config.event_types))}",
            }

        for event in chosen:
            try:
                name = await self.run(self._create_build, project, event, target.commit)
            except StoreUnavailable as e:
                raise self._store_failed("creating the build", e) from None
            fields["builds"].append(name)
        return 200, {"status": "Success", "builds": fields["builds"]}

    def _create_build(self, project: brigade.Project, event: ImageEvent, commit: str) -> str:
        """Make the build Secret for ``event`` and create it (on the pool:
        encoding a large payload is work the reactor should not do)."""
        secret = brigade.build_secret(
            project, event, brigade.build_id(project, event, commit), commit
        )
        self.store.create_build(secret)
        return str(secret["metadata"]["name"])  # type: ignore[index]

    @staticmethod
    def _store_failed(doing: str, error: StoreUnavailable) -> Refusal:
        # The details are for the operator; the sender only needs to retry.
        log.warn("Kubernetes failed while {doing}: {error}", doing=doing, error=str(error))
        return _unavailable("Kubernetes is unavailable; retry later")

    def _refuse(
        self, request: IRequest, refusal: Refusal, fields: dict[str, Any], started: float
    ) -> bytes:
        self._log(refusal.code, fields, started, refusal.reason or refusal.status)
        return write_json(request, refusal.code, _refusal_body(refusal), refusal.headers)

    def _log(self, code: int, fields: dict[str, Any], started: float, reason: str = "") -> None:
        """The one log line of a webhook, and its count in the metrics."""
        duration = self.clock() - started
        log.info(
            "webhook project={project} registry={registry} repository={repository} tag={tag} "
            "builds={builds} code={code} duration={duration:.3f}s{why}",
            code=code,
            duration=duration,
            why=f" reason={reason!r}" if reason else "",
            **fields,
        )
        self.metrics.record(fields["registry"] or "none", code, len(fields["builds"]), duration)

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


_TOKEN_IN_QUERY = re.compile(rb"([?&]token=)[^&]*", re.IGNORECASE)


class _Redacted:
    """A request as the access log sees it: its URI without ``?token=``."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.uri = _TOKEN_IN_QUERY.sub(rb"\1REDACTED", request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_log_formatter(timestamp: str, request: Request) -> str:
    """The combined log format, with any ``?token=`` value redacted."""
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
    refused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from twisted.internet import reactor

        self._received = 0
        self._timer = reactor.callLater(self.deadline, self._too_slow)

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
        if self.refused:
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Any) -> None:
        self._cancel_timer()
        super().connectionLost(reason)


def bounded_request(max_body: int, deadline: float) -> type[BoundedRequest]:
    """A :class:`BoundedRequest` class with these limits, for a ``Site``."""
    return type("BoundedRequest", (BoundedRequest,), {"max_body": max_body, "deadline": deadline})
