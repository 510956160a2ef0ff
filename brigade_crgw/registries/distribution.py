"""CNCF Distribution (the registry:2/3 image, GitLab's registry) notifications.

One POST holds an envelope ``{"events": [...]}`` with content type
``application/vnd.docker.distribution.events.v1+json`` (v2+json in 3.x), and
one image push produces an event per blob as well as one per manifest. Only a
manifest push is an image push; blobs get ``blob_push``/``blob_pull`` so that
they never make builds. A push by digest has no ``target.tag``.
"""

from __future__ import annotations

from brigade_crgw.events import IMAGE_DELETE, IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    Obj,
    PayloadError,
    compact,
    media_type,
    timestamp,
    url_host,
    word,
)
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "distribution"

# application/vnd.docker.distribution.events.v1+json, v2+json...
EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events."

MANIFEST_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.artifact.manifest.v1+json",
    }
)


def looks_like(doc: object) -> bool:
    """An envelope: ``events`` holding event objects (or nothing)."""
    if not isinstance(doc, dict):
        return False
    events = doc.get("events")
    if not isinstance(events, list):
        return False
    return not events or (isinstance(events[0], dict) and "action" in events[0])


def looks_like_event(doc: object) -> bool:
    """One event without its envelope: an ``action`` and a ``target``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("action"), str)
        and isinstance(doc.get("target"), dict)
    )


def sent_as_distribution(doc: object, headers: Headers) -> bool:
    """Distribution's content type on an envelope or on one bare event (which
    is otherwise read as ACR's, having its shape)."""
    return media_type(headers).startswith(EVENTS_MEDIA_TYPE) and (
        looks_like(doc) or looks_like_event(doc)
    )


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode an envelope, one event per entry, each carrying its own JSON.

    A bare event object (what the envelope holds) is accepted too, carrying
    the body.

    :raises PayloadError: for an object with neither ``events`` nor
        ``action``, or fields of the wrong type.
    """
    root = Obj.root(doc)
    if not root.has("events") and root.has("action"):
        return Delivery(NAME, (_event(root, body),))
    if not root.has("events"):
        raise PayloadError("events: missing; not a Distribution notification")
    items = root.array("events")
    events = root.objs("events")
    return Delivery(
        NAME, tuple(_event(event, compact(item)) for event, item in zip(events, items, strict=True))
    )


def _event(event: Obj, payload: bytes) -> ImageEvent:
    action = event.text("action")
    if not action:
        raise PayloadError(f"{event.at('action')}: missing")
    target = event.obj("target")
    request = event.obj("request")
    return ImageEvent(
        registry=NAME,
        action=_action(action, target),
        repository=target.text("repository"),
        host=request.text("host") or url_host(target.text("url")),
        tag=target.text("tag"),
        digest=target.text("digest"),
        media_type=target.text("mediaType"),
        pusher=event.obj("actor").text("name"),
        timestamp=timestamp(event.raw("timestamp")),
        delivery_id=event.text("id"),
        payload=payload,
    )


def _action(action: str, target: Obj) -> str:
    media = target.text("mediaType")
    if media:
        manifest = media in MANIFEST_MEDIA_TYPES
    else:
        # Delete events carry no media type; the URL still tells a manifest.
        manifest = "/manifests/" in target.text("url") or action == "delete"
    if action == "push":
        return IMAGE_PUSH if manifest else "blob_push"
    if action == "pull":
        return "pull" if manifest else "blob_pull"
    if action == "delete":
        return IMAGE_DELETE if manifest else "blob_delete"
    return word(action)


SETUP = Setup(
    title="CNCF Distribution (registry:2, registry:3, GitLab's container registry)",
    where="the notifications section of the registry's configuration file "
    "(config.yml); restart the registry after changing it",
    url="<url>",
    placement="in the endpoint's headers: Authorization: [Bearer <token>]",
    events="none to choose: every push, pull and delete is sent; only a manifest "
    "push makes a build (ignoring pulls saves the traffic)",
    content_type="application/vnd.docker.distribution.events.v1+json "
    "(v2+json from 3.0), which the registry sends",
    auth="bearer",
    command="notifications:\n"
    "  endpoints:\n"
    "    - name: brigade\n"
    "      url: <url>\n"
    "      headers:\n"
    "        Authorization: [Bearer <token>]\n"
    "      timeout: 5s\n"
    "      threshold: 5\n"
    "      backoff: 10s\n"
    "      ignore:\n"
    "        actions: [pull]",
    language="yaml",
    sample="distribution.json",
    headers={"Content-Type": "application/vnd.docker.distribution.events.v2+json"},
)


REGISTRY = Registry(
    name=NAME, setup=SETUP, decode=decode, looks_like=looks_like, header_hint=sent_as_distribution
)
