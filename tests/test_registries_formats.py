"""Each registry's real payloads decode to exactly the events they describe.

Fixtures are under tests/payloads/ with their sources in SOURCES.md. Where a
test needs a body no registry documents (a Pub/Sub envelope around a real
message, a second tag, a Zot CloudEvent), it builds it by hand and says so.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from brigade_crgw.events import (
    CHART_DELETE,
    CHART_PUSH,
    IMAGE_DELETE,
    IMAGE_PUSH,
    ImageEvent,
)
from brigade_crgw.registries import Delivery, PayloadError, decode

PAYLOADS = Path(__file__).parent / "payloads"

DISTRIBUTION_V1 = {"content-type": "application/vnd.docker.distribution.events.v1+json"}
CLOUDEVENTS_JSON = {"content-type": "application/cloudevents+json"}


def body(name: str) -> bytes:
    """A fixture's bytes."""
    return (PAYLOADS / name).read_bytes()


def load(name: str, headers: dict[str, str] | None = None, registry: str | None = None) -> Delivery:
    """Decode a fixture."""
    return decode(body(name), headers or {}, registry)


def actions(delivery: Delivery) -> list[str]:
    """The actions of a delivery's events, in order."""
    return [event.action for event in delivery.events]


def at(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int = 0
) -> datetime:
    """An instant in UTC."""
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


# -- Docker Hub ---------------------------------------------------------------


def test_dockerhub_push() -> None:
    """Docker Hub's documented push is one image push with a made-up stable id."""
    assert load("dockerhub/push-docs.json") == Delivery(
        "dockerhub",
        (
            ImageEvent(
                registry="dockerhub",
                action=IMAGE_PUSH,
                repository="svendowideit/testhook",
                host="docker.io",
                tag="latest",
                pusher="trustedbuilder",
                timestamp=at(2014, 12, 3, 0, 22, 41),
                delivery_id="dockerhub:svendowideit/testhook:latest:1417566161",
                payload=body("dockerhub/push-docs.json"),
            ),
        ),
    )


def test_dockerhub_float_timestamp_gives_the_same_id() -> None:
    """The older docs' ``1.417566161e+09`` names the same push as ``1417566161``."""
    (legacy,) = load("dockerhub/push-docs-legacy.json").events
    (current,) = load("dockerhub/push-docs.json").events
    assert legacy.delivery_id == current.delivery_id
    assert legacy.timestamp == current.timestamp


@pytest.mark.parametrize(
    ("name", "repository", "tag", "pusher"),
    [
        (
            "push-captured-aumjaud.json",
            "antoineaumjaud/api-synology-chatbot",
            "latest",
            "antoineaumjaud",
        ),
        ("push-keel.json", "karolisr/keel", "0.1.7", "karolisr"),
    ],
)
def test_dockerhub_other_pushes(name: str, repository: str, tag: str, pusher: str) -> None:
    """Captured Docker Hub pushes give their repository, tag and pusher."""
    (event,) = load(f"dockerhub/{name}").events
    assert (event.action, event.repository, event.tag, event.pusher) == (
        IMAGE_PUSH,
        repository,
        tag,
        pusher,
    )


# -- Alibaba and DTR ----------------------------------------------------------


def test_alibaba_push() -> None:
    """Alibaba ACR's push has a region host and a digest; its zone-less time gives none."""
    assert load("alibaba/push-argocd-image-updater.json").events == (
        ImageEvent(
            registry="alibaba",
            action=IMAGE_PUSH,
            repository="namespace/repoTest",
            host="registry.cn-hangzhou.aliyuncs.com",
            tag="latest",
            digest="sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917",
            timestamp=None,
            delivery_id="alibaba:namespace/repoTest:latest:2016-11-29 12:25:46",
            payload=body("alibaba/push-argocd-image-updater.json"),
        ),
    )


def test_dtr_tag_push() -> None:
    """DTR's TAG_PUSH test payload is an image push of namespace/repository:tag."""
    assert load("dtr/TAG_PUSH-test-payload.json").events == (
        ImageEvent(
            registry="dtr",
            action=IMAGE_PUSH,
            repository="foo/bar",
            tag="latest",
            digest="sha256:b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c",
            timestamp=at(2015, 1, 2, 15, 4, 5),
            payload=body("dtr/TAG_PUSH-test-payload.json"),
        ),
    )


