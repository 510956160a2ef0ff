"""The CloudEvents 1.0 envelope, in structured and in binary mode.

Several registries speak CloudEvents (Harbor 2.8+, ACR through Event Grid,
Zot); this module only reads the envelope, and the registry that claims an
event's ``type`` reads its ``data``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime

import attr

from brigade_crgw.registries._common import (
    Headers,
    Obj,
    PayloadError,
    compact,
    header,
    parse_json,
    timestamp,
)

_CONTEXT = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "data", "data_base64"}
)


@attr.s(frozen=True, auto_attribs=True)
class CloudEvent:
    """One CloudEvent's context attributes and data.

    :param extensions: the other string attributes (Harbor's ``operator``...).
    :param payload: the bytes a build carries for this event.
    """

    id: str
    source: str
    type: str
    time: datetime | None
    data: object
    extensions: Mapping[str, str]
    payload: bytes

    @property
    def delivery_id(self) -> str:
        """``source#id``: the spec makes the pair unique, and a redelivery
        repeats it."""
        if not self.id:
            return ""
        return f"{self.source}#{self.id}"

    def data_obj(self) -> Obj:
        """``data`` as an object; empty when it is anything else."""
        if isinstance(self.data, dict):
            return Obj(self.data, "data")
        return Obj({}, "data")


def is_binary(headers: Headers) -> bool:
    """Whether the request is a binary-mode CloudEvent (attributes in
    ``ce-`` headers, data in the body)."""
    return "ce-specversion" in headers and "ce-type" in headers


def looks_structured(doc: object) -> bool:
    """Whether a parsed body is a structured CloudEvent or a batch of them."""
    if isinstance(doc, list):
        return bool(doc) and isinstance(doc[0], dict) and "specversion" in doc[0]
    return isinstance(doc, dict) and "specversion" in doc and "type" in doc


def structured(event: Obj, payload: bytes) -> CloudEvent:
    """Read a structured-mode CloudEvent.

    :raises PayloadError: when ``type`` is missing or an attribute is not a
        string.
    """
    ce_type = event.text("type")
    if not ce_type:
        raise PayloadError(f"{event.at('type')}: missing")
    data = event.raw("data")
    if data is None and event.has("data_base64"):
        data = _json_or_none(_unbase64(event.text("data_base64")))
    extensions = {
        key: event.loose(key)
        for key, value in event.data.items()
        if key not in _CONTEXT and isinstance(value, str)
    }
    return CloudEvent(
        id=event.text("id"),
        source=event.text("source"),
        type=ce_type,
        time=timestamp(event.raw("time")),
        data=data,
        extensions=extensions,
        payload=payload,
    )


def binary(body: bytes, headers: Headers) -> CloudEvent:
    """Read a binary-mode CloudEvent: attributes from ``ce-*`` headers.

    The body is the data; JSON when it parses, else no data, since the
    attributes alone still say what happened.
    """
    extensions = {
        name[3:]: header(headers, name)
        for name in headers
        if name.startswith("ce-") and name[3:] not in _CONTEXT
    }
    return CloudEvent(
        id=header(headers, "ce-id"),
        source=header(headers, "ce-source"),
        type=header(headers, "ce-type"),
        time=timestamp(header(headers, "ce-time")),
        data=_json_or_none(body),
        extensions=extensions,
        payload=body,
    )


def _unbase64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _json_or_none(raw: bytes) -> object:
    if not raw:
        return None
    try:
        return parse_json(raw, "data")
    except PayloadError:
        return None


def envelopes(doc: object, body: bytes) -> list[CloudEvent]:
    """The structured CloudEvents in a parsed body: one object, or a batch
    (JSON array) whose events each carry their own JSON as payload."""
    if isinstance(doc, list):
        return [
            structured(Obj.root(item, f"[{index}]"), compact(item))
            for index, item in enumerate(doc)
        ]
    return [structured(Obj.root(doc), body)]
