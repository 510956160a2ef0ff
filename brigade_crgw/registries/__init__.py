"""Container-registry webhook formats, decoded into :class:`ImageEvent` s.

:func:`decode` is the one entry point: it finds the registry from the
headers and the body's shape (or takes it from ``?registry=``) and hands the
body to that registry's module. Each module knows one registry and nothing
of Kubernetes or HTTP, and describes itself in one record,
``REGISTRY = Registry(...)`` (see :class:`Registry`).

:data:`REGISTRIES` is the detection order. Shapes overlap, so first a header
that only one sender sets decides (if the body could be that sender's), in
this order; then shapes are tried in this order, from the most specific to
the loosest (ACR's native webhook is one CNCF Distribution event, which many
bodies resemble, so it comes late). A JSON body that nothing recognises is a
``generic`` image push, as Brigade v1 made a build for any body.

CloudEvents are an envelope, not a sender: the package reads the envelope
and gives each event to the first registry whose ``cloudevent_types``
claims its type, and the rest to ``cloudevents``.

Adding a registry is one module that defines its ``REGISTRY`` and one line
in :data:`REGISTRIES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from brigade_crgw.events import ImageEvent
from brigade_crgw.registries import (
    acr,
    alibaba,
    cloudevents,
    distribution,
    dockerhub,
    dtr,
    ecr,
    gar,
    generic,
    github,
    harbor,
    jfrog,
    nexus,
    quay,
)
from brigade_crgw.registries._cloudevent import (
    CloudEvent,
    binary,
    envelopes,
    is_binary,
    looks_structured,
)
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    PayloadError,
    lower_names,
    media_type,
    parse_json,
)
from brigade_crgw.registries._registry import Registry

__all__ = [
    "NAMES",
    "REGISTRIES",
    "Delivery",
    "PayloadError",
    "Registry",
    "decode",
    "detect",
    "lower_names",
    "media_type",
    "parse_json",
]

#: Every registry, in detection order; ``generic`` matches anything, so last.
REGISTRIES: tuple[Registry, ...] = (
    cloudevents.REGISTRY,
    harbor.REGISTRY,
    distribution.REGISTRY,
    gar.REGISTRY,
    ecr.REGISTRY,
    jfrog.REGISTRY,
    nexus.REGISTRY,
    github.REGISTRY,
    alibaba.REGISTRY,
    dockerhub.REGISTRY,
    dtr.REGISTRY,
    quay.REGISTRY,
    acr.REGISTRY,
    generic.REGISTRY,
)

#: Every name ``?registry=`` accepts.
NAMES: tuple[str, ...] = tuple(registry.name for registry in REGISTRIES)

_BY_NAME: Mapping[str, Registry] = {registry.name: registry for registry in REGISTRIES}


def detect(doc: object, headers: Headers) -> Registry:
    """The registry that sent a parsed body.

    :param doc: the parsed JSON body.
    :param headers: lower-cased header names mapped to their first value.
    :returns: one of :data:`REGISTRIES`; ``generic`` when nothing else matches.
    """
    for registry in REGISTRIES:
        if registry.header_hint(doc, headers):
            return registry
    return next(registry for registry in REGISTRIES if registry.looks_like(doc))


def decode(body: bytes, headers: Mapping[str, str], registry: str | None = None) -> Delivery:
    """Decode one webhook request.

    :param body: the request body.
    :param headers: header names (any case) mapped to their first value.
    :param registry: the name given by ``?registry=``, which overrides
        detection; ``None`` or ``""`` to detect.
    :returns: the delivery, with every event it holds.
    :raises PayloadError: for an unknown ``registry``, a body that is not
        UTF-8 JSON (an object or array; binary CloudEvents excepted), or a
        recognised format whose fields have the wrong types. Nothing else is
        raised, whatever the bytes and headers.
    """
    headers = lower_names(headers)
    named = _named(registry)
    # ``?registry=cloudevents`` names the envelope, not a sender: the types
    # still choose who reads each event.
    by_type = named is None or named is cloudevents.REGISTRY
    if by_type and is_binary(headers):
        event = binary(body, headers)
        if not event.type:
            raise PayloadError("ce-type: empty")
        return _cloudevents([event], None)
    doc = parse_json(body)
    if not isinstance(doc, (dict, list)):
        raise PayloadError("body is not a JSON object or array")
    chosen = named or detect(doc, headers)
    if chosen.decode is None or (chosen.from_cloudevent and looks_structured(doc)):
        return _cloudevents(envelopes(doc, body), None if by_type else chosen)
    return chosen.decode(doc, body, headers)


def _named(registry: str | None) -> Registry | None:
    name = (registry or "").strip().lower()
    if not name:
        return None
    if name not in _BY_NAME:
        raise PayloadError(f"unknown registry {name[:40]!r}; accepted: {', '.join(NAMES)}")
    return _BY_NAME[name]


def _cloudevents(ces: Iterable[CloudEvent], reader: Registry | None) -> Delivery:
    """Each CloudEvent read by ``reader``, or else by the registry that claims
    its type; the delivery is that registry's when all are one's."""
    events: list[ImageEvent] = []
    senders = set()
    for ce in ces:
        sender = reader or _claimant(ce.type)
        senders.add(sender.name)
        if sender.from_cloudevent is None:  # a record without its reader
            raise PayloadError(f"{sender.name} does not read CloudEvents")
        events.extend(sender.from_cloudevent(ce))
    name = senders.pop() if len(senders) == 1 else cloudevents.NAME
    return Delivery(name, tuple(events))


def _claimant(ce_type: str) -> Registry:
    return next(
        (registry for registry in REGISTRIES if registry.cloudevent_types(ce_type)),
        cloudevents.REGISTRY,
    )