def test_dtr_other_types_keep_their_word() -> None:
    """A DTR MANIFEST_PUSH (hand-made from the TAG_PUSH body) is not a second image push."""
    doc = json.loads(body("dtr/TAG_PUSH-test-payload.json"))
    doc["type"] = "MANIFEST_PUSH"
    assert actions(decode(json.dumps(doc).encode(), {})) == ["manifest_push"]


# -- ACR native webhooks ------------------------------------------------------


def test_acr_push() -> None:
    """ACR's documented push (2019, unredacted) decodes field for field."""
    assert load("acr/push-docs-unredacted.json") == Delivery(
        "acr",
        (
            ImageEvent(
                registry="acr",
                action=IMAGE_PUSH,
                repository="hello-world",
                host="myregistry.azurecr.io",
                tag="v1",
                digest="sha256:80f0d5c8786bb9e621a45ece0db56d11cdc624ad20da9fe62e9d25490f331d7d",
                media_type="application/vnd.docker.distribution.manifest.v2+json",
                timestamp=at(2017, 11, 17, 16, 52, 1, 343145),
                delivery_id="cb8c3971-9adc-488b-bdd8-43cbb4974ff5",
                payload=body("acr/push-docs-unredacted.json"),
            ),
        ),
    )


@pytest.mark.parametrize(
    ("name", "action", "repository", "tag"),
    [
        ("push.json", IMAGE_PUSH, "hello-world", "v1"),
        ("push-kobold.json", IMAGE_PUSH, "busybox", "v1"),
        ("push-argocd-image-updater.json", IMAGE_PUSH, "hello-world", "test-v1"),
        ("push-rest-api-listevents-example.json", IMAGE_PUSH, "hello-world", "latest"),
        ("delete.json", IMAGE_DELETE, "hello-world", ""),
        ("delete-docs-unredacted.json", IMAGE_DELETE, "hello-world", ""),
        ("chart_push.json", CHART_PUSH, "repo", "wordpress-5.4.0.tgz"),
        ("chart_delete.json", CHART_DELETE, "repo", "wordpress-5.4.0.tgz"),
        ("quarantine.json", "quarantine", "helloworld", "1"),
        ("ping-kargo-trimmed.json", "ping", "", ""),
    ],
)
def test_acr_native_actions(name: str, action: str, repository: str, tag: str) -> None:
    """Each ACR webhook action maps to its event action, repository and tag."""
    (event,) = load(f"acr/{name}", {"content-type": "application/json"}).events
    assert (event.registry, event.action, event.repository, event.tag) == (
        "acr",
        action,
        repository,
        tag,
    )


# -- ACR through Event Grid ---------------------------------------------------


def test_acr_event_grid_push() -> None:
    """An Event Grid ImagePushed carries its own JSON, its Event Grid id and the registry host."""
    raw = body("acr/ImagePushed-eventgrid-azurecn.json")
    delivery = decode(raw, {"aeg-event-type": "Notification"})
    (event,) = delivery.events
    assert delivery.registry == "acr"
    assert delivery.reply is None
    assert event == ImageEvent(
        registry="acr",
        action=IMAGE_PUSH,
        repository="aci-helloworld",
        host="demo.azurecr.io",
        tag="v1",
        digest="sha256:213bbc182920ab41e18edc2001e06abcca6735d87782d9cef68abd83941cf0e5",
        media_type="application/vnd.docker.distribution.manifest.v2+json",
        timestamp=at(2018, 4, 25, 21, 39, 47, 276585),
        delivery_id="831e1650-001e-001b-66ab-eeb76e069631",
        payload=event.payload,
    )
    assert json.loads(event.payload) == json.loads(raw)[0]


def test_acr_cloudevents_push() -> None:
    """An Event Grid CloudEvent is an ACR push whose id combines source and id."""
    (event,) = load("acr/ImagePushed-cloudevents-current.json", CLOUDEVENTS_JSON).events
    assert (event.registry, event.action, event.repository, event.tag, event.host) == (
        "acr",
        IMAGE_PUSH,
        "aci-helloworld",
        "v1",
        "demo.azurecr.io",
    )
    assert event.delivery_id == (
        "/subscriptions/<subscription-id>/resourceGroups/<resource-group-name>/providers/"
        "Microsoft.ContainerRegistry/registries/<name>#831e1650-001e-001b-66ab-eeb76e069631"
    )


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("ImagePushed-eventgrid.json", IMAGE_PUSH),
        ("ImagePushed-cloudevents.json", IMAGE_PUSH),
        ("ImageDeleted-eventgrid.json", IMAGE_DELETE),
        ("ImageDeleted-cloudevents.json", IMAGE_DELETE),
        ("ChartPushed-eventgrid.json", CHART_PUSH),
        ("ChartPushed-cloudevents.json", CHART_PUSH),
        ("ChartDeleted-eventgrid.json", CHART_DELETE),
        ("ChartDeleted-cloudevents.json", CHART_DELETE),
    ],
)
def test_acr_event_grid_types(name: str, action: str) -> None:
    """Event Grid types, with or without the Microsoft.ContainerRegistry prefix, map to actions."""
    delivery = load(f"acr/{name}")
    assert delivery.registry == "acr"
    assert actions(delivery) == [action]


