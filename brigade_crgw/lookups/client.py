"""The registry client, on the reactor, with treq.

Outbound traffic is held to a few rules, because the host and repository come
from a webhook that anyone holding a project token can send:

* only hosts in ``[registry] hosts`` are contacted, at their endpoint, over
  https unless the endpoint itself says ``http://``;
* only blob downloads may be redirected, only to https, and never to a
  loopback, private or link-local address unless the endpoint is on one too
  (:mod:`.guard`);
* credentials go to the endpoint and its token realm only, never across a
  redirect;
* a manifest may be 4 MiB at most, a config blob 1 MiB, and every document
  read must match its digest (:mod:`.documents`);
* an answer's status line and headers may be 64 KiB at most
  (:class:`BoundedHead`).

Answers are cached by digest (:mod:`.cache`); a tag's digest is asked every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attr
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred
from twisted.internet.interfaces import (
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import HEADER, STATUS, HTTP11ClientProtocol
from twisted.web.client import _HTTP11ClientFactory

from ..events import ImageFacts
from .cache import FactsCache
from .credentials import Credential
from .guard import Guard, GuardedEndpoints, Resolver, reactor_resolver
from .outcomes import FAILED, TIMEOUT, TOO_LARGE, UNLISTED, LookupFailed, failed, first_line
from .references import Reference
from .session import Session

log = Logger()

# The most a registry's status line and headers may take.  Twisted's client
# sets no bound of its own (a folded header may go on for ever), and the
# headers are parsed on the reactor, so the lookup's timeout cannot help.
MAX_HEAD = 64 * 1024


class BoundedHead(HTTP11ClientProtocol):
    """An HTTP/1.1 client connection that gives up on an answer whose
    status line and headers pass :data:`MAX_HEAD` bytes.

    The parser (Twisted's, private) is asked only whether it is still
    reading the head; bytes are counted from each answer's start.
    """

    _counting: object = None
    _head = 0

    def dataReceived(self, bytes: bytes) -> None:
        parser = self._parser
        reading_head = parser is not None and parser.state in (STATUS, HEADER)
        if reading_head and parser is not self._counting:
            self._counting, self._head = parser, 0
        super().dataReceived(bytes)
        if not reading_head:
            return
        self._head += len(bytes)
        if parser is not None and self._parser is parser and parser.state in (STATUS, HEADER):
            if self._head > MAX_HEAD:
                reason = f"the registry's answer has over {MAX_HEAD} bytes of headers"
                self._giveUp(Failure(LookupFailed(TOO_LARGE, reason)))


class _BoundedFactory(_HTTP11ClientFactory):
    def buildProtocol(self, addr: Any) -> BoundedHead:
        return BoundedHead(self._quiescentCallback)


@attr.s(auto_attribs=True)
class RegistryClient:
    """Looks images up in the registries it may contact.

    :param endpoints: each allowed host (canonical) to its base URL.
    :param http: a treq-like client (its ``request``):
        ``treq.HTTPClient`` in production, ``treq.testing.StubTreq`` in tests.
    :param clock: for timeouts.
    :param resolve: host name to addresses, to check where a redirect or a
        token realm leads.
    """

    endpoints: Mapping[str, str]
    http: Any
    clock: IReactorTime
    resolve: Resolver
    cache: FactsCache = attr.ib(factory=FactsCache)
    guard: Guard = attr.ib(factory=Guard)

    @classmethod
    def create(cls, endpoints: Mapping[str, str], reactor: Any) -> RegistryClient:
        """The production client: treq on its own connection pool, through
        endpoints that check every connection's address (:class:`Guard`)."""
        from treq.client import HTTPClient
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        pool.cachedConnectionTimeout = 30
        pool._factory = _BoundedFactory
        guard = Guard({(urlsplit(url).hostname or "").lower() for url in endpoints.values()})
        factory = GuardedEndpoints(reactor, BrowserLikePolicyForHTTPS(), guard)
        agent = Agent.usingEndpointFactory(reactor, factory, pool=pool)
        return cls(endpoints, HTTPClient(agent), reactor, reactor_resolver(reactor), guard=guard)

    def inspect(
        self, reference: Reference, credential: Credential | None, timeout: float
    ) -> Deferred[tuple[ImageFacts, bool]]:
        """Look ``reference`` up.

        :returns: a Deferred firing with the facts and whether they came from
            the cache, or failing with :class:`LookupFailed`; it fails with
            outcome ``timeout`` after ``timeout`` seconds, every request
            still open then being cancelled.
        """
        endpoint = self.endpoints.get(reference.host)
        if endpoint is None:
            return failed(UNLISTED, f"{reference.host} is not in [registry] hosts")
        session = Session(
            self.http,
            self.cache,
            self.guard,
            self.resolve,
            endpoint,
            reference.repository,
            credential,
            frozenset(self.endpoints),
        )
        d = ensureDeferred(session.inspect(reference))

        def timed_out(result: Any, after: float) -> Any:
            # Whatever the cancelled request failed with, the cause is the time.
            raise LookupFailed(TIMEOUT, f"no answer within {after:.1f}s")

        d.addTimeout(timeout, self.clock, onTimeoutCancel=timed_out)

        def translate(failure: Any) -> Any:
            if failure.check(LookupFailed):
                return failure
            for reason in getattr(failure.value, "reasons", ()):
                # Twisted wraps why a connection was given up (BoundedHead).
                if isinstance(reason, Failure) and reason.check(LookupFailed):
                    return reason
            if failure.check(TimeoutError, CancelledError):
                raise LookupFailed(TIMEOUT, f"no answer within {timeout:g}s") from None
            raise LookupFailed(
                FAILED, f"{type(failure.value).__name__}: {first_line(failure.value)}"
            )

        return d.addErrback(translate)
