"""What reaches the logs: the access log never shows a token, however the
query spells it, and text from a payload is escaped and cut."""

from __future__ import annotations

import string
import unicodedata
from typing import Any

from hypothesis import assume, example, given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Site

from brigade_crgw import text
from brigade_crgw.http.accesslog import access_log_formatter, redact_query


class Capture(Resource):
    """Keeps the last request, answers 200."""

    isLeaf = True
    last: Any = None

    def render_POST(self, request: Any) -> bytes:
        Capture.last = request
        return b"ok"


def served(uri: bytes) -> Any:
    """``uri`` sent through a real HTTPChannel; the request Twisted made of it."""
    site = Site(Capture())
    channel = site.buildProtocol(None)
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"POST " + uri + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    return Capture.last


SAFE = string.ascii_letters + string.digits + "-._~"


def spelt(word: str) -> st.SearchStrategy[str]:
    """``word`` with any of its characters percent-escaped (either case of hex)."""
    return st.tuples(
        *(
            st.sampled_from([c, f"%{ord(c):02x}", f"%{ord(c):02X}"] if c not in "%" else [c])
            for c in word
        )
    ).map("".join)


@st.composite
def token_urls(draw: Any) -> tuple[bytes, str, str]:
    """A URL carrying a token among other parameters: (uri, token, raw value)."""
    token = draw(st.text(SAFE, min_size=12, max_size=40))
    raw_value = draw(spelt(token))
    name = draw(spelt("token"))
    others = draw(
        st.lists(
            st.tuples(
                st.text(string.ascii_lowercase, min_size=1, max_size=8).filter(
                    lambda n: n != "token"
                ),
                st.text(string.ascii_lowercase + string.digits, max_size=8),
            ),
            max_size=4,
        )
    )
    items = [f"{n}={v}" for n, v in others]
    items.insert(draw(st.integers(0, len(items))), f"{name}={raw_value}")
    separators = draw(st.lists(st.sampled_from(["&", ";"]), min_size=len(items)))
    query = items[0] + "".join(s + item for s, item in zip(separators, items[1:], strict=False))
    return f"/events/webhook/acme/app?{query}".encode(), token, raw_value


@given(token_urls())
@example((b"/events/webhook/acme/app?x=1;token=s3cr3t-t0ken-abc", "s3cr3t-t0ken-abc", ""))
@example((b"/events/webhook/acme/app?%74oken=s3cr3t-t0ken-abc", "s3cr3t-t0ken-abc", ""))
def test_no_token_in_the_access_log(case: tuple[bytes, str, str]) -> None:
    """For any URL that Twisted reads as carrying a token, whatever its
    separators and escapes, the token is not in the access log line."""
    uri, token, raw_value = case
    request = served(uri)
    # Only URLs that authenticate: Twisted's own parse finds the token.
    assume(request.args.get(b"token", [None])[0] == token.encode())
    line = access_log_formatter("[27/Nov/2026:12:00:00 +0000]", request)
    assert token not in line
    assert not raw_value or raw_value not in line
    assert "REDACTED" in line


def test_redaction_keeps_the_rest() -> None:
    """Only token values are replaced; other parameters and the path stay."""
    assert (
        redact_query(b"/events/webhook/a/b?commit=v1;TOKEN=x&to+ken=y&token")
        == b"/events/webhook/a/b?commit=v1;TOKEN=REDACTED&to+ken=y&token"
    )
    assert redact_query(b"/events/webhook/a/b") == b"/events/webhook/a/b"


def test_control_characters_are_escaped() -> None:
    """CR, LF, ESC, bidirectional overrides and backslashes are written as
    escapes, so a payload cannot forge a log record or reverse a title."""
    assert text.printable("app\r\n[x] forged") == "app\\x0d\\x0a[x] forged"
    assert text.printable("\x1b[2Jv1") == "\\x1b[2Jv1"
    assert text.printable("v1\u202egpj") == "v1\\u202egpj"
    assert text.printable("a\\x0db") == "a\\\\x0db"
    assert text.printable("acme/app:v1.2-é") == "acme/app:v1.2-é"


def test_long_names_are_cut_and_marked() -> None:
    """A tag or repository over the registries' limits is cut to the limit,
    ending in the cut mark."""
    tag = text.tag("t" * 1000)
    assert len(tag) == text.MAX_TAG and tag.endswith(text.CUT)
    assert text.repository("r" * 255) == "r" * 255
    assert len(text.repository("r" * 256)) == 255


@given(st.text())
def test_printable_never_leaves_a_control_character(value: str) -> None:
    """Whatever the input, the result has no character a terminal or a log
    reader would act on."""
    shown = text.printable(value)
    assert not [c for c in shown if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs"}]
