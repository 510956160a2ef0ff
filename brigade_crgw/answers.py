"""What the web layer and the delivery share: a webhook as it was read, and
the answers to it (a success, or a :class:`Refusal` with its code)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attr

RETRY_AFTER = "5"


class Refusal(Exception):
    """A webhook the gateway answers with a 4xx or 503 and a JSON body.

    :param code: the HTTP status.
    :param status: the ``status`` word of the body.
    :param reason: a sentence for the sender, never holding a secret.
    :param headers: extra answer headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self, code: int, status: str, reason: str = "", headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(reason or status)
        self.code, self.status, self.reason = code, status, reason
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        body = {"status": self.status}
        if self.reason:
            body["reason"] = self.reason
        return body


def unavailable(reason: str) -> Refusal:
    """A 503 that tells the sender to retry."""
    return Refusal(503, "unavailable", reason, {"Retry-After": RETRY_AFTER})


@attr.s(frozen=True, auto_attribs=True)
class Target:
    """What a webhook URL names: a project and, perhaps, a commit-ish."""

    project: str
    commit: str


@attr.s(frozen=True, auto_attribs=True)
class Webhook:
    """A webhook as the web layer read it.

    :param headers: lower-cased header names to their first value.
    :param query_token: the ``?token=`` value, if any.
    :param query_registry: the ``?registry=`` value, if any.
    :param query: every query parameter but ``token``, to its first value
        (what a ``crGatewayFilter`` sees as ``request.query``).
    """

    target: Target
    headers: Mapping[str, str]
    body: bytes = attr.ib(repr=False)
    query_token: str | None = attr.ib(default=None, repr=False)
    query_registry: str | None = None
    query: Mapping[str, str] = attr.ib(factory=dict)


@attr.s(auto_attribs=True)
class Trace:
    """What is known of a webhook so far, for its one log line.  Filled in as
    :meth:`Pipeline.deliver` goes, so a refusal still logs what was learnt."""

    project: str = ""
    registry: str = ""
    repository: str = ""
    tag: str = ""
    builds: list[str] = attr.ib(factory=list)


@attr.s(frozen=True, auto_attribs=True)
class Reply:
    """A webhook's successful answer: its code and JSON body."""

    code: int
    body: Mapping[str, Any]
