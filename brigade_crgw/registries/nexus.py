"""Sonatype Nexus Repository 3 webhooks.

``X-Nexus-Webhook-Id`` names the event (``rm:repository:component``,
``rm:repository:asset``...) and the body's ``action`` is ``CREATED``,
``UPDATED`` or ``DELETED``. A docker *component* is an image tag
(``name``:``version``): created or updated (the tag pushed again) it is an
image push, deleted an image delete. Asset events (every layer and manifest
file) and other formats keep their own words, ``<format>_<action>`` and
``<format>_asset_<action>``, so that one push makes one build.
"""

from __future__ import annotations

from brigade_crgw.events import IMAGE_DELETE, IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    Obj,
    PayloadError,
    header,
    join,
    timestamp,
    word,
)

KIND = "nexus"

_DOCKER_ACTIONS = {"CREATED": IMAGE_PUSH, "UPDATED": IMAGE_PUSH, "DELETED": IMAGE_DELETE}


def looks_like(doc: object) -> bool:
    """A ``repositoryName`` with a ``component`` or an ``asset``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("repositoryName"), str)
        and (isinstance(doc.get("component"), dict) or isinstance(doc.get("asset"), dict))
    )


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode one event; the delivery id is ``X-Nexus-Webhook-Delivery``.

    :raises PayloadError: for a body that is none of Nexus's events, or has
        fields of the wrong type.
    """
    root = Obj.root(doc)
    action = root.text("action")
    repository = ""
    tag = ""
    if root.has("component"):
        component = root.obj("component")
        fmt = component.text("format")
        repository = join(component.text("group"), component.text("name"))
        tag = component.text("version")
        if fmt == "docker" and action in _DOCKER_ACTIONS:
            kind = _DOCKER_ACTIONS[action]
        else:
            kind = word(f"{fmt or 'component'}_{action}")
    elif root.has("asset"):
        asset = root.obj("asset")
        repository = asset.text("name")
        kind = word(f"{asset.text('format') or 'unknown'}_asset_{action}")
    elif root.has("repository"):  # rm:repository: a repository was configured
        repository = root.obj("repository").text("name")
        kind = word(f"repository_{action}")
    elif root.has("audit"):
        kind = "audit"
    else:
        raise PayloadError("component, asset: missing; not a Nexus webhook")
    event = ImageEvent(
        registry=KIND,
        action=kind,
        repository=repository,
        tag=tag,
        pusher=root.text("initiator").partition("/")[0],  # "user/ip"
        timestamp=timestamp(root.raw("timestamp")),
        delivery_id=header(headers, "x-nexus-webhook-delivery"),
        payload=body,
    )
    return Delivery(KIND, (event,))
