"""Azure Container Registry, by native webhook or through Event Grid.

The native webhook posts one event object whose ``action`` is ``push``,
``delete``, ``chart_push``, ``chart_delete``, ``quarantine`` or ``ping``.
Event Grid posts a JSON array of events (``eventType``
``Microsoft.ContainerRegistry.ImagePushed``...; older docs show the bare
``ImagePushed``), or CloudEvents when the subscription uses that schema;
either way the ACR event is in ``data`` and keeps the registry name ``acr``,
so that a build's provider reads the same whatever the transport.

Event Grid proves a subscription by posting a
``Microsoft.EventGrid.SubscriptionValidationEvent``; its answer is the
delivery's ``reply``.
"""

from __future__ import annotations

from datetime import datetime

from brigade_crgw.events import CHART_DELETE, CHART_PUSH, IMAGE_DELETE, IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._cloudevent import CloudEvent
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    Obj,
    PayloadError,
    compact,
    first_time,
    word,
)
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "acr"

_NATIVE_ACTIONS = {
    "push": IMAGE_PUSH,
    "delete": IMAGE_DELETE,
    "chart_push": CHART_PUSH,
    "chart_delete": CHART_DELETE,
}
_GRID_ACTIONS = {
    "ImagePushed": IMAGE_PUSH,
    "ImageDeleted": IMAGE_DELETE,
    "ChartPushed": CHART_PUSH,
    "ChartDeleted": CHART_DELETE,
}
_PREFIX = "Microsoft.ContainerRegistry."
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"


def is_acr_type(event_type: str) -> bool:
    """Whether an Event Grid or CloudEvents type is an ACR event."""
    return event_type.startswith(_PREFIX) or event_type in _GRID_ACTIONS


def sent_by_acr(doc: object, headers: Headers) -> bool:
    """Event Grid's ``aeg-event-type`` or ACR's ``User-Agent``, on an ACR body.

    (Event Grid's CloudEvents are CloudEvents by shape, and their types
    bring them here.)
    """
    from_azure = "aeg-event-type" in headers or headers.get("user-agent", "").startswith(
        "AzureContainerRegistry/"
    )
    return from_azure and looks_like(doc)


def looks_like(doc: object) -> bool:
    """An Event Grid array, or a native webhook (an ``action`` with a
    ``target``/``request``, or the bare ``ping``)."""
    if isinstance(doc, list):
        return bool(doc) and isinstance(doc[0], dict) and "eventType" in doc[0]
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("action"), str)
        and (
            isinstance(doc.get("target"), dict)
            or isinstance(doc.get("request"), dict)
            or doc.get("action") == "ping"
        )
    )


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode a native webhook or an Event Grid array.

    :raises PayloadError: for fields of the wrong type, a missing ``action``
        or ``eventType``, or a validation event without its code.
    """
    if isinstance(doc, list):
        return _event_grid(doc)
    root = Obj.root(doc)
    if root.has("eventType"):  # one Event Grid event that lost its array
        return _event_grid([doc])
    raw = root.text("action")
    if not raw:
        raise PayloadError("action: missing; not an ACR webhook")
    event = _event(
        _NATIVE_ACTIONS.get(raw, word(raw)),
        root,
        delivery_id=root.text("id"),
        time=None,
        payload=body,
    )
    return Delivery(NAME, (event,))


def from_cloudevent(ce: CloudEvent) -> tuple[ImageEvent, ...]:
    """The ACR event in an Event Grid CloudEvent."""
    event = _event(
        _grid_action(ce.type),
        ce.data_obj(),
        delivery_id=ce.delivery_id,
        time=ce.time,
        payload=ce.payload,
    )
    return (event,)


def _event_grid(items: list[object]) -> Delivery:
    events = []
    for index, item in enumerate(items):
        grid = Obj.root(item, f"[{index}]")
        grid_type = grid.text("eventType")
        if not grid_type:
            raise PayloadError(f"{grid.at('eventType')}: missing")
        data = grid.obj("data")
        if grid_type == VALIDATION:
            # Event Grid sends the validation event alone; answering it is
            # all this delivery asks for.
            code = data.text("validationCode")
            if not code:
                raise PayloadError(f"{data.at('validationCode')}: missing")
            return Delivery(NAME, (), reply={"validationResponse": code})
        events.append(
            _event(
                _grid_action(grid_type),
                data,
                delivery_id=grid.text("id"),
                time=first_time(grid.raw("eventTime")),
                payload=compact(item),
            )
        )
    return Delivery(NAME, tuple(events))


def _grid_action(grid_type: str) -> str:
    short = grid_type.removeprefix(_PREFIX)
    if short in _GRID_ACTIONS:
        return _GRID_ACTIONS[short]
    return word(short.rpartition(".")[2])


def _event(
    action: str, event: Obj, *, delivery_id: str, time: datetime | None, payload: bytes
) -> ImageEvent:
    # The native body and Event Grid's ``data`` share this shape, which is
    # CNCF Distribution's event: target, request, actor.
    target = event.obj("target")
    return ImageEvent(
        registry=NAME,
        action=action,
        repository=target.text("repository"),
        host=event.obj("request").text("host"),
        tag=target.text("tag"),
        digest=target.text("digest"),
        media_type=target.text("mediaType"),
        pusher=event.obj("actor").text("name"),
        timestamp=first_time(event.raw("timestamp"), time),
        delivery_id=delivery_id,
        payload=payload,
    )


SETUP = Setup(
    title="Azure Container Registry",
    where="the registry's Webhooks page in the Azure portal, or az acr webhook create",
    url="<url>",
    placement="in a custom header, Authorization: Bearer <token>",
    events="push (delete, chart_push and chart_delete make builds only when "
    "[gateway] event_types lists them)",
    content_type="application/json, which ACR sends",
    auth="bearer",
    command="az acr webhook create --registry <registry> --name brigade \\\n"
    '  --uri "<url>" --actions push \\\n'
    '  --headers "Authorization=Bearer <token>"',
    language="shell",
    notes=(
        "Through Event Grid instead: an event subscription on the registry with "
        "endpoint type Web Hook, endpoint <token-url>, event type "
        "Microsoft.ContainerRegistry.ImagePushed, in the Event Grid or the "
        "CloudEvents 1.0 schema. The gateway answers the subscription's "
        "validation itself.",
    ),
    sample="acr.json",
    headers={"Content-Type": "application/json", "User-Agent": "AzureContainerRegistry/1.0"},
)


REGISTRY = Registry(
    name=NAME,
    setup=SETUP,
    decode=decode,
    looks_like=looks_like,
    header_hint=sent_by_acr,
    cloudevent_types=is_acr_type,
    from_cloudevent=from_cloudevent,
)
