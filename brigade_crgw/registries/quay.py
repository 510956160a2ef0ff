"""Quay (quay.io, Red Hat Quay) notifications.

The body never names its event: a URL is registered for one notification
kind. A repository push lists its tags in ``updated_tags`` (a list; the 2015
documentation showed a map of tag to image id), and each tag is one image
push carrying the whole body. Quay sends no id, so these events have none.
Build and vulnerability notifications are told apart by their fields.
"""

from __future__ import annotations

from brigade_crgw.events import IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import Delivery, Headers, Obj, PayloadError, split_reference
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "quay"


def looks_like(doc: object) -> bool:
    """A ``repository`` name with Quay's ``docker_url`` or ``updated_tags``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("repository"), str)
        and ("docker_url" in doc or "updated_tags" in doc)
    )


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode a notification: one image push per updated tag, or one event
    for anything else.

    :raises PayloadError: for a body without ``repository`` or with fields of
        the wrong type.
    """
    root = Obj.root(doc)
    repository = root.text("repository")
    if not repository:
        raise PayloadError("repository: missing; not a Quay notification")
    host = split_reference(root.text("docker_url"))[0]

    def event(action: str, tag: str = "") -> ImageEvent:
        return ImageEvent(
            registry=NAME,
            action=action,
            repository=repository,
            host=host,
            tag=tag,
            payload=body,
        )

    if root.has("updated_tags"):
        updated = root.raw("updated_tags")
        tags = (
            root.names("updated_tags") if isinstance(updated, dict) else root.texts("updated_tags")
        )
        return Delivery(NAME, tuple(event(IMAGE_PUSH, tag) for tag in tags) or (event(IMAGE_PUSH),))
    if root.has("build_id"):
        action = "build_failure" if root.has("error_message") else "build"
    elif root.has("vulnerability"):
        action = "vulnerability_found"
    else:
        action = "notification"
    return Delivery(NAME, (event(action),))


SETUP = Setup(
    title="Quay (quay.io, Red Hat Quay)",
    where="the repository's Settings: Create Notification, when Push to Repository, "
    "then issue a notification Webhook POST",
    url="<token-url>",
    placement="in the URL (?token=): Quay's webhook sends no custom header",
    events="Push to Repository (repo_push)",
    content_type="application/json, which Quay sends",
    auth="query-token",
    command="curl -X POST \\\n"
    "  'https://<quay>/api/v1/repository/<namespace>/<repository>/notification/' \\\n"
    "  -H 'Authorization: Bearer <quay OAuth token>' \\\n"
    "  -H 'Content-Type: application/json' -d '{\n"
    '    "event": "repo_push", "method": "webhook", "title": "brigade",\n'
    '    "config": {"url": "<token-url>"}, "eventConfig": {}}\'',
    language="shell",
    sample="quay.json",
    headers={"Content-Type": "application/json"},
)


REGISTRY = Registry(name=NAME, setup=SETUP, decode=decode, looks_like=looks_like)
