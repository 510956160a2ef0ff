"""Each registry's payloads decode to exactly the events they describe.

The real payloads are checked against their catalogue entries (the ``.toml``
beside each in tests/payloads/, see tests/helpers.py). The bodies no registry
documents (a second tag, a batch, a Pub/Sub envelope around a real message,
Zot's CloudEvents, a failed push...) are made by hand, each from a real
payload where there is one, in the VARIANTS table.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attr
import pytest

from brigade_crgw.brigade import long_title, short_title
from brigade_crgw.events import CHART_PUSH, IMAGE_DELETE, IMAGE_PUSH
from brigade_crgw.registries import Delivery, PayloadError, decode

from .helpers import PAYLOADS, Payload, body, catalogue, compact, edit, sent_headers

CATALOGUE = catalogue()


def test_catalogue_is_whole() -> None:
    """Every payload has its catalogue entry and every entry its payload."""
    entries = {p.with_suffix(".json") for p in PAYLOADS.glob("*/*.toml") if p.stem != "HEADERS"}
    assert entries == set(PAYLOADS.glob("*/*.json"))
    assert len(CATALOGUE) == 97


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda entry: entry.name)
def test_payload_decodes_to_its_entry(entry: Payload) -> None:
    """A real payload, sent with its registry's headers, decodes to exactly
    the events (with their build titles), reply or refusal of its entry."""
    if "refused" in entry.expected:
        with pytest.raises(PayloadError) as caught:
            decode(entry.body, entry.headers)
        assert str(caught.value) == entry.expected["refused"]
        return
    delivery = decode(entry.body, entry.headers)
    assert delivery == Delivery(entry.registry, entry.events(), entry.expected.get("reply"))
    assert [(short_title(e), long_title(e)) for e in delivery.events] == entry.titles()


# -- Bodies made by hand --------------------------------------------------------


def pubsub(message: bytes) -> bytes:
    """A Pub/Sub push envelope, in the documented shape, around a message."""
    data = base64.b64encode(message).decode()
    envelope = {"data": data, "messageId": "1234567890", "publishTime": "2026-01-01T00:00:00Z"}
    return json.dumps({"message": envelope, "subscription": "projects/p/subscriptions/s"}).encode()


def joined(*names: str) -> bytes:
    """One Event Grid array holding the events of several payloads."""
    return json.dumps([event for name in names for event in json.loads(body(name))]).encode()


# Zot documents its event types and data fields (project-zot/zot
# pkg/extensions/events) but publishes no example body.
ZOT_DIGEST = "sha256:" + "ab" * 32
ZOT_DATA = {"name": "golang", "reference": "latest", "digest": ZOT_DIGEST, "manifest": "{}"}
ZOT_BODY = json.dumps({**ZOT_DATA, "mediaType": "application/vnd.oci.image.manifest.v1+json"})


def zot(ce_type: str, time: str = "2025-06-01T10:00:00.123456789Z") -> dict[str, str]:
    """Binary-mode CloudEvents headers as Zot's HTTP sink sends them."""
    return {
        "ce-specversion": "1.0",
        "ce-type": ce_type,
        "ce-source": "zotregistry.dev",
        "ce-id": "e1",
        "ce-time": time,
        "content-type": "application/json",
    }


def structured(*data: Mapping[str, str]) -> bytes:
    """Zot events in structured mode: one, or a batch of several."""
    events = [
        {"specversion": "1.0", "type": "zotregistry.image.updated", "source": "z", "id": str(n)}
        | {"data": d}
        for n, d in enumerate(data)
    ]
    return json.dumps(events[0] if len(events) == 1 else events).encode()


DTR = "dtr/TAG_PUSH-test-payload.json"
ECR = "ecr/image-action-PUSH.json"
NEXUS = "nexus/component-created-docker-ibdm.json"
DIST = "distribution/push-envelope-docs.json"
HARBOR_CE = "harbor/delete_artifact-cloudevents.json"
VALIDATION = "acr/SubscriptionValidation-eventgrid-docs.json"
GRID = joined("acr/ImagePushed-eventgrid.json", "acr/ImageDeleted-eventgrid.json")
QUAY_TAGS = edit(body("quay/repo_push.json"), ("updated_tags",), ["latest", "v1.2"])
GAR = pubsub(body("gar/INSERT-with-tag.json"))
FRAGMENT = json.loads(body("distribution/delete-target-fragment-docs.json"))
DELETE_FRAGMENT = json.dumps({"events": [{"id": "x", "action": "delete", **FRAGMENT}]}).encode()
HARBOR_ID = "/projects/2/webhook/policies/15#343f1623-7cba-487c-88f1-c5ebf55e93aa"
ZOT_PUSH = zot("zotregistry.image.updated")

V1 = sent_headers("distribution", "v1")
CE_JSON = {"content-type": "application/cloudevents+json"}
GRID_HEADERS = {"aeg-event-type": "Notification"}


@attr.s(frozen=True, auto_attribs=True)
class Variant:
    """A body made by hand and what it decodes to.

    :param fields: each listed event field's values across the events, in order.
    :param refused: instead, a pattern of the PayloadError it is refused with.
    """

    label: str
    body: bytes
    headers: Mapping[str, str]
    fields: Mapping[str, list[Any]] = attr.ib(factory=dict)
    refused: str = ""


def two_resources(resources: list[dict[str, str]]) -> list[dict[str, str]]:
    """Harbor's one resource, and a second with another tag."""
    return [*resources, {**resources[0], "tag": "3.9"}]


