"""Docker Trusted Registry / Mirantis Secure Registry webhooks.

The body is ``{"type": "TAG_PUSH", "createdAt": ..., "contents": {...}}``.
``TAG_PUSH`` is the image push; ``MANIFEST_PUSH`` keeps its own word, since
a tagged push can raise both and one push must make one build. The shape of
``contents`` varies with the type, so outside the tag events its fields are
read leniently.
"""

from __future__ import annotations

from brigade_crgw.events import CHART_DELETE, CHART_PUSH, IMAGE_DELETE, IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    Obj,
    PayloadError,
    first_time,
    join,
    word,
)
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "dtr"

_ACTIONS = {
    "TAG_PUSH": IMAGE_PUSH,
    "TAG_DELETE": IMAGE_DELETE,
    "CHART_PUSH": CHART_PUSH,
    "CHART_DELETE": CHART_DELETE,
}


def looks_like(doc: object) -> bool:
    """A ``type`` with ``contents`` and DTR's ``createdAt`` or ``location``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("type"), str)
        and isinstance(doc.get("contents"), dict)
        and ("createdAt" in doc or "location" in doc)
    )


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode one event.

    :raises PayloadError: for a body without ``type``, or tag events with
        fields of the wrong type.
    """
    root = Obj.root(doc)
    dtr_type = root.text("type")
    if not dtr_type:
        raise PayloadError("type: missing; not a DTR webhook")
    contents = root.obj("contents")
    read = contents.text if dtr_type.startswith("TAG_") else contents.loose
    event = ImageEvent(
        registry=NAME,
        action=_ACTIONS.get(dtr_type) or word(dtr_type),
        repository=join(read("namespace"), read("repository")),
        tag=read("tag"),
        digest=read("digest"),
        pusher=read("author"),
        timestamp=first_time(contents.raw("pushedAt"), root.raw("createdAt")),
        payload=body,
    )
    return Delivery(NAME, (event,))


SETUP = Setup(
    title="Mirantis Secure Registry (Docker Trusted Registry)",
    where="the repository's Webhooks tab: New Webhook",
    url="<token-url>",
    placement="in the URL (?token=)",
    events="Tag pushed to repository (TAG_PUSH)",
    content_type="application/json, which the registry sends",
    auth="query-token",
    command="curl -u '<user>:<access token>' -X POST 'https://<msr>/api/v0/webhooks' \\\n"
    "  -H 'Content-Type: application/json' -d '{\n"
    '    "type": "TAG_PUSH", "key": "<namespace>/<repository>", "endpoint": "<token-url>"}\'',
    language="shell",
    sample="dtr.json",
    headers={"Content-Type": "application/json"},
)


REGISTRY = Registry(name=NAME, setup=SETUP, decode=decode, looks_like=looks_like)