def test_event_grid_subscription_validation() -> None:
    """Event Grid's validation event is answered with its code and makes no events."""
    delivery = load(
        "acr/SubscriptionValidation-eventgrid-docs.json",
        {"aeg-event-type": "SubscriptionValidation"},
    )
    assert delivery == Delivery(
        "acr", (), reply={"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    )


def test_event_grid_validation_without_code() -> None:
    """A validation event without its code is refused (hand-made from the documented one)."""
    doc = json.loads(body("acr/SubscriptionValidation-eventgrid-docs.json"))
    del doc[0]["data"]["validationCode"]
    with pytest.raises(PayloadError):
        decode(json.dumps(doc).encode(), {"aeg-event-type": "SubscriptionValidation"})


def test_event_grid_batch_gives_one_event_each() -> None:
    """An Event Grid array of two events (hand-made from two documented ones) gives two events."""
    batch = json.loads(body("acr/ImagePushed-eventgrid.json")) + json.loads(
        body("acr/ImageDeleted-eventgrid.json")
    )
    delivery = decode(json.dumps(batch).encode(), {"aeg-event-type": "Notification"})
    assert actions(delivery) == [IMAGE_PUSH, IMAGE_DELETE]
    assert [json.loads(event.payload) for event in delivery.events] == batch


# -- CNCF Distribution ----------------------------------------------------------


def test_distribution_push_envelope() -> None:
    """The documented push envelope is one manifest push and two ignored blob pushes."""
    raw = body("distribution/push-envelope-docs.json")
    delivery = decode(raw, DISTRIBUTION_V1)
    assert delivery.registry == "distribution"
    assert actions(delivery) == [IMAGE_PUSH, "blob_push", "blob_push"]
    manifest = delivery.events[0]
    assert manifest == ImageEvent(
        registry="distribution",
        action=IMAGE_PUSH,
        repository="library/test",
        host="registrycluster.local",
        tag="",
        digest="sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
        media_type="application/vnd.docker.distribution.manifest.v2+json",
        pusher="test-actor",
        timestamp=at(2006, 1, 2, 15, 4, 5),
        delivery_id="asdf-asdf-asdf-asdf-0",
        payload=manifest.payload,
    )
    assert [json.loads(event.payload) for event in delivery.events] == json.loads(raw)["events"]


@pytest.mark.parametrize(
    "name", ["push-envelope-eventtest-v2.8.json", "push-envelope-eventtest-v3.json"]
)
def test_distribution_golden_envelopes(name: str) -> None:
    """Distribution's own test envelopes (schema1 in 2.8, schema2 in 3) push one manifest."""
    assert actions(load(f"distribution/{name}", DISTRIBUTION_V1)) == [
        IMAGE_PUSH,
        "blob_push",
        "blob_push",
    ]


def test_distribution_pull() -> None:
    """A manifest pull is a pull, tagged, with the request's host."""
    (event,) = load("distribution/pull-envelope-docs.json", DISTRIBUTION_V1).events
    assert (event.action, event.repository, event.tag, event.host) == (
        "pull",
        "hello-world",
        "latest",
        "192.168.100.227:5000",
    )


def test_distribution_push_by_digest() -> None:
    """A bare event (as Portus stored it) pushed by digest has no tag; ?registry= takes it."""
    (event,) = load(
        "distribution/push-event-portus-registry2.3.json", registry="distribution"
    ).events
    assert (event.action, event.repository, event.tag, event.host, event.pusher) == (
        IMAGE_PUSH,
        "mssola/lala",
        "",
        "registry.mssola.cat:5000",
        "mssola",
    )
    assert event.digest.startswith("sha256:b9c8a383")


def test_distribution_bare_event_by_content_type() -> None:
    """A bare event with Distribution's content type is decoded as Distribution."""
    delivery = load("distribution/pull-event-portus.json", DISTRIBUTION_V1)
    assert (delivery.registry, actions(delivery)) == ("distribution", ["pull"])


def test_distribution_delete() -> None:
    """A delete, which carries no media type, is an image delete."""
    delivery = load("distribution/delete-event-portus.json", DISTRIBUTION_V1)
    assert actions(delivery) == [IMAGE_DELETE]
    assert delivery.events[0].pusher == "portus"


def test_distribution_delete_fragment_in_envelope() -> None:
    """The docs' delete target, put in a hand-made envelope, is an image delete of that digest."""
    fragment = json.loads(body("distribution/delete-target-fragment-docs.json"))
    envelope = {"events": [{"id": "x", "action": "delete", **fragment}]}
    (event,) = decode(json.dumps(envelope).encode(), DISTRIBUTION_V1).events
    assert (event.action, event.repository, event.digest) == (
        IMAGE_DELETE,
        "library/test",
        "sha256:d89e1bee20d9cb344674e213b581f14fbd8e70274ecf9d10c514bab78a307845",
    )


def test_distribution_mount() -> None:
    """A blob mount (hand-made from the docs' blob push) is neither a push nor a delete."""
    doc = json.loads(body("distribution/push-envelope-docs.json"))
    doc["events"][1]["action"] = "mount"
    assert actions(decode(json.dumps(doc).encode(), DISTRIBUTION_V1))[1] == "mount"


# -- Harbor -------------------------------------------------------------------


def test_harbor_push_by_digest() -> None:
    """Harbor's documented push puts the digest in ``tag``: it becomes a tagless digest."""
    assert load("harbor/push_artifact-default.json").events == (
        ImageEvent(
            registry="harbor",
            action=IMAGE_PUSH,
            repository="harbor/alpine",
            host="localhost",
            tag="",
            digest="sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4",
            pusher="harbor-jobservice",
            timestamp=at(2023, 4, 3, 6, 4, 53),
            payload=body("harbor/push_artifact-default.json"),
        ),
    )


def test_harbor_tagged_push() -> None:
    """A tagged Harbor push gives tag, digest, host from resource_url and the operator."""
    (event,) = load("harbor/push_artifact-kobold.json").events
    assert (event.action, event.repository, event.tag, event.host, event.pusher) == (
        IMAGE_PUSH,
        "mynamespace/myapp",
        "master-491-6bac849",
        "harbor.mydomain.lan",
        "build-myapp",
    )
    assert event.delivery_id == ""


def test_harbor_cloudevents_push() -> None:
    """Harbor's CloudEvents push is a harbor event with a source#id delivery id."""
    delivery = load("harbor/push_artifact-cloudevents.json", CLOUDEVENTS_JSON)
    (event,) = delivery.events
    assert delivery.registry == "harbor"
    assert (event.action, event.repository, event.tag, event.pusher, event.delivery_id) == (
        IMAGE_PUSH,
        "harbor/alpine",
        "",
        "harbor-jobservice",
        "/projects/2/webhook/policies/15#66e18103-09c1-41f6-982f-37df223f3eeb",
    )


@pytest.mark.parametrize(
    ("name", "repository", "tag"),
    [
        ("pushImage-keel.json", "library/ai-rag", "1.2.3"),
        ("pushImage-v1.10-sourcetest.json", "myproj/alpine", "v1.0"),
        ("pushImage-v1.10docs.json", "prj/repo1", "latest"),
        ("push_artifact-default-v2.0docs.json", "test-webhook/debian", "latest"),
        ("push_artifact-keel.json", "mynamespace/repository", "latest"),
        ("push_artifact-argocd-image-updater.json", "image-name", "tag"),
    ],
)
def test_harbor_pushes_of_every_version(name: str, repository: str, tag: str) -> None:
    """Harbor 1.x ``pushImage`` and 2.x ``PUSH_ARTIFACT`` are image pushes."""
    (event,) = load(f"harbor/{name}").events
    assert (event.action, event.repository, event.tag) == (IMAGE_PUSH, repository, tag)


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("delete_artifact-default.json", IMAGE_DELETE),
        ("delete_artifact-cloudevents.json", IMAGE_DELETE),
        ("pull_artifact-default.json", "pull"),
        ("pull_artifact-cloudevents.json", "pull"),
        ("pull_artifact-default-sourcecomment.json", "pull"),
        ("pull_artifact-cloudevents-sourcecomment.json", "pull"),
        ("scanning_completed-default.json", "scan_completed"),
        ("scanning_completed-cloudevents.json", "scan_completed"),
        ("scanning_failed-default.json", "scan_failed"),
        ("scanning_failed-cloudevents.json", "scan_failed"),
        ("scanning_stopped-default.json", "scan_stopped"),
        ("scanning_stopped-cloudevents.json", "scan_stopped"),
        ("quota_exceed-default.json", "quota_exceed"),
        ("quota_exceed-cloudevents.json", "quota_exceed"),
        ("quota_warning-default.json", "quota_warning"),
        ("quota_warning-cloudevents.json", "quota_warning"),
        ("replication-default.json", "replication"),
        ("replication-cloudevents.json", "replication"),
        ("tag_retention-default.json", "tag_retention"),
        ("tag_retention-cloudevents.json", "tag_retention"),
    ],
)
def test_harbor_other_events(name: str, action: str) -> None:
    """Harbor's other events get the same word in both formats, none of them a push."""
    delivery = load(f"harbor/{name}")
    assert delivery.registry == "harbor"
    assert actions(delivery) == [action]


