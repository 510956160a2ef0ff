"""Container-registry webhook formats, decoded into :class:`ImageEvent` s.

:func:`decode` is the one entry point: it finds the format from the headers
and the body's shape (or takes it from ``?registry=``) and hands the body to
that format's module. Each module knows one registry and nothing of
Kubernetes or HTTP.

Detection order matters, because shapes overlap: a header that only one
sender sets decides first, if the body could be that sender's; then shapes
are tried from the most specific to the loosest (ACR's native webhook is one
CNCF Distribution event, which many bodies resemble, so it comes last). A
JSON body that nothing recognises is a ``generic`` image push, as Brigade v1
made a build for any body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
from brigade_crgw.registries._cloudevent import is_binary, looks_structured
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    PayloadError,
    media_type,
    parse_json,
)

__all__ = ["KINDS", "Delivery", "PayloadError", "decode", "detect"]

_Decoder = Callable[[object, bytes, Headers], Delivery]

_DECODERS: Mapping[str, _Decoder] = {
    acr.KIND: acr.decode,
    alibaba.KIND: alibaba.decode,
    cloudevents.KIND: cloudevents.decode,
    distribution.KIND: distribution.decode,
    dockerhub.KIND: dockerhub.decode,
    dtr.KIND: dtr.decode,
    ecr.KIND: ecr.decode,
    gar.KIND: gar.decode,
    github.KIND: github.decode,
    harbor.KIND: harbor.decode,
    jfrog.KIND: jfrog.decode,
    nexus.KIND: nexus.decode,
    quay.KIND: quay.decode,
    generic.KIND: generic.decode,
}

#: Every registry kind ``?registry=`` accepts.
KINDS: tuple[str, ...] = tuple(_DECODERS)

# Most specific shape first; see the module docstring.
_SHAPES: tuple[tuple[str, Callable[[object], bool]], ...] = (
    (cloudevents.KIND, cloudevents.looks_like),
    (harbor.KIND, harbor.looks_like),
    (distribution.KIND, distribution.looks_like),
    (gar.KIND, gar.looks_like),
    (ecr.KIND, ecr.looks_like),
    (jfrog.KIND, jfrog.looks_like),
    (nexus.KIND, nexus.looks_like),
    (github.KIND, github.looks_like),
    (alibaba.KIND, alibaba.looks_like),
    (dockerhub.KIND, dockerhub.looks_like),
    (dtr.KIND, dtr.looks_like),
    (quay.KIND, quay.looks_like),
    (acr.KIND, acr.looks_like),
)

_CLOUDEVENTS_TYPES = ("application/cloudevents+json", "application/cloudevents-batch+json")


def _header_hint(doc: object, headers: Headers) -> str | None:
    # A header that only one sender sets names the format, as long as the
    # body could be that format: a hint on a body of another shape (a proxy
    # or a test that sets a content type by habit) falls through to shapes.
    content_type = media_type(headers)
    if "x-github-event" in headers and isinstance(doc, dict):
        return github.KIND  # every GitHub event, ping included, is an object
    if "x-nexus-webhook-id" in headers and isinstance(doc, dict):
        return nexus.KIND
    if "x-jfrog-event-auth" in headers and jfrog.looks_like(doc):
        return jfrog.KIND
    if content_type.startswith("application/vnd.docker.distribution.events."):
        # A bare event, not in its envelope, is otherwise read as ACR's.
        if distribution.looks_like(doc) or distribution.looks_like_event(doc):
            return distribution.KIND
    if content_type in _CLOUDEVENTS_TYPES and looks_structured(doc):
        return cloudevents.KIND
    if "aeg-event-type" in headers or headers.get("user-agent", "").startswith(
        "AzureContainerRegistry/"
    ):
        # Event Grid also delivers CloudEvents, whose types are dispatched.
        if looks_structured(doc):
            return cloudevents.KIND
        if acr.looks_like(doc):
            return acr.KIND
    if "x-goog-pubsub-message-id" in headers and gar.looks_like(doc):
        return gar.KIND
    return None


def detect(doc: object, headers: Headers) -> str:
    """The registry kind that sent a parsed body.

    :param doc: the parsed JSON body.
    :param headers: lower-cased header names mapped to their first value.
    :returns: one of :data:`KINDS`; ``generic`` when nothing matches.
    """
    hint = _header_hint(doc, headers)
    if hint is not None:
        return hint
    for kind, looks_like in _SHAPES:
        if looks_like(doc):
            return kind
    return generic.KIND


def decode(body: bytes, headers: Mapping[str, str], registry: str | None = None) -> Delivery:
    """Decode one webhook request.

    :param body: the request body.
    :param headers: header names (lower-cased) mapped to their first value.
    :param registry: the kind named by ``?registry=``, which overrides
        detection; ``None`` or ``""`` to detect.
    :returns: the delivery, with every event it holds.
    :raises PayloadError: for an unknown ``registry``, a body that is not
        UTF-8 JSON (an object or array; binary CloudEvents excepted), or a
        recognised format whose fields have the wrong types. Nothing else is
        raised, whatever the bytes and headers.
    """
    headers = {name.lower(): value for name, value in headers.items()}
    kind = (registry or "").strip().lower()
    if kind and kind not in _DECODERS:
        raise PayloadError(f"unknown registry {kind[:40]!r}; accepted: {', '.join(KINDS)}")
    if kind in ("", cloudevents.KIND) and is_binary(headers):
        return cloudevents.decode_binary(body, headers)
    doc = parse_json(body)
    if not isinstance(doc, (dict, list)):
        raise PayloadError("body is not a JSON object or array")
    return _DECODERS[kind or detect(doc, headers)](doc, body, headers)
