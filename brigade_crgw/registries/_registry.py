"""The record each registry module fills in: everything the package needs to
know about one registry, in one place."""

from __future__ import annotations

from collections.abc import Callable

import attr

from brigade_crgw.events import ImageEvent
from brigade_crgw.registries._cloudevent import CloudEvent
from brigade_crgw.registries._common import Delivery, Headers
from brigade_crgw.registries._setup import Setup

#: Reads a parsed body in a registry's own format: ``(doc, body, headers)``.
Decoder = Callable[[object, bytes, Headers], Delivery]
#: Reads one CloudEvent whose type a registry claims.
CloudEventReader = Callable[[CloudEvent], tuple[ImageEvent, ...]]


def never(*args: object) -> bool:
    """A predicate that holds for nothing: no hint, no shape, no types."""
    return False


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Registry:
    """One registry: its name, how to recognise its webhooks, how to read them.

    :param name: what ``?registry=`` names, and every event's ``registry``
        (``acr``, ``harbor``...).
    :param setup: how an operator points the registry at the gateway, and
        its sample push (``brigade-crgw url`` and ``send``, the docs' page).
    :param decode: reads a body in the registry's own format; ``None`` for a
        registry that only speaks CloudEvents.
    :param looks_like: whether a parsed body has this registry's shape.
        Shapes overlap, so the package tries them in its order.
    :param header_hint: whether a header that only this registry sends is
        present *and* the parsed body could be this registry's; checked for
        every registry before any shape.
    :param cloudevent_types: whether a CloudEvents ``type`` is this
        registry's; such events are read by ``from_cloudevent``, whatever
        transport brought them.
    :param from_cloudevent: reads one CloudEvent of this registry (needed
        with ``cloudevent_types``).
    """

    name: str
    setup: Setup
    decode: Decoder | None = None
    looks_like: Callable[[object], bool] = never
    header_hint: Callable[[object, Headers], bool] = never
    cloudevent_types: Callable[[str], bool] = never
    from_cloudevent: CloudEventReader | None = None