# fmt: off
VARIANTS = [
    Variant("dtr-manifest-push", edit(body(DTR), ("type",), "MANIFEST_PUSH"), {},
            {"action": ["manifest_push"]}),
    Variant("ecr-failed-push", edit(body(ECR), ("detail", "result"), "FAILURE"), {},
            {"action": ["push_failure"]}),
    Variant("nexus-updated", edit(body(NEXUS), ("action",), "UPDATED"), {},
            {"action": [IMAGE_PUSH]}),
    Variant("nexus-deleted", edit(body(NEXUS), ("action",), "DELETED"), {},
            {"action": [IMAGE_DELETE]}),
    Variant("nexus-docker-asset",
            edit(body("nexus/asset-created-docs.json"), ("asset", "format"), "docker"), {},
            {"action": ["docker_asset_created"]}),
    Variant("distribution-mount", edit(body(DIST), ("events", 1, "action"), "mount"), V1,
            {"action": [IMAGE_PUSH, "mount", "blob_push"]}),
    Variant("distribution-blobs-only", edit(body(DIST), ("events",), lambda e: e[1:]), V1,
            {"action": ["blob_push", "blob_push"]}),
    Variant("distribution-fragment-in-envelope", DELETE_FRAGMENT, V1,
            {"action": [IMAGE_DELETE], "repository": ["library/test"],
             "digest": [FRAGMENT["target"]["digest"]]}),
    Variant("harbor-two-resources", edit(body(HARBOR_CE), ("data", "resources"), two_resources),
            CE_JSON, {"tag": ["3.8", "3.9"], "delivery_id": [f"{HARBOR_ID}:0", f"{HARBOR_ID}:1"]}),
    Variant("quay-two-tags", QUAY_TAGS, {},
            {"action": [IMAGE_PUSH] * 2, "tag": ["latest", "v1.2"], "delivery_id": ["", ""],
             "payload": [QUAY_TAGS] * 2}),
    Variant("event-grid-batch", GRID, GRID_HEADERS,
            {"action": [IMAGE_PUSH, IMAGE_DELETE],
             "payload": [compact(event) for event in json.loads(GRID)]}),
    Variant("event-grid-validation-without-code",
            edit(body(VALIDATION), (0, "data", "validationCode"), None), {},
            refused="validationCode: missing"),
    Variant("gar-pubsub-envelope", GAR, {},
            {"action": [IMAGE_PUSH], "repository": ["my-project/my-repo/hello-world"],
             "host": ["us-west1-docker.pkg.dev"], "tag": ["1.1"], "digest": ["sha256:..."],
             "timestamp": [datetime(2026, 1, 1, tzinfo=UTC)], "delivery_id": ["1234567890"],
             "payload": [GAR]}),
    *(Variant(f"gar-data-{data!r}", pubsub(data), {}, refused="message.data")
      for data in (b"not json", b"\xff\xfe", b"[1]", b'"INSERT"')),
    Variant("zot-binary-image-updated", ZOT_BODY.encode(), ZOT_PUSH,
            {"registry": ["cloudevents"], "action": [IMAGE_PUSH], "repository": ["golang"],
             "tag": ["latest"], "digest": [ZOT_DIGEST],
             "media_type": ["application/vnd.oci.image.manifest.v1+json"],
             "timestamp": [datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=UTC)],
             "delivery_id": ["zotregistry.dev#e1"], "payload": [ZOT_BODY.encode()]}),
    Variant("zot-structured-by-digest", structured({**ZOT_DATA, "reference": ZOT_DIGEST}),
            CE_JSON, {"tag": [""], "digest": [ZOT_DIGEST]}),
    Variant("cloudevents-batch", structured(ZOT_DATA, ZOT_DATA),
            {"content-type": "application/cloudevents-batch+json"},
            {"delivery_id": ["z#0", "z#1"],
             "payload": [compact(event) for event in json.loads(structured(ZOT_DATA, ZOT_DATA))]}),
    Variant("cloudevents-binary-not-json", b"\x00not json", ZOT_PUSH,
            {"action": [IMAGE_PUSH], "repository": [""], "payload": [b"\x00not json"]}),
    Variant("cloudevents-time-keeps-its-offset", ZOT_BODY.encode(),
            zot("zotregistry.image.updated", "2025-06-01T12:00:00+02:00"),
            {"timestamp": [datetime(2025, 6, 1, 12, tzinfo=timezone(timedelta(hours=2)))]}),
]
# fmt: on

# A CloudEvents type's words decide its action; failures are never pushes.
CLOUDEVENTS_TYPES = {
    "zotregistry.image.deleted": IMAGE_DELETE,
    "zotregistry.image.lint_failed": "image_lint_failed",
    "zotregistry.repository.created": "repository_created",
    "com.example.registry.image.pushed": IMAGE_PUSH,
    "com.example.registry.chart.pushed": CHART_PUSH,
    "com.example.image.push_failed": "image_push_failed",
    "dev.cdevents.artifact.published.0.1.0": IMAGE_PUSH,
    "dev.cdevents.artifact.packaged.0.1.0": "artifact_packaged",
}
VARIANTS += [
    Variant(ce_type, ZOT_BODY.encode(), zot(ce_type), {"action": [action]})
    for ce_type, action in CLOUDEVENTS_TYPES.items()
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda variant: variant.label)
def test_variant(variant: Variant) -> None:
    """A body made by hand from a registry's documented shape decodes to the
    field values its row names, or is refused as it says."""
    if variant.refused:
        with pytest.raises(PayloadError, match=variant.refused):
            decode(variant.body, variant.headers)
        return
    events = decode(variant.body, variant.headers).events
    found = {field: [getattr(event, field) for event in events] for field in variant.fields}
    assert found == variant.fields