def test_harbor_several_resources() -> None:
    """Two artifacts in one Harbor CloudEvent (hand-made) are two events with distinct ids."""
    doc = json.loads(body("harbor/delete_artifact-cloudevents.json"))
    resource = doc["data"]["resources"][0]
    doc["data"]["resources"].append({**resource, "tag": "3.9"})
    delivery = decode(json.dumps(doc).encode(), CLOUDEVENTS_JSON)
    assert [event.tag for event in delivery.events] == ["3.8", "3.9"]
    ids = [event.delivery_id for event in delivery.events]
    assert len(set(ids)) == 2


# -- Quay ---------------------------------------------------------------------


def test_quay_push() -> None:
    """Quay's documented repo_push is one push per updated tag, host from docker_url."""
    assert load("quay/repo_push.json").events == (
        ImageEvent(
            registry="quay",
            action=IMAGE_PUSH,
            repository="mynamespace/repository",
            host="quay.io",
            tag="latest",
            payload=body("quay/repo_push.json"),
        ),
    )


def test_quay_several_tags() -> None:
    """Two updated tags (hand-made from the documented push) are two pushes with the whole body."""
    doc = json.loads(body("quay/repo_push.json"))
    doc["updated_tags"] = ["latest", "v1.2"]
    raw = json.dumps(doc).encode()
    delivery = decode(raw, {})
    assert [(event.action, event.tag) for event in delivery.events] == [
        (IMAGE_PUSH, "latest"),
        (IMAGE_PUSH, "v1.2"),
    ]
    assert all(event.payload == raw and event.delivery_id == "" for event in delivery.events)


