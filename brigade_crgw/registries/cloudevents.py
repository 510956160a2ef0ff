"""CloudEvents 1.0 from any registry, in structured or binary mode.

Structured mode posts the event as JSON (``application/cloudevents+json``,
or a JSON array as ``application/cloudevents-batch+json``); binary mode puts
the attributes in ``ce-*`` headers and the data in the body. Harbor's and
ACR's types go to their own decoders; any other type whose words mean an
image push (``image.pushed``, ``image.updated``, ``artifact.pushed``,
``push``...) is an image push, with repository, tag and digest read from
``data`` where the usual names are (Zot's ``zotregistry.image.updated``
has ``name``, ``reference``, ``digest`` and ``mediaType``).
"""

from __future__ import annotations

import re

from brigade_crgw.events import CHART_DELETE, CHART_PUSH, IMAGE_DELETE, IMAGE_PUSH, ImageEvent
from brigade_crgw.registries import acr, harbor
from brigade_crgw.registries._cloudevent import (
    CloudEvent,
    binary,
    envelopes,
    looks_structured,
)
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    Obj,
    PayloadError,
    split_reference,
    word,
)

KIND = "cloudevents"

_PUSH = frozenset({"push", "pushed"})
_SUBJECTS = frozenset({"image", "artifact", "manifest", "tag", "chart"})
_CHANGED = frozenset({"updated", "created", "uploaded", "published"})
_DELETE = frozenset({"delete", "deleted", "removed"})
_FAILED = frozenset({"failed", "failure", "error"})
_TOKEN = re.compile(r"[^a-z0-9]+")


def looks_like(doc: object) -> bool:
    """A structured CloudEvent, or a batch of them."""
    return looks_structured(doc)


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode structured-mode CloudEvents.

    :raises PayloadError: for an event without ``type`` or with attributes
        of the wrong type.
    """
    return _dispatch(envelopes(doc, body))


def decode_binary(body: bytes, headers: Headers) -> Delivery:
    """Decode a binary-mode CloudEvent; the body need not be JSON.

    :raises PayloadError: for an empty ``ce-type``.
    """
    ce = binary(body, headers)
    if not ce.type:
        raise PayloadError("ce-type: empty")
    return _dispatch([ce])


def _dispatch(ces: list[CloudEvent]) -> Delivery:
    events: list[ImageEvent] = []
    kinds = set()
    for ce in ces:
        if acr.is_acr_type(ce.type):
            kinds.add(acr.KIND)
            events.append(acr.from_cloudevent(ce))
        elif harbor.is_harbor_type(ce.type):
            kinds.add(harbor.KIND)
            events.extend(harbor.from_cloudevent(ce))
        else:
            kinds.add(KIND)
            events.append(_event(ce))
    registry = kinds.pop() if len(kinds) == 1 else KIND
    return Delivery(registry, tuple(events))


def action(kind: str) -> str:
    """The action a CloudEvents type means, by its words."""
    tokens = set(_TOKEN.split(kind.lower()))
    if not tokens & _FAILED:
        chart = "chart" in tokens
        if tokens & _PUSH or (tokens & _SUBJECTS and tokens & _CHANGED):
            return CHART_PUSH if chart else IMAGE_PUSH
        if tokens & _DELETE:
            return CHART_DELETE if chart else IMAGE_DELETE
    # Else the type's last two words, less any version (``...packaged.0.1.0``).
    parts = [part for part in kind.split(".") if part and not part.isdigit()]
    return word("_".join(parts[-2:]))


def _event(ce: CloudEvent) -> ImageEvent:
    # ``data`` has no standard shape: read the usual names, leniently.
    data = ce.data_obj()
    host, ref_repository, ref_tag, ref_digest = split_reference(
        data.loose("image") or data.loose("imageName")
    )
    nested = data.raw("repository")
    repo = Obj(nested) if isinstance(nested, dict) else Obj({})
    reference = data.loose("reference")
    by_digest = reference.startswith("sha256:")
    return ImageEvent(
        registry=KIND,
        action=action(ce.type),
        repository=data.loose("repository")
        or data.loose("name")
        or data.loose("repo")
        or repo.loose("repo_full_name")
        or repo.loose("name")
        or ref_repository,
        host=host,
        tag=data.loose("tag") or ("" if by_digest else reference) or ref_tag,
        digest=data.loose("digest") or (reference if by_digest else "") or ref_digest,
        media_type=data.loose("mediaType") or data.loose("media_type"),
        pusher=data.loose("pusher")
        or data.loose("actor")
        or ce.extensions.get("operator", "")
        or ce.extensions.get("actor", ""),
        timestamp=ce.time,
        delivery_id=ce.delivery_id,
        payload=ce.payload,
    )
