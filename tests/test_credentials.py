"""The store's credential header: asked of the client rarely, renewed on time."""

from __future__ import annotations

from typing import Any

from brigade_crgw.kubernetes.store import _Credentials


class Client:
    """An ApiClient whose refresh hook hands out a new token each time."""

    asked = 0

    def update_params_for_auth(self, headers: dict[str, str], *args: Any) -> None:
        self.asked += 1
        headers["authorization"] = f"Bearer token-{self.asked}"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_header_is_reused_then_renewed() -> None:
    """Within ``seconds`` the same header is sent without asking the client;
    after it, the client is asked again and its new token is used."""
    api, clock = Client(), Clock()
    credentials = _Credentials(api, 10.0, clock)  # type: ignore[arg-type]
    assert credentials.header() == {"authorization": "Bearer token-1"}
    clock.now = 9.9
    assert credentials.header() == {"authorization": "Bearer token-1"}
    assert api.asked == 1
    clock.now = 10.0
    assert credentials.header() == {"authorization": "Bearer token-2"}


def test_forget_asks_again_at_once() -> None:
    """After a 401 (forget), the next call asks the client straight away."""
    api, clock = Client(), Clock()
    credentials = _Credentials(api, 10.0, clock)  # type: ignore[arg-type]
    credentials.header()
    credentials.forget()
    assert credentials.header() == {"authorization": "Bearer token-2"}


def test_certificate_auth_sends_no_header() -> None:
    """A client that authenticates with a certificate adds no header."""

    class CertificateClient:
        def update_params_for_auth(self, headers: dict[str, str], *args: Any) -> None:
            pass

    assert _Credentials(CertificateClient(), 10.0, Clock()).header() == {}  # type: ignore[arg-type]