@pytest.mark.parametrize("name", ["repo_push-legacy2015.json", "repo_push-glossary-legacy.json"])
def test_quay_legacy_tag_map(name: str) -> None:
    """The 2015 map of tag to image id gives the tags."""
    assert [(e.action, e.tag) for e in load(f"quay/{name}").events] == [(IMAGE_PUSH, "latest")]


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("build_queued.json", "build"),
        ("build_start.json", "build"),
        ("build_success.json", "build"),
        ("build_failure.json", "build_failure"),
        ("vulnerability_found.json", "vulnerability_found"),
    ],
)
def test_quay_other_notifications(name: str, action: str) -> None:
    """Quay's build and vulnerability notifications are not pushes."""
    delivery = load(f"quay/{name}")
    assert (delivery.registry, actions(delivery)) == ("quay", [action])


# -- JFrog Artifactory --------------------------------------------------------


def test_jfrog_docker_push() -> None:
    """An Artifactory docker push gives image, tag, manifest digest, instance host and user."""
    assert load("jfrog/docker-pushed-keel.json", {"x-jfrog-event-auth": "token"}).events == (
        ImageEvent(
            registry="jfrog",
            action=IMAGE_PUSH,
            repository="library/ubuntu",
            host="example.jfrog.io",
            tag="latest",
            digest="sha256:35c4a2c15539c6c1e4e5fa4e554dac323ad0107d8eb5c582d6ff386b383b7dce",
            pusher="user@example.com",
            payload=body("jfrog/docker-pushed-keel.json"),
        ),
    )


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("docker-pushed-telegraf.json", IMAGE_PUSH),
        ("docker-deleted-telegraf.json", IMAGE_DELETE),
        ("docker-promoted-telegraf.json", "promoted"),
        ("artifact-deployed-docs.json", "artifact_deployed"),
        ("artifact-deleted-docs.json", "artifact_deleted"),
    ],
)
def test_jfrog_events(name: str, action: str) -> None:
    """Docker-domain events map to actions; artifact events read domain_event."""
    assert actions(load(f"jfrog/{name}")) == [action]


