"""What a webhook request says, checked as far as HTTP goes: the project and
commit-ish from the routed path, the headers, the query and the body, read
into a :class:`~brigade_crgw.answers.Webhook` for the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote_to_bytes

from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from .. import registries
from ..answers import Refusal, Target, Webhook

# GitHub-style names: letters, digits, '.', '_' and '-'; never '.' or '..'.
_NAME = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,100}$")
# A commit-ish as git allows it, minus anything that could be mischief.
_COMMIT = re.compile(r"^(?!.*\.\.)(?!/)(?!.*//)[A-Za-z0-9._/+@-]{1,200}(?<!/)$")
# A percent-encoded '/' or '.', in either case.
_ENCODED_SEPARATOR = re.compile(rb"%(2f|2e)", re.IGNORECASE)
_JSON_TYPE = re.compile(r"^application/([a-z0-9.+-]*\+)?json$")


def parse_target(raw_path: bytes, route: str, query_commit: str | None) -> Target:
    """Read the project and commit-ish out of the request path.

    The path is cut into segments at its raw ``/`` and each segment is then
    percent-decoded, exactly as Twisted does before Klein routes the request,
    so the project is read from the very segments the route matched.  An
    encoded ``/`` or ``.`` (``%2F``, ``%2E``) in the route or project part is
    refused: it could only make the route and the project disagree.

    :param route: ``webhook`` (``<id or name>``, ``<org>/<repo>[/<commit…>]``)
        or ``dockerhub`` (``<org>/<repo>[/<commit…>]``).
    :raises Refusal: 400 naming what is wrong.
    """
    raw = raw_path[1:].split(b"/")
    segments = [unquote_to_bytes(segment).decode("utf-8", "replace") for segment in raw]
    rest = segments[2:]
    if route == "webhook" and len(rest) == 1:
        n = 1
    elif len(rest) >= 2:
        n = 2
    else:
        raise Refusal(400, "bad request", f"the URL must be /events/{route}/<org>/<repo>")
    if segments[:2] != ["events", route] or any(
        _ENCODED_SEPARATOR.search(segment) for segment in raw[: 2 + n]
    ):
        raise Refusal(
            400, "bad request", "the project part of the URL may not hold an encoded '/' or '.'"
        )
    names, commit_parts = rest[:n], rest[n:]
    for name in names:
        if not _NAME.fullmatch(name):
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
    if commit and not _COMMIT.fullmatch(commit):
        raise Refusal(400, "bad request", "the commit is not a valid commit-ish")
    return Target(project="/".join(names), commit=commit)


def lowered_headers(headers: Headers) -> dict[str, str]:
    """Lower-cased header names to their first value, decoded leniently."""
    return registries.lower_names(
        {
            name.decode("latin-1"): values[0].decode("latin-1")
            for name, values in headers.getAllRawHeaders()
        }
    )


def _query(request: IRequest, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "bad request", f"?{name}= is not UTF-8") from None


def _queries(request: IRequest) -> dict[str, str]:
    """Every query parameter but ``token``, to its first value, decoded
    leniently (only ``commit``, ``token`` and ``registry`` must be UTF-8)."""
    return {
        name.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
        for name, values in (request.args or {}).items()
        if values and name != b"token"
    }


def _check_media_type(headers: Mapping[str, str]) -> None:
    """Only JSON bodies are accepted; a missing Content-Type is taken as JSON,
    since some registries send none."""
    content_type = registries.media_type(headers)
    if content_type and not _JSON_TYPE.match(content_type):
        raise Refusal(
            415, "unsupported media type", "the body must be JSON (Content-Type: application/json)"
        )


def read_webhook(request: IRequest, route: str) -> Webhook:
    """What a webhook request says, checked as far as HTTP goes.

    :raises Refusal: 400 or 415.
    """
    headers = lowered_headers(request.requestHeaders)
    _check_media_type(headers)
    target = parse_target(request.path, route, _query(request, "commit"))
    body = request.content.read() if request.content is not None else b""
    return Webhook(
        target=target,
        headers=headers,
        body=body,
        query_token=_query(request, "token"),
        query_registry=_query(request, "registry"),
        query=_queries(request),
    )
