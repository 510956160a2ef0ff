"""Which addresses the client may connect to.

The host and repository come from a webhook that anyone holding a project
token can send, so a redirect or a token realm may only lead to a public
address, or to one of the same kind as the endpoint's; the address actually
connected is checked again, before a byte is sent (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import attr
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from .outcomes import REFUSED, LookupFailed

log = Logger()

CACHE_ENTRIES = 1024


def address_kind(address: str) -> str:
    """``loopback``, ``private``, ``link-local``, ``public`` or ``special``
    (unspecified, multicast, reserved and other ranges never contacted)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "special"
    if ip.is_private:
        return "private"
    if ip.is_global:
        return "public"
    return "special"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


#: Resolves a host name to its addresses.
Resolver = Callable[[str], Awaitable[list[str]]]


def reactor_resolver(reactor: Any) -> Resolver:
    """A :data:`Resolver` on the reactor's own name resolver."""
    from twisted.internet.interfaces import IResolutionReceiver

    def resolve(name: str) -> Deferred[list[str]]:
        done: Deferred[list[str]] = Deferred()
        addresses: list[str] = []

        @implementer(IResolutionReceiver)
        class Receiver:
            def resolutionBegan(self, resolution: object) -> None:
                pass

            def addressResolved(self, address: Any) -> None:
                addresses.append(address.host)

            def resolutionComplete(self) -> None:
                done.callback(addresses)

        reactor.nameResolver.resolveHostName(Receiver(), name)
        return done

    return resolve


@attr.s(auto_attribs=True)
class Guard:
    """Which kinds of address each host may be connected at.

    A redirect target or token realm is checked by resolving its name before
    the request (:meth:`Session._check_away`); the name could resolve
    differently when the connection is made (DNS rebinding), so the address
    actually connected is checked again, before a byte is sent to it.  The
    endpoints' own hosts may be anywhere: the operator chose them.
    """

    trusted: set[str] = attr.ib(factory=set)
    away: dict[str, frozenset[str]] = attr.ib(factory=dict)

    def judged(self, host: str, kinds: frozenset[str]) -> None:
        """Remember what ``host`` was judged to be allowed (a bounded memory:
        a host forgotten may only be reached at public addresses)."""
        if len(self.away) >= CACHE_ENTRIES:
            self.away.clear()
        self.away[host.lower()] = kinds

    def allowed(self, host: str) -> frozenset[str] | None:
        """The address kinds ``host`` may be reached at; None for any."""
        host = host.lower()
        if host in self.trusted:
            return None
        return self.away.get(host, frozenset({"public"}))


@implementer(IAgentEndpointFactory)
@attr.s(auto_attribs=True)
class GuardedEndpoints:
    """Agent endpoints (TCP, TLS above it) whose connections the guard checks."""

    reactor: Any
    tls: Any
    guard: Guard

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        endpoint: IStreamClientEndpoint = CheckedEndpoint(
            HostnameEndpoint(self.reactor, uri.host, uri.port), host, self.guard
        )
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self.tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


@implementer(IStreamClientEndpoint)
@attr.s(auto_attribs=True)
class CheckedEndpoint:
    inner: IStreamClientEndpoint
    host: str
    guard: Guard

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return self.inner.connect(CheckingFactory(factory, self.host, self.guard))


@implementer(IProtocolFactory)
class CheckingFactory:
    """Builds the real protocol only for a connection to an allowed address:
    refusing here (with TLS above) sends nothing, not even a ClientHello."""

    def __init__(self, wrapped: IProtocolFactory, host: str, guard: Guard) -> None:
        self.wrapped, self.host, self.guard = wrapped, host, guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> IProtocol | None:
        allowed = self.guard.allowed(self.host)
        address = str(getattr(addr, "host", ""))
        kind = address_kind(address) if is_ip(address) else "special"
        if allowed is not None and kind not in allowed:
            raise LookupFailed(REFUSED, f"{self.host} was connected at {address} ({kind}); refused")
        return self.wrapped.buildProtocol(addr)
