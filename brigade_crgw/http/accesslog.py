"""The access log: one line per request, with tokens in the query redacted."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.web.http import combinedLogFormatter
from twisted.web.server import Request

log = Logger()

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
