"""Google Artifact Registry and Container Registry, through Pub/Sub.

The registry publishes to the ``gcr`` topic and a push subscription POSTs
``{"message": {"data": <base64 JSON>, "messageId": ..., "publishTime": ...},
"subscription": ...}``. The data is ``{"action": "INSERT"|"DELETE",
"digest": "<host>/<path>@sha256:...", "tag": "<host>/<path>:<tag>"}``. A
subscription with payload unwrapping posts that data as the body, with the
message id in ``x-goog-pubsub-message-id`` when metadata is written.
"""

from __future__ import annotations

import base64
import binascii

from brigade_crgw.events import IMAGE_DELETE, IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    Obj,
    PayloadError,
    first_time,
    header,
    parse_json,
    split_reference,
    word,
)
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "gar"

_ACTIONS = {"INSERT": IMAGE_PUSH, "DELETE": IMAGE_DELETE}


def looks_like(doc: object) -> bool:
    """A Pub/Sub push envelope, or an unwrapped registry message."""
    if not isinstance(doc, dict):
        return False
    message = doc.get("message")
    if isinstance(message, dict):
        return "data" in message and ("subscription" in doc or "messageId" in message)
    action = doc.get("action")
    return isinstance(action, str) and action in _ACTIONS and ("digest" in doc or "tag" in doc)


def sent_by_pubsub(doc: object, headers: Headers) -> bool:
    """Pub/Sub's ``x-goog-pubsub-message-id`` on a registry message."""
    return "x-goog-pubsub-message-id" in headers and looks_like(doc)


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode one registry message.

    :raises PayloadError: for data that is not base64 or not JSON, a message
        without an action, or fields of the wrong type.
    """
    root = Obj.root(doc)
    if root.has("message"):
        message = root.obj("message")
        data = Obj.root(_unwrap(message.text("data")), "message.data")
        delivery_id = message.text("messageId") or message.text("message_id")
        time = first_time(message.raw("publishTime"), message.raw("publish_time"))
    else:
        data = root
        delivery_id = header(headers, "x-goog-pubsub-message-id")
        time = first_time(header(headers, "x-goog-pubsub-publish-time"))
    action = data.text("action")
    if not action:
        raise PayloadError(f"{data.at('action')}: missing; not an Artifact Registry message")
    tag_host, tag_repository, tag, _ = split_reference(data.text("tag"))
    host, repository, _, digest = split_reference(data.text("digest"))
    event = ImageEvent(
        registry=NAME,
        action=_ACTIONS.get(action) or word(action),
        repository=tag_repository or repository,
        host=tag_host or host,
        tag=tag,
        digest=digest,
        timestamp=time,
        delivery_id=delivery_id,
        payload=body,
    )
    return Delivery(NAME, (event,))


def _unwrap(data: str) -> object:
    if not data:
        raise PayloadError("message.data: missing")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError("message.data is not base64") from None
    return parse_json(raw, "message.data")


SETUP = Setup(
    title="Google Artifact Registry and Container Registry",
    where="a Pub/Sub push subscription to the topic gcr of the registry's Google Cloud project",
    url="<token-url>",
    placement="in the URL (?token=): a push subscription sends no custom header",
    events="none to choose: every message on the topic gcr (INSERT makes a build; "
    "DELETE only when [gateway] event_types lists image_delete)",
    content_type="application/json, the Pub/Sub push envelope (payload unwrapping works too)",
    auth="query-token",
    command="gcloud pubsub topics create gcr --project=<gcp project>  # if it is not there yet\n"
    "gcloud pubsub subscriptions create brigade --project=<gcp project> \\\n"
    "  --topic=gcr --push-endpoint='<token-url>'",
    language="shell",
    sample="gar.json",
    headers={"Content-Type": "application/json"},
)


REGISTRY = Registry(
    name=NAME, setup=SETUP, decode=decode, looks_like=looks_like, header_hint=sent_by_pubsub
)
