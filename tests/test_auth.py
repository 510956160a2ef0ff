"""Credentials in every placement, checked against a project's tokens."""

from __future__ import annotations

import base64
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brigade_crgw.brigade import Project
from brigade_crgw.delivery import auth

POLICY = auth.Policy("always", ("crGatewayToken",))
OPEN = auth.Policy("when-configured", ("crGatewayToken",))
TOKEN = "tok-123"
BODY = b'{"push_data": {"tag": "v1"}}'
DATA = {"repository": "acme/app", "crGatewayToken": TOKEN}


def _project(data: dict[str, str] | None) -> Project | None:
    """A project holding ``data`` in its Secret, or None for an unknown one."""
    return None if data is None else Project("brigade-acme", "acme/app", data)


def _sig(algorithm: str, body: bytes = BODY, token: str = TOKEN) -> str:
    return hmac.new(token.encode(), body, algorithm).hexdigest()


def _presented(
    headers: dict[str, str] | None = None, query: str | None = None, body: bytes = BODY
) -> auth.Presented:
    return auth.Presented(headers or {}, query, body)


GOOD = {
    "query-token": _presented(query=TOKEN),
    "bearer": _presented({"authorization": f"Bearer {TOKEN}"}),
    "basic": _presented(
        {"authorization": "Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()}
    ),
    "github-signature": _presented({"x-hub-signature-256": "sha256=" + _sig("sha256")}),
    "jfrog-signature": _presented({"x-jfrog-event-auth": _sig("sha256")}),
    "jfrog-token": _presented({"x-jfrog-event-auth": TOKEN}),
    "nexus-signature": _presented({"x-nexus-webhook-signature": _sig("sha1")}),
    "signature": _presented({"x-signature": "sha256=" + _sig("sha256")}),
}


@pytest.mark.parametrize("method", sorted(GOOD))
def test_each_placement_accepted(method: str) -> None:
    """The right token in each placement is accepted and named."""
    assert auth.authorise(POLICY, _project(DATA), GOOD[method]) == method


@pytest.mark.parametrize("method", sorted(GOOD))
def test_wrong_token_refused(method: str) -> None:
    """The same placements with another project's token are refused."""
    with pytest.raises(auth.Unauthorized, match=auth.INVALID):
        auth.authorise(POLICY, _project({**DATA, "crGatewayToken": "other"}), GOOD[method])


@pytest.mark.parametrize(
    "header",
    ["x-hub-signature-256", "x-jfrog-event-auth", "x-nexus-webhook-signature", "x-signature"],
)
def test_signature_over_altered_body_refused(header: str) -> None:
    """A signature replayed over a changed body is refused."""
    method = next(m for m, p in GOOD.items() if header in p.headers and "signature" in m)
    replayed = auth.Presented(GOOD[method].headers, None, BODY + b" ")
    with pytest.raises(auth.Unauthorized):
        auth.authorise(POLICY, _project(DATA), replayed)


@pytest.mark.parametrize(
    "presented",
    [
        _presented(),
        _presented(query=TOKEN[:-1]),
        _presented(query=TOKEN + "x"),
        _presented(query=""),
        _presented({"authorization": f"Bearer {TOKEN[:3]}"}),
        _presented({"authorization": f"Token {TOKEN}"}),
        _presented({"authorization": "Basic !!!"}),
        _presented({"authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()}),
        _presented({"x-hub-signature-256": "sha1=" + _sig("sha1")}),
        _presented({"x-hub-signature-256": "sha256=zz"}),
        _presented({"x-hub-signature-256": "sha256=" + _sig("sha256")[:-2]}),
        _presented({"x-signature": _sig("sha256")}),
    ],
)
def test_missing_or_truncated_refused(presented: auth.Presented) -> None:
    """Missing, truncated, malformed or mis-schemed credentials are refused."""
    with pytest.raises(auth.Unauthorized, match=auth.INVALID):
        auth.authorise(POLICY, _project(DATA), presented)


def test_unknown_project_same_as_wrong_token() -> None:
    """An unknown project is refused with the same words as a wrong token."""
    with pytest.raises(auth.Unauthorized) as unknown:
        auth.authorise(POLICY, _project(None), GOOD["bearer"])
    with pytest.raises(auth.Unauthorized) as wrong:
        auth.authorise(POLICY, _project({**DATA, "crGatewayToken": "x"}), GOOD["bearer"])
    assert str(unknown.value) == str(wrong.value)


def test_rotation_accepts_either_token() -> None:
    """Whitespace-separated tokens are all valid, so a rotation needs no downtime."""
    data = {**DATA, "crGatewayToken": f"old-token\n{TOKEN} "}
    assert auth.authorise(POLICY, _project(data), GOOD["bearer"]) == "bearer"
    assert auth.authorise(POLICY, _project(data), _presented(query="old-token")) == "query-token"


def test_other_token_keys() -> None:
    """[auth] token_keys chooses where tokens are kept."""
    policy = auth.Policy("always", ("genericGatewaySecret",))
    assert (
        auth.authorise(policy, _project({"genericGatewaySecret": TOKEN}), GOOD["bearer"])
        == "bearer"
    )
    with pytest.raises(auth.Unauthorized):
        auth.authorise(policy, _project(DATA), GOOD["bearer"])


def test_project_without_token() -> None:
    """Under always, a project without a token refuses in the words every
    unauthenticated sender gets, and tells the operator (in ``note``) how to
    add one; under when-configured it accepts anyone."""
    with pytest.raises(auth.Unauthorized) as refused:
        auth.authorise(POLICY, _project({"repository": "x"}), GOOD["bearer"])
    assert str(refused.value) == auth.INVALID
    assert "added to its Secret under crGatewayToken" in refused.value.note
    assert auth.authorise(OPEN, _project({"repository": "x"}), _presented()) == "none"
    with pytest.raises(auth.Unauthorized):
        auth.authorise(OPEN, _project(DATA), _presented())


def test_refusal_never_echoes_token() -> None:
    """No refusal message contains the token or the presented value."""
    for presented in [*GOOD.values(), _presented(query="guess")]:
        try:
            auth.authorise(POLICY, _project({**DATA, "crGatewayToken": "zzz-secret"}), presented)
        except auth.Unauthorized as e:
            assert "zzz-secret" not in str(e) and TOKEN not in str(e) and "guess" not in str(e)


headers_st = st.dictionaries(
    st.sampled_from(
        [
            "authorization",
            "x-hub-signature-256",
            "x-jfrog-event-auth",
            "x-nexus-webhook-signature",
            "x-signature",
            "content-type",
        ]
    ),
    st.text(max_size=80),
)


@given(headers_st, st.one_of(st.none(), st.text(max_size=40)), st.binary(max_size=200))
def test_any_input_is_a_verdict(headers: dict[str, str], query: str | None, body: bytes) -> None:
    """Any headers, query and body give a method or Unauthorized, nothing else,
    and a guess without the token never passes."""
    try:
        method = auth.authorise(POLICY, _project(DATA), auth.Presented(headers, query, body))
    except auth.Unauthorized:
        return
    assert TOKEN in (query or "") + "".join(headers.values()) or method.endswith("signature")


def test_screen_reads_a_signed_request_whatever_its_project() -> None:
    """At the headers, a signed request is let through to its body for an
    unknown project and a project without a token, as for one with a token,
    so that the answer (and its timing) does not tell them apart; unsigned,
    all three are refused there."""
    signed = auth.Presented({"x-hub-signature-256": "sha256=" + "0" * 64}, None, b"")
    unsigned = auth.Presented({"authorization": "Bearer wrong"}, None, b"")
    for data in (None, {}, {"crGatewayToken": "t"}):
        auth.screen(POLICY, _project(data), signed)
        with pytest.raises(auth.Unauthorized):
            auth.screen(POLICY, _project(data), unsigned)


def test_presents_nothing() -> None:
    """Only a request without a token, Authorization or signature presents nothing."""
    assert auth.presents_nothing(auth.Presented({}, None, b"x"))
    assert not auth.presents_nothing(auth.Presented({}, "", b""))
    assert not auth.presents_nothing(auth.Presented({"authorization": "x"}, None, b""))
    assert not auth.presents_nothing(auth.Presented({"x-signature": "x"}, None, b""))
    assert not auth.presents_nothing(auth.Presented({"x-jfrog-event-auth": "x"}, None, b""))
