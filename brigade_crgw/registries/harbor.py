"""Harbor webhooks: the Default JSON format, CloudEvents, and Harbor 1.x.

The Default format has ``type`` (``PUSH_ARTIFACT``...; Harbor 1.x said
``pushImage``...) and ``event_data``; the CloudEvents format (Harbor 2.8+)
has ``type`` ``harbor.artifact.pushed``... and the same object in ``data``.
Each artifact in ``resources`` is one event. Harbor writes the digest in
``tag`` when an artifact was pushed or pulled by digest.
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
    join,
    split_reference,
    timestamp,
    word,
)
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "harbor"

# The Default, 1.x and CloudEvents names of each event, mapped to one word so
# that a project's script sees the same action whatever format Harbor uses.
_ACTIONS = {
    "PUSH_ARTIFACT": IMAGE_PUSH,
    "pushImage": IMAGE_PUSH,
    "harbor.artifact.pushed": IMAGE_PUSH,
    "DELETE_ARTIFACT": IMAGE_DELETE,
    "deleteImage": IMAGE_DELETE,
    "harbor.artifact.deleted": IMAGE_DELETE,
    "UPLOAD_CHART": CHART_PUSH,
    "uploadChart": CHART_PUSH,
    "DELETE_CHART": CHART_DELETE,
    "deleteChart": CHART_DELETE,
    "PULL_ARTIFACT": "pull",
    "pullImage": "pull",
    "harbor.artifact.pulled": "pull",
    "DOWNLOAD_CHART": "chart_pull",
    "downloadChart": "chart_pull",
    "SCANNING_COMPLETED": "scan_completed",
    "scanningCompleted": "scan_completed",
    "harbor.scan.completed": "scan_completed",
    "SCANNING_FAILED": "scan_failed",
    "scanningFailed": "scan_failed",
    "harbor.scan.failed": "scan_failed",
    "SCANNING_STOPPED": "scan_stopped",
    "harbor.scan.stopped": "scan_stopped",
    "QUOTA_EXCEED": "quota_exceed",
    "harbor.quota.exceeded": "quota_exceed",
    "QUOTA_WARNING": "quota_warning",
    "harbor.quota.warned": "quota_warning",
    "REPLICATION": "replication",
    "harbor.replication.status.changed": "replication",
    "TAG_RETENTION": "tag_retention",
    "harbor.tag_retention.finished": "tag_retention",
}


def is_harbor_type(event_type: str) -> bool:
    """Whether a CloudEvents type is one of Harbor's."""
    return event_type.startswith("harbor.")


def looks_like(doc: object) -> bool:
    """A Default-format body, or the Harbor 1.x ``event_type``/``events``."""
    if not isinstance(doc, dict):
        return False
    if isinstance(doc.get("type"), str) and isinstance(doc.get("event_data"), dict):
        return True
    return isinstance(doc.get("event_type"), str) and isinstance(doc.get("events"), list)


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode the Default format or Harbor 1.x's, one event per artifact.

    :raises PayloadError: for a body without ``type``/``event_type`` or with
        fields of the wrong type.
    """
    root = Obj.root(doc)
    harbor_type = root.text("type")
    if harbor_type:
        return Delivery(
            NAME,
            _events(
                harbor_type,
                root.obj("event_data"),
                pusher=root.text("operator"),
                time=timestamp(root.raw("occur_at")),
                delivery_id="",  # the Default format carries no id
                payload=body,
            ),
        )
    if root.text("event_type"):
        return Delivery(NAME, _harbor1(root, body))
    raise PayloadError("type: missing; not a Harbor webhook")


def from_cloudevent(ce: CloudEvent) -> tuple[ImageEvent, ...]:
    """The events in a Harbor CloudEvent."""
    return _events(
        ce.type,
        ce.data_obj(),
        pusher=ce.extensions.get("operator", ""),
        time=ce.time,
        delivery_id=ce.delivery_id,
        payload=ce.payload,
    )


def _action(harbor_type: str) -> str:
    return _ACTIONS.get(harbor_type) or word(harbor_type.removeprefix("harbor."))


def _events(
    harbor_type: str,
    data: Obj,
    *,
    pusher: str,
    time: datetime | None,
    delivery_id: str,
    payload: bytes,
) -> tuple[ImageEvent, ...]:
    action = _action(harbor_type)
    repo = data.obj("repository")
    repository = repo.text("repo_full_name") or join(repo.text("namespace"), repo.text("name"))
    resources = data.objs("resources")
    if not resources:  # replication, tag retention: about no one artifact
        return (
            ImageEvent(
                registry=NAME,
                action=action,
                repository=repository,
                pusher=pusher,
                timestamp=time,
                delivery_id=delivery_id,
                payload=payload,
            ),
        )
    events = []
    for index, resource in enumerate(resources):
        tag = resource.text("tag")
        digest = resource.text("digest")
        if tag.startswith("sha256:"):
            digest, tag = digest or tag, ""
        events.append(
            ImageEvent(
                registry=NAME,
                action=action,
                repository=repository,
                host=split_reference(resource.text("resource_url"))[0],
                tag=tag,
                digest=digest,
                pusher=pusher,
                timestamp=time,
                # One CloudEvent id for several artifacts: tell them apart.
                delivery_id=f"{delivery_id}:{index}"
                if delivery_id and len(resources) > 1
                else delivery_id,
                payload=payload,
            )
        )
    return tuple(events)


def _harbor1(root: Obj, body: bytes) -> tuple[ImageEvent, ...]:
    # The shape Harbor 1.10's documentation shows (its code sent the Default
    # shape): ``image_id`` is not a manifest digest, so it is left out.
    action = _action(root.text("event_type"))
    return tuple(
        ImageEvent(
            registry=NAME,
            action=action,
            repository=event.text("full_name")
            or join(event.text("project"), event.text("repo_name")),
            tag=event.text("tag"),
            timestamp=timestamp(event.raw("trigger_time")),
            payload=body,
        )
        for event in root.objs("events")
    )


SETUP = Setup(
    title="Harbor",
    where="the Harbor project's Webhooks tab: New webhook, notify type http",
    url="<url>",
    placement="in Auth Header: Bearer <token>",
    events="Artifact pushed (PUSH_ARTIFACT)",
    content_type="application/json, with the payload format Default or CloudEvents",
    auth="bearer",
    command="curl -u '<harbor user>' -X POST \\\n"
    "  'https://<harbor>/api/v2.0/projects/<harbor project>/webhook/policies' \\\n"
    "  -H 'Content-Type: application/json' -d '{\n"
    '    "name": "brigade", "enabled": true, "event_types": ["PUSH_ARTIFACT"],\n'
    '    "targets": [{"type": "http", "address": "<url>",\n'
    '                 "auth_header": "Bearer <token>", "skip_cert_verify": false,\n'
    '                 "payload_format": "Default"}]}\'',
    language="shell",
    sample="harbor.json",
    headers={"Content-Type": "application/json"},
)


REGISTRY = Registry(
    name=NAME,
    setup=SETUP,
    decode=decode,
    looks_like=looks_like,
    cloudevent_types=is_harbor_type,
    from_cloudevent=from_cloudevent,
)
