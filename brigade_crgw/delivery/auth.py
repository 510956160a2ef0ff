"""Who may trigger a project: credentials found in a request, checked
against the tokens kept in the project's Secret.

Every comparison is constant-time (:func:`hmac.compare_digest`), every
candidate token is tried, and nothing here logs or returns a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping

import attr

from ..brigade import Project
from ..config import ALWAYS

# The same words for an unknown project and a wrong token, so that an
# unauthenticated caller learns nothing about which projects exist.
INVALID = "missing or invalid credentials"


class Unauthorized(Exception):
    """The request may not trigger the project; str() is safe to show the sender.

    :param note: what the operator should know (e.g. how to add a token),
        for the log only: every sender is told the same :data:`INVALID`.
    """

    def __init__(self, reason: str = INVALID, note: str = "") -> None:
        super().__init__(reason)
        self.note = note


@attr.s(frozen=True, auto_attribs=True)
class Policy:
    """``[auth]`` of the ini: how strict to be and where tokens are kept."""

    require: str
    token_keys: tuple[str, ...]


@attr.s(frozen=True, auto_attribs=True)
class Presented:
    """What a request offers as credentials.

    :param headers: lower-cased header names to their first value.
    :param query_token: the ``?token=`` value, if any.
    :param body: the raw body, which signatures cover.
    """

    headers: Mapping[str, str]
    query_token: str | None
    body: bytes = attr.ib(repr=False)


def _tokens(policy: Policy, project: Project) -> list[bytes]:
    return [token.encode("utf-8") for token in project.tokens(policy.token_keys)]


def _equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _bearer(value: str) -> bytes | None:
    scheme, _, token = value.strip().partition(" ")
    return token.strip().encode("utf-8") if scheme.lower() == "bearer" else None


def _basic_password(value: str) -> bytes | None:
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(b":")[2]


def _hex_signature(value: str, prefix: str = "") -> bytes | None:
    value = value.strip()
    if prefix:
        if not value.lower().startswith(prefix):
            return None
        value = value[len(prefix) :]
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _signed(algorithm: Callable[..., object]) -> Callable[[bytes, bytes], bytes]:
    def sign(token: bytes, body: bytes) -> bytes:
        return hmac.new(token, body, algorithm).digest()  # type: ignore[arg-type]

    return sign


_SHA256 = _signed(hashlib.sha256)
_SHA1 = _signed(hashlib.sha1)

# Header, how to read the presented value, how a token would sign the body.
_SIGNATURES: tuple[
    tuple[str, str, Callable[[str], bytes | None], Callable[[bytes, bytes], bytes]], ...
] = (
    ("github-signature", "x-hub-signature-256", lambda v: _hex_signature(v, "sha256="), _SHA256),
    ("jfrog-signature", "x-jfrog-event-auth", _hex_signature, _SHA256),
    ("nexus-signature", "x-nexus-webhook-signature", _hex_signature, _SHA1),
    ("signature", "x-signature", lambda v: _hex_signature(v, "sha256="), _SHA256),
)


def matches(tokens: list[bytes], presented: Presented) -> str | None:
    """How ``presented`` proves one of ``tokens``, or None if it does not.

    All placements are checked against all tokens, so the time taken does
    not depend on which one (if any) matched.
    """
    plain: list[tuple[str, bytes]] = []
    if presented.query_token is not None:
        plain.append(("query-token", presented.query_token.encode("utf-8")))
    authorization = presented.headers.get("authorization", "")
    for method, read in (("bearer", _bearer), ("basic", _basic_password)):
        value = read(authorization)
        if value is not None:
            plain.append((method, value))
    # JFrog sends the token itself unless payload signing is switched on.
    if "x-jfrog-event-auth" in presented.headers:
        plain.append(("jfrog-token", presented.headers["x-jfrog-event-auth"].strip().encode()))

    found = None
    for token in tokens:
        for method, value in plain:
            if _equal(value, token) and found is None:
                found = method
        for method, header, parse, sign in _SIGNATURES:
            if header not in presented.headers:
                continue
            signature = parse(presented.headers[header])
            if signature is not None and _equal(signature, sign(token, presented.body)):
                found = found or method
    return found


def presents_nothing(presented: Presented) -> bool:
    """Whether the request carries no credential of any kind: no ``?token=``,
    no ``Authorization``, no signature header."""
    headers = presented.headers
    return (
        presented.query_token is None
        and "authorization" not in headers
        and "x-jfrog-event-auth" not in headers
        and not any(header in headers for _, header, _, _ in _SIGNATURES)
    )


def screen(policy: Policy, project: Project | None, presented: Presented) -> None:
    """Judge a request before its body is read: refuse it when no body could
    make it acceptable.

    Plain credentials that match no token with no signature header beside
    them are refused as :func:`authorise` would, and so are an unknown
    project and a project without a token (under ``always``) unless the
    request is signed: a signed request needs its body to be judged, and is
    read whatever its project, so that its answer does not tell whether the
    project exists; :func:`authorise` then judges it whole.
    ``presented.body`` is not looked at.

    :raises Unauthorized: as :func:`authorise` does.
    """
    signed = any(header in presented.headers for _, header, _, _ in _SIGNATURES)
    if project is None or (not _tokens(policy, project) and policy.require == ALWAYS):
        # No token could match.  A signed request is still read before it
        # is refused, as it would be for a project with a token: whether a
        # project exists (or has a token) must not show in the answer or
        # its timing before credentials are checked.
        if signed:
            return
        authorise(policy, project, presented)
        return
    tokens = _tokens(policy, project)
    if not tokens:
        authorise(policy, project, presented)
        return
    empty = attr.evolve(presented, body=b"")
    plain = matches(tokens, attr.evolve(empty, headers=_without_signatures(presented.headers)))
    if plain is None and not signed:
        raise Unauthorized(INVALID)


def _without_signatures(headers: Mapping[str, str]) -> dict[str, str]:
    # X-JFrog-Event-Auth is both a plain token and a signature: keep it.
    signed = {header for _, header, _, _ in _SIGNATURES} - {"x-jfrog-event-auth"}
    return {name: value for name, value in headers.items() if name not in signed}


def authorise(policy: Policy, project: Project | None, presented: Presented) -> str:
    """Decide whether ``presented`` may trigger ``project``.

    :param project: the project, or None for an unknown one.
    :returns: how the sender proved itself, or ``"none"`` when the policy
        lets a project without tokens be triggered by anyone.
    :raises Unauthorized: when it may not; an unknown project, a project
        without a token and a wrong token are refused in the same words.
    """
    if project is None:
        raise Unauthorized(INVALID)
    tokens = _tokens(policy, project)
    if not tokens:
        if policy.require == ALWAYS:
            # The sender is told what anyone is told; the operator, how to fix it.
            raise Unauthorized(
                INVALID,
                note="this project has no token: it refuses every webhook until one is "
                f"added to its Secret under {' or '.join(policy.token_keys)} "
                "(see docs/security.rst)",
            )
        return "none"
    method = matches(tokens, presented)
    if method is None:
        raise Unauthorized(INVALID)
    return method


#: Every way a sender can prove a token: what :func:`matches` returns.
METHODS = (
    "query-token",
    "bearer",
    "basic",
    "jfrog-token",
    *(method for method, _, _, _ in _SIGNATURES),
)


def present(method: str, token: str, body: bytes) -> tuple[dict[str, str], str | None]:
    """How a sender proves ``token`` by ``method`` (one of :data:`METHODS`):
    the headers to send and the ``?token=`` value (or None).  The inverse
    of :func:`matches`, for ``brigade-crgw send``.

    :raises ValueError: for an unknown method.
    """
    if method == "query-token":
        return {}, token
    if method == "bearer":
        return {"Authorization": f"Bearer {token}"}, None
    if method == "basic":
        pair = base64.b64encode(f"brigade-crgw:{token}".encode()).decode("ascii")
        return {"Authorization": f"Basic {pair}"}, None
    if method == "jfrog-token":
        return {"X-JFrog-Event-Auth": token}, None
    for name, header, _, sign in _SIGNATURES:
        if name == method:
            digest = sign(token.encode("utf-8"), body).hex()
            prefix = "sha256=" if method in ("github-signature", "signature") else ""
            return {header: prefix + digest}, None
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
