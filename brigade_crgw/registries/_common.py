"""What every registry decoder shares: the delivery, the error, careful JSON.

Webhook bodies come from the network, so nothing here trusts a value's type:
:class:`Obj` reads a JSON object field by field and turns a wrong type into a
:class:`PayloadError` naming the field, and the parsing helpers turn every
other kind of bad input into one too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

import attr

from brigade_crgw.events import ImageEvent

#: Request headers: lower-cased names mapped to their first value.
Headers = Mapping[str, str]

# Real payloads nest less than ten levels; a much deeper document is an
# attack on the recursive encoders and decoders, not a registry.
MAX_DEPTH = 64


class PayloadError(Exception):
    """The body cannot be decoded.

    ``str(exc)`` is a short reason that is safe to show the sender.
    """


@attr.s(frozen=True, auto_attribs=True)
class Delivery:
    """Everything one webhook request said.

    :param registry: the name of the registry that sent it (``acr``, ...),
        ``cloudevents`` for CloudEvents of several or unknown senders, or
        ``generic`` when no registry recognised the body.
    :param events: every event in the delivery, pushes and other events alike.
    :param reply: a handshake answer to send back instead of making builds
        (Event Grid's subscription validation), else ``None``.
    """

    registry: str
    events: tuple[ImageEvent, ...]
    reply: dict[str, str] | None = None


def _reject_constant(name: str) -> object:
    # Python's json accepts NaN and Infinity; JSON does not.
    raise ValueError(f"{name} is not JSON")


# No field of any registry's payload needs a longer integer; a longer one
# can only overflow whoever does arithmetic with it (a timestamp).  A float
# past the largest is infinity, which every reader already takes as no time.
MAX_DIGITS = 30


class _TooLarge(ValueError):
    """A number in the body is beyond what any payload needs."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _TooLarge(text)
    return int(text)


def parse_json(body: bytes, what: str = "body") -> object:
    """Parse JSON text the way a careful server must.

    :param body: the bytes received.
    :param what: how to name them in an error message.
    :raises PayloadError: for bytes that are not UTF-8, not JSON, or JSON
        nested more than :data:`MAX_DEPTH` levels.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(f"{what} is not UTF-8") from None
    try:
        doc = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_bounded_int,
        )
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply") from None
    except _TooLarge:
        raise PayloadError(
            f"{what} holds a number too large (an integer of over {MAX_DIGITS} digits)"
        ) from None
    except ValueError:  # JSONDecodeError
        raise PayloadError(f"{what} is not JSON") from None
    _check_depth(doc, what)
    return doc


def _check_depth(doc: object, what: str) -> None:
    # Iterative, so that checking cannot itself overflow the stack.
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: list[object] = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise PayloadError(f"{what} is nested too deeply")
        stack.extend((child, depth + 1) for child in children)


def compact(value: object) -> bytes:
    """One event's own JSON, for deliveries that carry several events.

    ASCII escapes keep any lone surrogate the sender wrote encodable.
    """
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def _unicode(value: str, path: str) -> str:
    # JSON escapes can smuggle lone surrogates into a str; they would break
    # whoever encodes the value later (labels, Secrets), so refuse them here.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError(f"{path}: not valid Unicode") from None
    return value


@attr.s(frozen=True, auto_attribs=True)
class Obj:
    """A JSON object read field by field, with type checks.

    A missing field or ``null`` reads as empty; a present field of the wrong
    type raises :class:`PayloadError` naming its path.
    """

    data: Mapping[str, object]
    path: str = ""

    @classmethod
    def root(cls, doc: object, path: str = "") -> Obj:
        """Wrap a parsed document that must be an object.

        :raises PayloadError: when it is not.
        """
        if not isinstance(doc, dict):
            raise PayloadError(f"{path or 'body'}: expected a JSON object")
        return cls(doc, path)

    def at(self, key: str) -> str:
        """The path of a field, for messages."""
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """Whether the field is present and not ``null``."""
        return self.data.get(key) is not None

    def raw(self, key: str) -> object:
        """The field as parsed, unchecked (``None`` when missing)."""
        return self.data.get(key)

    def text(self, key: str) -> str:
        """A string field, ``""`` when missing."""
        value = self.data.get(key)
        if value is None:
            return ""
        if isinstance(value, str):
            return _unicode(value, self.at(key))
        raise PayloadError(f"{self.at(key)}: expected a string")

    def loose(self, key: str) -> str:
        """A string field where other types are possible and mean nothing:
        ``""`` unless it is a string."""
        value = self.data.get(key)
        if isinstance(value, str):
            return _unicode(value, self.at(key))
        return ""

    def obj(self, key: str) -> Obj:
        """An object field, empty when missing."""
        value = self.data.get(key)
        if value is None:
            return Obj({}, self.at(key))
        if isinstance(value, dict):
            return Obj(value, self.at(key))
        raise PayloadError(f"{self.at(key)}: expected an object")

    def objs(self, key: str) -> list[Obj]:
        """A list-of-objects field, empty when missing."""
        return [
            Obj.root(item, f"{self.at(key)}[{index}]") for index, item in enumerate(self.array(key))
        ]

    def texts(self, key: str) -> list[str]:
        """A list-of-strings field, empty when missing."""
        result = []
        for index, item in enumerate(self.array(key)):
            path = f"{self.at(key)}[{index}]"
            if not isinstance(item, str):
                raise PayloadError(f"{path}: expected a string")
            result.append(_unicode(item, path))
        return result

    def names(self, key: str) -> list[str]:
        """The member names of an object field, empty when missing."""
        field = self.obj(key)
        return [_unicode(name, field.path) for name in field.data]

    def array(self, key: str) -> list[object]:
        """A list field, unchecked items, empty when missing."""
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        raise PayloadError(f"{self.at(key)}: expected a list")


def header(headers: Headers, name: str) -> str:
    """A request header's value, ``""`` when absent.

    :raises PayloadError: for a value that is not valid Unicode.
    """
    return _unicode(headers.get(name, ""), name)


def lower_names(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers keyed by lower-cased name, as :data:`Headers` are:
    HTTP header names are case-insensitive, values are kept as sent."""
    return {name.lower(): value for name, value in headers.items()}


def media_type(headers: Headers) -> str:
    """The request's content type without parameters, lower-cased
    (``""`` when there is none).

    :param headers: lower-cased names (:func:`lower_names`).
    """
    return headers.get("content-type", "").split(";")[0].strip().lower()


# Epoch numbers above this are milliseconds: as seconds they would lie past
# the year 5000.
_MILLISECONDS = 1e11


def timestamp(value: object) -> datetime | None:
    """A timezone-aware time from ISO 8601 text or epoch seconds.

    Anything else, and text without a timezone, is ``None``: a guessed
    timezone would be a wrong time.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            seconds = value / 1000 if value > _MILLISECONDS else value
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


def first_time(*values: object) -> datetime | None:
    """The first of several candidate times (text, numbers or datetimes)
    that parses."""
    for value in values:
        parsed = timestamp(value)
        if parsed is not None:
            return parsed
    return None


def url_host(url: str) -> str:
    """The ``host[:port]`` of a URL, ``""`` when there is none."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return ""
    return netloc.rpartition("@")[2]


def split_reference(ref: str) -> tuple[str, str, str, str]:
    """Split an image reference into host, repository, tag and digest.

    ``eu.gcr.io/proj/app:v1@sha256:..`` gives ``("eu.gcr.io", "proj/app",
    "v1", "sha256:..")``. As in Docker, the first path component is a host
    only when it has a dot or a port, or is ``localhost``.
    """
    name, _, digest = ref.partition("@")
    tag = ""
    head, colon, tail = name.rpartition(":")
    if colon and "/" not in tail:
        name, tag = head, tail
    host = ""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, name = first, rest
    return host, name, tag, digest


def join(*parts: str) -> str:
    """Join the non-empty parts of a repository name with ``/``."""
    return "/".join(part for part in parts if part)


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def word(name: str) -> str:
    """A registry's own name for an event as a lower-case action word.

    ``ImagePushed`` → ``image_pushed``, ``SCANNING_COMPLETED`` →
    ``scanning_completed``, ``harbor.scan.failed`` → ``harbor_scan_failed``;
    a name with no letters or digits is ``unknown``, since an event always
    has an action.
    """
    return _NOT_WORD.sub("_", _CAMEL.sub("_", name).lower()).strip("_") or "unknown"


def digest_of(hex_or_digest: str) -> str:
    """A ``sha256:`` digest from a bare SHA-256 hex string, else ``""``."""
    if hex_or_digest.startswith("sha256:"):
        return hex_or_digest
    if len(hex_or_digest) == 64 and all(c in "0123456789abcdef" for c in hex_or_digest):
        return "sha256:" + hex_or_digest
    return ""