def test_jfrog_placeholder_checksum_is_no_digest() -> None:
    """A checksum that is not SHA-256 hex (JFrog's sample) gives no digest."""
    (event,) = load("jfrog/docker-pushed-telegraf.json").events
    assert event.digest == ""


# -- Nexus --------------------------------------------------------------------

NEXUS_COMPONENT = {
    "x-nexus-webhook-id": "rm:repository:component",
    "x-nexus-webhook-delivery": "7f4a6dde-5c68-4999-bcc0-a62f3fb8ae48",
}


def test_nexus_docker_component_created() -> None:
    """A docker component created in Nexus is an image push; the delivery header is its id."""
    assert load("nexus/component-created-docker-ibdm.json", NEXUS_COMPONENT).events == (
        ImageEvent(
            registry="nexus",
            action=IMAGE_PUSH,
            repository="mygroup/my-image",
            tag="1.0.0",
            pusher="anonymous",
            timestamp=at(2016, 11, 14, 19, 32, 13, 515000),
            delivery_id="7f4a6dde-5c68-4999-bcc0-a62f3fb8ae48",
            payload=body("nexus/component-created-docker-ibdm.json"),
        ),
    )


@pytest.mark.parametrize(
    ("nexus_action", "action"), [("UPDATED", IMAGE_PUSH), ("DELETED", IMAGE_DELETE)]
)
def test_nexus_docker_component_changes(nexus_action: str, action: str) -> None:
    """A docker component updated (tag pushed again) or deleted (hand-made variants)."""
    doc = json.loads(body("nexus/component-created-docker-ibdm.json"))
    doc["action"] = nexus_action
    assert actions(decode(json.dumps(doc).encode(), NEXUS_COMPONENT)) == [action]


@pytest.mark.parametrize(
    ("name", "hook", "action"),
    [
        ("component-created-docs.json", "rm:repository:component", "npm_created"),
        ("asset-created-docs.json", "rm:repository:asset", "npm_asset_created"),
    ],
)
def test_nexus_other_events(name: str, hook: str, action: str) -> None:
    """Non-docker components and assets are not image events."""
    assert actions(load(f"nexus/{name}", {"x-nexus-webhook-id": hook})) == [action]


def test_nexus_docker_asset_is_not_a_push() -> None:
    """A docker asset (a layer or manifest file; hand-made variant) is not a second push."""
    doc = json.loads(body("nexus/asset-created-docs.json"))
    doc["asset"]["format"] = "docker"
    assert actions(decode(json.dumps(doc).encode(), {})) == ["docker_asset_created"]


# -- GitHub Packages ----------------------------------------------------------


def test_github_container_published() -> None:
    """GitHub's container example is an image push at ghcr.io with the manifest digest."""
    headers = {
        "x-github-event": "package",
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    }
    assert load("github/package-published-container-octokit.json", headers).events == (
        ImageEvent(
            registry="github",
            action=IMAGE_PUSH,
            repository="Codertocat/hello-world",
            host="ghcr.io",
            tag="",
            digest="sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b",
            media_type="application/vnd.docker.distribution.manifest.v2+json",
            pusher="Codertocat",
            timestamp=at(2019, 5, 9, 23, 28, 29),
            delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958",
            payload=body("github/package-published-container-octokit.json"),
        ),
    )


def test_github_legacy_registry_package() -> None:
    """The 2019 registry_package capture: tag in ``version``, image under ``registry.url``."""
    (event,) = load(
        "github/registry_package-published-keel.json", {"x-github-event": "registry_package"}
    ).events
    assert (event.action, event.repository, event.host, event.tag, event.pusher) == (
        IMAGE_PUSH,
        "DingGGu/UtaiteBOX/server",
        "ghcr.io",
        "1.2.3",
        "DingGGu",
    )


def test_github_registry_package_container() -> None:
    """GitHub's registry_package container example is an image push too."""
    (event,) = load("github/registry_package-published-container-octokit.json").events
    assert (event.action, event.repository, event.host) == (
        IMAGE_PUSH,
        "Codertocat/hello-world",
        "ghcr.io",
    )


def test_github_ghcr_create_is_not_published() -> None:
    """Keel's GHCR capture has action ``create``: tag and digest read, but not a push."""
    (event,) = load("github/package-create-ghcr-keel.json", {"x-github-event": "package"}).events
    assert (event.action, event.repository, event.host, event.tag, event.timestamp) == (
        "create",
        "utaitebox/utaitebox-server",
        "ghcr.io",
        "3.2.1",
        None,  # Go's zero time means unknown
    )
    assert event.digest == "sha256:7d3848ba2f2e7f69bebb4b576e5fad0379b64a0b1512aee6ad0ec9e7c6319fed"


