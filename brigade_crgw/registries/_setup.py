"""How an operator points one registry at the gateway: the one source of the
text that ``brigade-crgw url`` prints and that the documentation shows on
each registry's page, and of the sample push that ``brigade-crgw send`` posts.

Each registry module writes a :class:`Setup` and hands it to its ``REGISTRY``
record, so ``REGISTRY.setup`` is always there.  Its text holds three
placeholders, which :meth:`Setup.render` fills in:

* ``<url>``: the project's webhook URL, without the token
  (``https://gateway.example.com/events/webhook/acme/app``);
* ``<token-url>``: the same URL with ``?token=<token>``;
* ``<token>``: one of the project's tokens.

Any other ``<…>`` (``<registry>``, ``<owner>``) is for the operator to fill
in.  Every field is plain text, with no markup, so that a terminal and a
documentation page can both show it.  To write a registry's page::

    from brigade_crgw.registries import REGISTRIES

    for registry in REGISTRIES:
        setup = registry.setup.render("https://gateway.example.com/events/webhook/acme/app")
        # One line each: setup.title, setup.where, setup.url, setup.placement,
        # setup.events, setup.content_type.
        # setup.command: a block in setup.language ("shell", "yaml" or
        # "json"), or "" when the registry has no command or API for it.
        # setup.notes: paragraphs.
        # setup.sample_body(): the sample push; setup.headers: its headers,
        # setup.auth: how the token travels (a method of
        # brigade_crgw.delivery.auth: "query-token", "bearer"...).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from urllib.parse import quote

import attr

#: The placeholders :meth:`Setup.render` fills in.
URL, TOKEN_URL, TOKEN = "<url>", "<token-url>", "<token>"


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Setup:
    """What to enter in one registry so that its pushes reach a project.

    :param title: the registry's own name (``Azure Container Registry``).
    :param where: where its webhook is configured (a page, a file, a CLI).
    :param url: what goes in its URL field: ``<url>`` or ``<token-url>``.
    :param placement: where the token goes, in words.
    :param events: which events to select.
    :param content_type: the content type to choose, or the one it sends.
    :param auth: how the token travels, as the gateway names the method
        that proved it (``query-token``, ``bearer``, ``jfrog-token``,
        ``github-signature``, ``nexus-signature``, ``signature``...).
    :param command: a command, API call or configuration block that does
        it, or empty.
    :param language: ``command``'s language: ``shell``, ``yaml`` or ``json``.
    :param notes: further paragraphs (another transport, a caveat).
    :param sample: the file, in this package's ``samples/``, of a push as
        the registry sends it.
    :param headers: the headers it is sent with, the token's aside.
    """

    title: str
    where: str
    url: str
    placement: str
    events: str
    content_type: str
    auth: str
    command: str = ""
    language: str = ""
    notes: tuple[str, ...] = ()
    sample: str
    headers: Mapping[str, str] = attr.ib(factory=dict)

    def render(self, url: str, token: str = "") -> Setup:
        """This setup with its placeholders filled in.

        :param url: the project's webhook URL, without a token.
        :param token: the token; without one, ``<token>`` stays.
        """
        token_url = f"{url}{'&' if '?' in url else '?'}token={quote(token, safe='') or TOKEN}"

        def fill(text: str) -> str:
            text = text.replace(TOKEN_URL, token_url).replace(URL, url)
            return text.replace(TOKEN, token) if token else text

        return attr.evolve(
            self,
            where=fill(self.where),
            url=fill(self.url),
            placement=fill(self.placement),
            events=fill(self.events),
            content_type=fill(self.content_type),
            command=fill(self.command),
            notes=tuple(fill(note) for note in self.notes),
        )

    def sample_body(self) -> bytes:
        """The sample push, as the registry sends it."""
        return (resources.files(__package__) / "samples" / self.sample).read_bytes()
