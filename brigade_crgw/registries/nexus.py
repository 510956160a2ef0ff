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
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "nexus"

_DOCKER_ACTIONS = {"CREATED": IMAGE_PUSH, "UPDATED": IMAGE_PUSH, "DELETED": IMAGE_DELETE}


def looks_like(doc: object) -> bool:
    """A ``repositoryName`` with a ``component`` or an ``asset``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("repositoryName"), str)
        and (isinstance(doc.get("component"), dict) or isinstance(doc.get("asset"), dict))
    )


def sent_by_nexus(doc: object, headers: Headers) -> bool:
    """``X-Nexus-Webhook-Id`` on a JSON object: every Nexus event is one."""
    return "x-nexus-webhook-id" in headers and isinstance(doc, dict)


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode one event; the delivery id is ``X-Nexus-Webhook-Delivery``.

    :raises PayloadError: for a body that is none of Nexus's events, or has
        fields of the wrong type.
    """
    root = Obj.root(doc)
    nexus_action = root.text("action")
    repository = ""
    tag = ""
    if root.has("component"):
        component = root.obj("component")
        fmt = component.text("format")
        repository = join(component.text("group"), component.text("name"))
        tag = component.text("version")
        if fmt == "docker" and nexus_action in _DOCKER_ACTIONS:
            action = _DOCKER_ACTIONS[nexus_action]
        else:
            action = word(f"{fmt or 'component'}_{nexus_action}")
    elif root.has("asset"):
        asset = root.obj("asset")
        repository = asset.text("name")
        action = word(f"{asset.text('format') or 'unknown'}_asset_{nexus_action}")
    elif root.has("repository"):  # rm:repository: a repository was configured
        repository = root.obj("repository").text("name")
        action = word(f"repository_{nexus_action}")
    elif root.has("audit"):
        action = "audit"
    else:
        raise PayloadError("component, asset: missing; not a Nexus webhook")
    event = ImageEvent(
        registry=NAME,
        action=action,
        repository=repository,
        tag=tag,
        pusher=root.text("initiator").partition("/")[0],  # "user/ip"
        timestamp=timestamp(root.raw("timestamp")),
        delivery_id=header(headers, "x-nexus-webhook-delivery"),
        payload=body,
    )
    return Delivery(NAME, (event,))


SETUP = Setup(
    title="Sonatype Nexus Repository 3",
    where="Administration, System, Capabilities: Create capability, of type "
    "Webhook: Repository, for the Docker repository",
    url="<url>",
    placement="Secret Key: <token> (Nexus signs each body with it: "
    "X-Nexus-Webhook-Signature, HMAC-SHA1)",
    events="Event Types: component",
    content_type="application/json, which Nexus sends",
    auth="nexus-signature",
    sample="nexus.json",
    headers={
        "Content-Type": "application/json; charset=UTF-8",
        "X-Nexus-Webhook-Id": "rm:repository:component",
        "X-Nexus-Webhook-Delivery": "7f4a6dde-5c68-4999-bcc0-a62f3fb8ae48",
    },
)


REGISTRY = Registry(
    name=NAME, setup=SETUP, decode=decode, looks_like=looks_like, header_hint=sent_by_nexus
)