def test_github_npm_package() -> None:
    """An npm package published is ``npm_published``, whatever ``ecosystem`` claims."""
    assert actions(
        load("github/package-published-npm-octokit.json", {"x-github-event": "package"})
    ) == ["npm_published"]


def test_github_ping() -> None:
    """GitHub's ping is a ``ping`` event for the hook's repository."""
    headers = {"x-github-event": "ping", "x-github-delivery": "d1"}
    (event,) = load("github/ping-octokit.json", headers).events
    assert (event.registry, event.action, event.repository, event.delivery_id) == (
        "github",
        "ping",
        "Octocoders/Hello-World",
        "d1",
    )


# -- Google Artifact Registry -------------------------------------------------


def pubsub(message: bytes, message_id: str = "1234567890") -> bytes:
    """A Pub/Sub push envelope around a message, built by hand in the documented shape."""
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(message).decode(),
                "messageId": message_id,
                "publishTime": "2026-01-01T00:00:00Z",
            },
            "subscription": "projects/p/subscriptions/s",
        }
    ).encode()


def test_gar_push_in_pubsub_envelope() -> None:
    """A tagged INSERT in a Pub/Sub envelope is an image push with the message id."""
    raw = pubsub(body("gar/INSERT-with-tag.json"))
    assert decode(raw, {}) == Delivery(
        "gar",
        (
            ImageEvent(
                registry="gar",
                action=IMAGE_PUSH,
                repository="my-project/my-repo/hello-world",
                host="us-west1-docker.pkg.dev",
                tag="1.1",
                digest="sha256:...",
                timestamp=at(2026, 1, 1, 0, 0, 0),
                delivery_id="1234567890",
                payload=raw,
            ),
        ),
    )


@pytest.mark.parametrize(
    ("name", "action", "tag", "digest"),
    [
        ("INSERT-digest-only.json", IMAGE_PUSH, "", "sha256:..."),
        ("INSERT-with-tag.json", IMAGE_PUSH, "1.1", "sha256:..."),
        ("DELETE-tag.json", IMAGE_DELETE, "1.1", ""),
    ],
)
def test_gar_unwrapped_messages(name: str, action: str, tag: str, digest: str) -> None:
    """Unwrapped Pub/Sub messages (the data as body) decode the same way."""
    (event,) = load(f"gar/{name}", {"x-goog-pubsub-message-id": "42"}).events
    assert (event.action, event.repository, event.tag, event.digest, event.delivery_id) == (
        action,
        "my-project/my-repo/hello-world",
        tag,
        digest,
        "42",
    )


def test_gar_placeholder_envelope_is_refused() -> None:
    """The documented envelope's placeholder data is not base64: a PayloadError."""
    with pytest.raises(PayloadError, match="base64"):
        load("gar/pubsub-push-envelope.json")


@pytest.mark.parametrize("data", [b"not json", b"\xff\xfe", b"[1]", b'"INSERT"'])
def test_gar_bad_data_is_refused(data: bytes) -> None:
    """Base64 data that is not a JSON object is a PayloadError."""
    with pytest.raises(PayloadError):
        decode(pubsub(data), {})


# -- Amazon ECR -----------------------------------------------------------------


def test_ecr_push() -> None:
    """ECR's documented push gives the account's registry host and the EventBridge id."""
    assert load("ecr/image-action-PUSH.json").events == (
        ImageEvent(
            registry="ecr",
            action=IMAGE_PUSH,
            repository="my-repository-name",
            host="123456789012.dkr.ecr.us-west-2.amazonaws.com",
            tag="latest",
            digest="sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234",
            timestamp=at(2019, 11, 16, 1, 54, 34),
            delivery_id="13cde686-328b-6117-af20-0e5566167482",
            payload=body("ecr/image-action-PUSH.json"),
        ),
    )


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("image-action-DELETE.json", IMAGE_DELETE),
        ("image-scan-basic.json", "image_scan"),
        ("inspector2-scan-resource-change.json", "scan_resource_change"),
    ],
)
def test_ecr_other_events(name: str, action: str) -> None:
    """ECR deletes and scans map to their own actions."""
    assert actions(load(f"ecr/{name}")) == [action]


def test_ecr_failed_push() -> None:
    """A failed push (hand-made from the documented one) is not an image push."""
    doc = json.loads(body("ecr/image-action-PUSH.json"))
    doc["detail"]["result"] = "FAILURE"
    assert actions(decode(json.dumps(doc).encode(), {})) == ["push_failure"]


# -- Other CloudEvents (Zot...) -----------------------------------------------
# Zot documents its event types and data fields (project-zot/zot
# pkg/extensions/events) but publishes no example body, so these are built by
# hand in that shape.

ZOT_DATA = {
    "name": "golang",
    "reference": "latest",
    "digest": "sha256:" + "ab" * 32,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "manifest": "{}",
}


def zot_headers(kind: str, event_id: str = "e1") -> dict[str, str]:
    """Binary-mode CloudEvents headers as Zot's HTTP sink sends them."""
    return {
        "ce-specversion": "1.0",
        "ce-type": kind,
        "ce-source": "zotregistry.dev",
        "ce-id": event_id,
        "ce-time": "2025-06-01T10:00:00.123456789Z",
        "content-type": "application/json",
    }


def test_zot_binary_image_updated() -> None:
    """A binary-mode zotregistry.image.updated is an image push read from its data."""
    raw = json.dumps(ZOT_DATA).encode()
    assert decode(raw, zot_headers("zotregistry.image.updated")) == Delivery(
        "cloudevents",
        (
            ImageEvent(
                registry="cloudevents",
                action=IMAGE_PUSH,
                repository="golang",
                tag="latest",
                digest="sha256:" + "ab" * 32,
                media_type="application/vnd.oci.image.manifest.v1+json",
                timestamp=at(2025, 6, 1, 10, 0, 0, 123456),
                delivery_id="zotregistry.dev#e1",
                payload=raw,
            ),
        ),
    )


def test_zot_structured_push_by_digest() -> None:
    """A structured Zot event whose reference is a digest has no tag."""
    raw = json.dumps(
        {
            "specversion": "1.0",
            "type": "zotregistry.image.updated",
            "source": "zotregistry.dev",
            "id": "e2",
            "data": {**ZOT_DATA, "reference": ZOT_DATA["digest"]},
        }
    ).encode()
    (event,) = decode(raw, CLOUDEVENTS_JSON).events
    assert (event.action, event.tag, event.digest) == (IMAGE_PUSH, "", ZOT_DATA["digest"])


@pytest.mark.parametrize(
    ("kind", "action"),
    [
        ("zotregistry.image.deleted", IMAGE_DELETE),
        ("zotregistry.image.lint_failed", "image_lint_failed"),
        ("zotregistry.repository.created", "repository_created"),
        ("com.example.registry.image.pushed", IMAGE_PUSH),
        ("com.example.registry.chart.pushed", CHART_PUSH),
        ("com.example.image.push_failed", "image_push_failed"),
        ("dev.cdevents.artifact.published.0.1.0", IMAGE_PUSH),
        ("dev.cdevents.artifact.packaged.0.1.0", "artifact_packaged"),
    ],
)
def test_cloudevents_types(kind: str, action: str) -> None:
    """A CloudEvents type's words decide its action; failures are never pushes."""
    (event,) = decode(json.dumps(ZOT_DATA).encode(), zot_headers(kind)).events
    assert event.action == action


def test_cloudevents_binary_non_json_body() -> None:
    """A binary CloudEvent whose body is not JSON still says what happened."""
    (event,) = decode(b"\x00not json", zot_headers("zotregistry.image.updated")).events
    assert (event.action, event.repository, event.payload) == (IMAGE_PUSH, "", b"\x00not json")


def test_cloudevents_batch() -> None:
    """A CloudEvents batch is one event per entry, each carrying its own JSON."""
    batch = [
        {
            "specversion": "1.0",
            "type": "zotregistry.image.updated",
            "source": "z",
            "id": str(n),
            "data": ZOT_DATA,
        }
        for n in range(2)
    ]
    delivery = decode(
        json.dumps(batch).encode(), {"content-type": "application/cloudevents-batch+json"}
    )
    assert [event.delivery_id for event in delivery.events] == ["z#0", "z#1"]
    assert [json.loads(event.payload) for event in delivery.events] == batch


def test_cloudevents_time_offset_kept() -> None:
    """CloudEvents ``time`` keeps its offset (aware datetimes compare by instant)."""
    headers = {**zot_headers("zotregistry.image.updated"), "ce-time": "2025-06-01T12:00:00+02:00"}
    (event,) = decode(json.dumps(ZOT_DATA).encode(), headers).events
    assert event.timestamp == datetime(2025, 6, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert event.timestamp == at(2025, 6, 1, 10, 0, 0)
