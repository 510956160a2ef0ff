"""Every major registry understood, end to end: the real daemon, real HTTP,
the real API server.

Each registry's documented payloads (tests/payloads/, sources in SOURCES.md)
are POSTed with the headers that registry sends (its HEADERS.md) and the
project token where that registry can put it, and the build Secrets are read
back as the admin sees them.  Expected titles are written out by hand from
the fixtures, never computed by the decoders under test.

The same delivery posted twice is a redelivery (its build ID hashes the
delivery id and the commit-ish), so every test names a commit-ish of its
own; a test that needs a new build from a fixture used elsewhere gets it
that way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attr
import pytest

from brigade_crgw.brigade import project_id

from . import daemon as gateway_process
from .conftest import Namespace
from .factories import TOKEN, decoded, fresh, project_secret
from .test_daemon import builds

pytestmark = pytest.mark.integration

PAYLOADS = Path(__file__).resolve().parent / "payloads"
PROJECT = "acme/app"
PROJECT_ID = project_id(PROJECT)
SCRIPT = "events.on('image_push', () => {})"
IGNORED_BECAUSE = "; builds are made for image_push"

# -- What each registry sends (tests/payloads/<registry>/HEADERS.md) ----------

JSON = {"Content-Type": "application/json"}
ACR_WEBHOOK = {"Content-Type": "application/json", "User-Agent": "AzureContainerRegistry/1.0"}


def event_grid(event_type: str = "Notification") -> dict[str, str]:
    """An Event Grid webhook delivery's headers."""
    return {
        "Content-Type": "application/json",
        "aeg-event-type": event_type,
        "aeg-subscription-name": "BRIGADE",
        "aeg-delivery-count": "0",
        "aeg-data-version": "1.0",
        "aeg-metadata-version": "1",
    }


# Event Grid with the CloudEvents 1.0 schema: the documented bodies are
# arrays, which CloudEvents calls a batch.
EVENT_GRID_CLOUDEVENTS = {
    **event_grid(),
    "Content-Type": "application/cloudevents-batch+json; charset=utf-8",
}
DISTRIBUTION_V1 = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
DISTRIBUTION_V2 = {"Content-Type": "application/vnd.docker.distribution.events.v2+json"}
HARBOR_CLOUDEVENTS = {"Content-Type": "application/cloudevents+json"}
QUAY = {"Content-type": "application/json"}  # Quay's own spelling
ECR = {"Content-Type": "application/json", "User-Agent": "Amazon/EventBridge/ApiDestinations"}


def stable_id(name: str) -> str:
    """A delivery GUID that is the same every time for the same name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"brigade-crgw-test:{name}"))


def github(event: str, delivery: str) -> dict[str, str]:
    """A GitHub webhook delivery's headers (no secret set, so no signature)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "292430182",
    }


def nexus(webhook_id: str, delivery: str) -> dict[str, str]:
    """A Nexus webhook delivery's headers, as its documentation shows them."""
    return {
        "Content-Type": "application/json; charset=UTF-8",
        "User-Agent": "Nexus/3.1.0-SNAPSHOT (PRO; Mac OS X; 10.11.1; x86_64; 1.8.0_60)",
        "X-Request-Id": "d535c62b-063e-4ace-90ce-f7b579d6c37c",
        "X-Nexus-Webhook-Id": webhook_id,
        "X-Nexus-Webhook-Delivery": delivery,
    }


def pubsub_unwrapped(message_id: str) -> dict[str, str]:
    """A Pub/Sub push subscription with payload unwrapping and metadata."""
    return {
        "Content-Type": "application/json",
        "x-goog-pubsub-message-id": message_id,
        "x-goog-pubsub-publish-time": "2026-01-01T00:00:00Z",
        "x-goog-pubsub-subscription-name": "projects/my-project/subscriptions/brigade",
    }


# Registries that can add a header of our choosing send the token as
# ``Authorization: Bearer``; the others get ?token= in the URL (README,
# Registries).
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def headers_for(name: str) -> dict[str, str]:
    """The headers the registry of fixture ``registry/file.json`` sends with it."""
    registry, file = name.split("/")
    if registry == "acr":
        if file.startswith("SubscriptionValidation"):
            return event_grid("SubscriptionValidation")
        if "-cloudevents" in file:
            return dict(EVENT_GRID_CLOUDEVENTS)
        if file[0].isupper():
            return event_grid()
        return {**ACR_WEBHOOK, **BEARER}
    if registry == "distribution":
        # Registry 3.x (whose documentation and tests these are) says v2.
        v3 = "-docs" in file or "-v3" in file
        return {**(DISTRIBUTION_V2 if v3 else DISTRIBUTION_V1), **BEARER}
    if registry == "harbor":
        return {**(HARBOR_CLOUDEVENTS if "cloudevents" in file else JSON), **BEARER}
    if registry == "github":
        event = "ping" if file.startswith("ping") else file.split("-")[0]
        return github(event, stable_id(name))
    if registry == "nexus":
        return nexus("rm:repository:" + file.split("-")[0], stable_id(name))
    if registry == "gar":
        return JSON if file.startswith("pubsub") else pubsub_unwrapped(stable_id(name))
    if registry == "quay":
        return dict(QUAY)
    if registry == "ecr":
        return {**ECR, **BEARER}
    if registry == "jfrog":  # no secret token configured, a custom Authorization header
        return {**JSON, **BEARER}
    return dict(JSON)  # alibaba, dockerhub, dtr


def url(*, token: bool, commit: str = "", registry: str | None = None) -> str:
    """The project's webhook URL, with ``?token=``, ``?commit=``, ``?registry=``."""
    query: dict[str, str] = {}
    if token:
        query["token"] = TOKEN
    if commit:
        query["commit"] = commit
    if registry is not None:
        query["registry"] = registry
    return "/events/webhook/acme/app" + (f"?{urlencode(query, safe='/')}" if query else "")


def fixture(name: str) -> bytes:
    """A fixture's bytes."""
    return (PAYLOADS / name).read_bytes()


def every_fixture() -> list[str]:
    """Every .json fixture, as ``registry/file.json``."""
    return sorted(str(p.relative_to(PAYLOADS)) for p in PAYLOADS.glob("*/*.json"))


# -- The daemon ----------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(
    namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[gateway_process.Daemon]:
    """The real gateway, default configuration, with the project acme/app."""
    namespace.plane.core.create_namespaced_secret(namespace.name, project_secret(PROJECT))
    process = gateway_process.start(
        tmp_path_factory.mktemp("gw"), namespace.name, namespace.gateway_kubeconfig
    )
    yield process
    process.stop()


def send(
    gateway: gateway_process.Daemon,
    name: str,
    *,
    commit: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    registry: str | None = None,
    token_in_url: bool | None = None,
) -> gateway_process.Answer:
    """POST a fixture (or a body made from it) as its registry would, with
    the token in the URL unless the headers carry it."""
    headers = headers_for(name) if headers is None else headers
    if token_in_url is None:
        token_in_url = "Authorization" not in headers
    return gateway.request(
        "POST",
        url(token=token_in_url, commit=commit, registry=registry),
        fixture(name) if body is None else body,
        headers,
    )


def new_builds(
    namespace: Namespace, before: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The build Secrets that did not exist in ``before``."""
    return {name: s for name, s in builds(namespace).items() if name not in before}


def check_build(secret: dict[str, Any], name: str, commit: str) -> dict[str, str]:
    """Check what every build must be, whatever the registry; its decoded data."""
    assert secret["type"] == "brigade.sh/build"
    assert secret["metadata"]["labels"] == {
        "build": name.removeprefix("brigade-worker-"),
        "component": "build",
        "heritage": "brigade",
        "project": PROJECT_ID,
    }
    data = decoded(secret)
    assert data["build_id"] == data["build_name"] == name
    assert data["project_id"] == PROJECT_ID
    assert data["event_type"] == "image_push"
    assert data["commit_ref"] == commit
    assert data["script"] == SCRIPT
    assert data["clone_url"] == f"https://github.com/{PROJECT}.git"
    return data


# -- 1. Each registry's push ---------------------------------------------------

# Where an event sits in a parsed body: keys and indexes.
Where = tuple[str | int, ...]


@attr.s(frozen=True, auto_attribs=True)
class Push:
    """A push delivery and the builds it must make, written out by hand.

    :param label: the test id, and the commit-ish its builds carry.
    :param name: the fixture (``registry/file.json``).
    :param kind: the build's ``event_provider``.
    :param titles: ``(short_title, long_title)`` of each build, in order.
    :param event: where in the body the build's event is, when the body
        holds several (its payload is then that event's JSON); ``None``:
        the payload is the body sent.
    :param body: a body made by hand from the fixture, when not the fixture.
    :param headers: other headers than the fixture's registry's usual ones.
    """

    label: str
    name: str
    kind: str
    titles: tuple[tuple[str, str], ...]
    event: Where | None = None
    body: bytes | None = None
    headers: dict[str, str] | None = None


def one(short: str, long: str) -> tuple[tuple[str, str], ...]:
    """The titles of a delivery that makes one build."""
    return ((short, long),)


ACR_DIGEST = "sha256:80f0d5c8786bb9e621a45ece0db56d11cdc624ad20da9fe62e9d25490f331d7d"
GRID_DIGEST = "sha256:213bbc182920ab41e18edc2001e06abcca6735d87782d9cef68abd83941cf0e5"
GRID_PUSH = one(
    "aci-helloworld:v1", f"Pushed demo.azurecr.io/aci-helloworld:v1 ({GRID_DIGEST}) via acr"
)
HARBOR_BY_DIGEST = one(
    "harbor/alpine@sha256:954b378c375d",
    "Pushed localhost/harbor/alpine@sha256:954b378c375d "
    "(sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4) "
    "via harbor by harbor-jobservice",
)
GAR_TAGGED = one(
    "my-project/my-repo/hello-world:1.1",
    "Pushed us-west1-docker.pkg.dev/my-project/my-repo/hello-world:1.1 (sha256:...) via gar",
)


def harbor_binary_cloudevent() -> tuple[bytes, dict[str, str]]:
    """Harbor's documented structured CloudEvent, re-sent in binary mode by
    hand (attributes as ``ce-`` headers, ``data`` as the body): no registry
    documents a binary-mode image push."""
    doc = json.loads(fixture("harbor/push_artifact-cloudevents.json"))
    headers = {"Content-Type": doc["datacontenttype"], **BEARER}
    for key in ("specversion", "id", "source", "type", "time", "requestid", "operator"):
        headers[f"ce-{key}"] = doc[key]
    return json.dumps(doc["data"]).encode(), headers


def pubsub_envelope(message: str, message_id: str) -> bytes:
    """A Pub/Sub push envelope (the shape of gar/pubsub-push-envelope.json)
    wrapped by hand around a real Artifact Registry message."""
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(fixture(message)).decode(),
                "messageId": message_id,
                "publishTime": "2026-01-01T00:00:00Z",
                "attributes": {},
            },
            "subscription": "projects/my-project/subscriptions/brigade",
        }
    ).encode()


def quay_three_tags() -> bytes:
    """Quay's documented repo_push with two more tags added by hand: the
    documentation's example pushes one tag."""
    doc = json.loads(fixture("quay/repo_push.json"))
    doc["updated_tags"] = ["latest", "v1.0", "stable"]
    return json.dumps(doc).encode()


_binary_body, _binary_headers = harbor_binary_cloudevent()

PUSHES = [
    Push(
        "dockerhub",
        "dockerhub/push-docs.json",
        "dockerhub",
        one(
            "svendowideit/testhook:latest",
            "Pushed docker.io/svendowideit/testhook:latest via dockerhub by trustedbuilder",
        ),
    ),
    Push(
        "dockerhub-keel",
        "dockerhub/push-keel.json",
        "dockerhub",
        one(
            "karolisr/keel:0.1.7", "Pushed docker.io/karolisr/keel:0.1.7 via dockerhub by karolisr"
        ),
    ),
    Push(
        "acr-webhook",
        "acr/push-docs-unredacted.json",
        "acr",
        one(
            "hello-world:v1", f"Pushed myregistry.azurecr.io/hello-world:v1 ({ACR_DIGEST}) via acr"
        ),
    ),
    Push(
        "acr-webhook-argocd",
        "acr/push-argocd-image-updater.json",
        "acr",
        one(
            "hello-world:test-v1",
            "Pushed mojrodevops.azurecr.io/hello-world:test-v1 (sha256:"
            "c766679d161d4ffe3dc4503b4c9f90b978f0d363fcedb02d1ae0cd271e645c0a) via acr",
        ),
    ),
    Push("acr-eventgrid", "acr/ImagePushed-eventgrid-azurecn.json", "acr", GRID_PUSH, (0,)),
    Push("acr-eventgrid-2018", "acr/ImagePushed-eventgrid.json", "acr", GRID_PUSH, (0,)),
    Push("acr-cloudevents", "acr/ImagePushed-cloudevents-current.json", "acr", GRID_PUSH, (0,)),
    Push("acr-cloudevents-2021", "acr/ImagePushed-cloudevents.json", "acr", GRID_PUSH, (0,)),
    Push(
        "distribution",
        "distribution/push-envelope-docs.json",
        "distribution",
        one(
            "library/test@sha256:fea8895f4509",
            "Pushed registrycluster.local/library/test@sha256:fea8895f4509 "
            "(sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf) "
            "via distribution by test-actor",
        ),
        ("events", 0),
    ),
    Push(
        "distribution-2.8",
        "distribution/push-envelope-eventtest-v2.8.json",
        "distribution",
        one(
            "library/test@sha256:0123456789ab",
            "Pushed registrycluster.local/library/test@sha256:0123456789ab "
            "(sha256:0123456789abcdef0) via distribution by test-actor",
        ),
        ("events", 0),
    ),
    Push(
        "harbor-default",
        "harbor/push_artifact-kobold.json",
        "harbor",
        one(
            "mynamespace/myapp:master-491-6bac849",
            "Pushed harbor.mydomain.lan/mynamespace/myapp:master-491-6bac849 (sha256:"
            "fd49e9a1a36d28c54520d89bb23f07365802c5c75108c7eaca4400ed60bb19a5) "
            "via harbor by build-myapp",
        ),
    ),
    Push(
        "harbor-default-by-digest", "harbor/push_artifact-default.json", "harbor", HARBOR_BY_DIGEST
    ),
    Push(
        "harbor-1.10",
        "harbor/pushImage-v1.10-sourcetest.json",
        "harbor",
        one(
            "myproj/alpine:v1.0",
            "Pushed 10.194.32.23/myproj/alpine:v1.0 (sha256:"
            "bf1684a6e3676389ec861c602e97f27b03f14178e5bc3f70dce198f9f160cce9) via harbor by admin",
        ),
    ),
    Push("harbor-cloudevents", "harbor/push_artifact-cloudevents.json", "harbor", HARBOR_BY_DIGEST),
    Push(
        "harbor-cloudevents-binary",
        "harbor/push_artifact-cloudevents.json",
        "harbor",
        HARBOR_BY_DIGEST,
        body=_binary_body,
        headers=_binary_headers,
    ),
    Push(
        "quay",
        "quay/repo_push.json",
        "quay",
        one(
            "mynamespace/repository:latest", "Pushed quay.io/mynamespace/repository:latest via quay"
        ),
    ),
    Push(
        "quay-legacy",
        "quay/repo_push-glossary-legacy.json",
        "quay",
        one("devtable/ubuntu:latest", "Pushed quay.io/devtable/ubuntu:latest via quay"),
    ),
    Push(
        "quay-three-tags",
        "quay/repo_push.json",
        "quay",
        tuple(
            (
                f"mynamespace/repository:{tag}",
                f"Pushed quay.io/mynamespace/repository:{tag} via quay",
            )
            for tag in ("latest", "v1.0", "stable")
        ),
        body=quay_three_tags(),
    ),
    Push(
        "jfrog",
        "jfrog/docker-pushed-keel.json",
        "jfrog",
        one(
            "library/ubuntu:latest",
            "Pushed example.jfrog.io/library/ubuntu:latest (sha256:"
            "35c4a2c15539c6c1e4e5fa4e554dac323ad0107d8eb5c582d6ff386b383b7dce) "
            "via jfrog by user@example.com",
        ),
    ),
    Push(
        "nexus",
        "nexus/component-created-docker-ibdm.json",
        "nexus",
        one("mygroup/my-image:1.0.0", "Pushed mygroup/my-image:1.0.0 via nexus by anonymous"),
    ),
    Push(
        "github",
        "github/package-published-container-octokit.json",
        "github",
        one(
            "Codertocat/hello-world@sha256:6c62fb45fe66",
            "Pushed ghcr.io/Codertocat/hello-world@sha256:6c62fb45fe66 "
            "(sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b) via github by Codertocat",
        ),
    ),
    Push(
        "github-registry-package",
        "github/registry_package-published-keel.json",
        "github",
        one(
            "DingGGu/UtaiteBOX/server:1.2.3",
            "Pushed ghcr.io/DingGGu/UtaiteBOX/server:1.2.3 via github by DingGGu",
        ),
    ),
    Push("gar", "gar/INSERT-with-tag.json", "gar", GAR_TAGGED),
    Push(
        "gar-digest-only",
        "gar/INSERT-digest-only.json",
        "gar",
        one(
            "my-project/my-repo/hello-world@sha256:...",
            "Pushed us-west1-docker.pkg.dev/my-project/my-repo/hello-world@sha256:... "
            "(sha256:...) via gar",
        ),
    ),
    Push(
        "gar-pubsub-envelope",
        "gar/INSERT-with-tag.json",
        "gar",
        GAR_TAGGED,
        body=pubsub_envelope("gar/INSERT-with-tag.json", "2070443601311540"),
        headers=dict(JSON),
    ),
    Push(
        "ecr",
        "ecr/image-action-PUSH.json",
        "ecr",
        one(
            "my-repository-name:latest",
            "Pushed 123456789012.dkr.ecr.us-west-2.amazonaws.com/my-repository-name:latest "
            "(sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234) via ecr",
        ),
    ),
    Push(
        "alibaba",
        "alibaba/push-argocd-image-updater.json",
        "alibaba",
        one(
            "namespace/repoTest:latest",
            "Pushed registry.cn-hangzhou.aliyuncs.com/namespace/repoTest:latest (sha256:"
            "457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917) via alibaba",
        ),
    ),
    Push(
        "dtr",
        "dtr/TAG_PUSH-test-payload.json",
        "dtr",
        one(
            "foo/bar:latest",
            "Pushed foo/bar:latest (sha256:"
            "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c) via dtr",
        ),
    ),
]


def at_path(doc: Any, path: Where) -> Any:
    """The value at ``path`` in a parsed document."""
    for step in path:
        doc = doc[step]
    return doc


@pytest.mark.parametrize("push", PUSHES, ids=[p.label for p in PUSHES])
def test_push_makes_its_builds(
    gateway: gateway_process.Daemon, namespace: Namespace, push: Push
) -> None:
    """A registry's documented push, sent as that registry sends it, makes
    exactly its builds, each with the registry as provider, the image's
    titles and the event as payload."""
    commit = f"push/{push.label}"
    body = fixture(push.name) if push.body is None else push.body
    before = builds(namespace)
    answer = send(gateway, push.name, commit=commit, body=body, headers=push.headers)
    assert answer.status == 200, answer.body
    reply = answer.json()
    assert reply["status"] == "Success", reply
    names = reply["builds"]
    assert len(names) == len(set(names)) == len(push.titles)
    created = new_builds(namespace, before)
    assert set(created) == set(names)
    for name, (short, long) in zip(names, push.titles, strict=True):
        data = check_build(created[name], name, commit)
        assert data["event_provider"] == push.kind
        assert data["short_title"] == short
        assert data["long_title"] == long
        if push.event is None:
            assert data["payload"].encode() == body
        else:
            assert json.loads(data["payload"]) == at_path(json.loads(body), push.event)


# -- 2. Everything else is ignored ---------------------------------------------

# Each fixture that is not an image push, and the actions the gateway must
# name for it (read by hand from the fixture and the README's table).
IGNORED = {
    "acr/delete.json": "acr sent image_delete",
    "acr/delete-docs-unredacted.json": "acr sent image_delete",
    "acr/chart_push.json": "acr sent chart_push",
    "acr/chart_delete.json": "acr sent chart_delete",
    "acr/quarantine.json": "acr sent quarantine",
    "acr/ping-kargo-trimmed.json": "acr sent ping",
    "acr/ImageDeleted-eventgrid.json": "acr sent image_delete",
    "acr/ChartPushed-eventgrid.json": "acr sent chart_push",
    "acr/ChartDeleted-eventgrid.json": "acr sent chart_delete",
    "acr/ImageDeleted-cloudevents.json": "acr sent image_delete",
    "acr/ChartPushed-cloudevents.json": "acr sent chart_push",
    "acr/ChartDeleted-cloudevents.json": "acr sent chart_delete",
    "distribution/pull-envelope-docs.json": "distribution sent pull",
    "distribution/pull-event-portus.json": "distribution sent pull",
    "distribution/delete-event-portus.json": "distribution sent image_delete",
    "harbor/delete_artifact-default.json": "harbor sent image_delete",
    "harbor/pull_artifact-default.json": "harbor sent pull",
    "harbor/pull_artifact-default-sourcecomment.json": "harbor sent pull",
    "harbor/quota_exceed-default.json": "harbor sent quota_exceed",
    "harbor/quota_warning-default.json": "harbor sent quota_warning",
    "harbor/replication-default.json": "harbor sent replication",
    "harbor/scanning_completed-default.json": "harbor sent scan_completed",
    "harbor/scanning_failed-default.json": "harbor sent scan_failed",
    "harbor/scanning_stopped-default.json": "harbor sent scan_stopped",
    "harbor/tag_retention-default.json": "harbor sent tag_retention",
    "harbor/delete_artifact-cloudevents.json": "harbor sent image_delete",
    "harbor/pull_artifact-cloudevents.json": "harbor sent pull",
    "harbor/pull_artifact-cloudevents-sourcecomment.json": "harbor sent pull",
    "harbor/quota_exceed-cloudevents.json": "harbor sent quota_exceed",
    "harbor/quota_warning-cloudevents.json": "harbor sent quota_warning",
    "harbor/replication-cloudevents.json": "harbor sent replication",
    "harbor/scanning_completed-cloudevents.json": "harbor sent scan_completed",
    "harbor/scanning_failed-cloudevents.json": "harbor sent scan_failed",
    "harbor/scanning_stopped-cloudevents.json": "harbor sent scan_stopped",
    "harbor/tag_retention-cloudevents.json": "harbor sent tag_retention",
    "quay/build_queued.json": "quay sent build",
    "quay/build_start.json": "quay sent build",
    "quay/build_success.json": "quay sent build",
    "quay/build_failure.json": "quay sent build_failure",
    "quay/vulnerability_found.json": "quay sent vulnerability_found",
    "jfrog/artifact-deployed-docs.json": "jfrog sent artifact_deployed",
    "jfrog/artifact-deleted-docs.json": "jfrog sent artifact_deleted",
    "jfrog/docker-deleted-telegraf.json": "jfrog sent image_delete",
    "jfrog/docker-promoted-telegraf.json": "jfrog sent promoted",
    "nexus/asset-created-docs.json": "nexus sent npm_asset_created",
    "nexus/component-created-docs.json": "nexus sent npm_created",
    "github/ping-octokit.json": "github sent ping",
    "github/package-published-npm-octokit.json": "github sent npm_published",
    "github/package-create-ghcr-keel.json": "github sent create",
    "gar/DELETE-tag.json": "gar sent image_delete",
    "ecr/image-action-DELETE.json": "ecr sent image_delete",
    "ecr/image-scan-basic.json": "ecr sent image_scan",
    "ecr/inspector2-scan-resource-change.json": "ecr sent scan_resource_change",
}


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_non_push_is_ignored(
    gateway: gateway_process.Daemon, namespace: Namespace, name: str
) -> None:
    """A registry's documented non-push event (delete, pull, ping, scan,
    quota, replication, chart...) is answered ignored, naming the action,
    and makes no Secret."""
    before = builds(namespace)
    answer = send(gateway, name, commit="ignored")
    assert answer.status == 200, answer.body
    assert answer.json() == {"status": "ignored", "reason": IGNORED[name] + IGNORED_BECAUSE}
    assert builds(namespace) == before


def test_distribution_blob_pushes_are_ignored(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """A Distribution delivery holding only layer (blob) pushes, made by hand
    from the documented envelope without its manifest event, makes no build."""
    doc = json.loads(fixture("distribution/push-envelope-docs.json"))
    doc["events"] = doc["events"][1:]
    before = builds(namespace)
    answer = send(
        gateway,
        "distribution/push-envelope-docs.json",
        commit="blobs",
        body=json.dumps(doc).encode(),
    )
    assert answer.status == 200, answer.body
    assert answer.json() == {
        "status": "ignored",
        "reason": "distribution sent blob_push" + IGNORED_BECAUSE,
    }
    assert builds(namespace) == before


# -- 3. Event Grid's handshakes ------------------------------------------------

VALIDATION = "acr/SubscriptionValidation-eventgrid-docs.json"
VALIDATION_CODE = "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"  # its data.validationCode


def test_event_grid_subscription_validation(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """Event Grid's documented validation event is answered with its
    validation code, and makes nothing."""
    before = builds(namespace)
    answer = send(gateway, VALIDATION, commit="validation")
    assert answer.status == 200, answer.body
    assert answer.json() == {"validationResponse": VALIDATION_CODE}
    assert builds(namespace) == before


def test_cloudevents_options_handshake(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """The CloudEvents webhook handshake (OPTIONS from Event Grid) is allowed
    for the origin that asks, and makes nothing."""
    before = builds(namespace)
    answer = gateway.request(
        "OPTIONS",
        "/events/webhook/acme/app",
        headers={"WebHook-Request-Origin": "eventgrid.azure.net", "WebHook-Request-Rate": "120"},
    )
    assert answer.status == 200, answer.body
    assert answer.headers["webhook-allowed-origin"] == "eventgrid.azure.net"
    assert "POST" in answer.headers["allow"]
    assert builds(namespace) == before


# -- 4. Redelivery ----------------------------------------------------------------


# How a different delivery differs from a given one: (body, headers) -> (body, headers).
Change = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]


def _with_field(path: Where, value: str) -> Change:
    """The body's field at ``path`` set to ``value``."""

    def change(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        doc = json.loads(body)
        at_path(doc, path[:-1])[path[-1]] = value
        return json.dumps(doc).encode(), headers

    return change


def _with_header(header: str, value: str) -> Change:
    """The header ``header`` set to ``value``."""

    def change(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        return body, {**headers, header: value}

    return change


def _fresh(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """Another push time (Docker Hub) or event id (ACR), as factories.fresh makes."""
    return fresh(body, 1), headers


# A delivery per transport that carries an identity, and how a different
# delivery of the same image differs from it.
REDELIVERIES: dict[str, tuple[str, Change]] = {
    "acr-webhook": ("acr/push-docs-unredacted.json", _fresh),
    "acr-eventgrid": ("acr/ImagePushed-eventgrid-azurecn.json", _with_field((0, "id"), "other")),
    "acr-cloudevents": (
        "acr/ImagePushed-cloudevents-current.json",
        _with_field((0, "id"), "other"),
    ),
    "distribution": ("distribution/push-envelope-docs.json", _with_field(("events", 0, "id"), "x")),
    "harbor-cloudevents": ("harbor/push_artifact-cloudevents.json", _with_field(("id",), "other")),
    "dockerhub": ("dockerhub/push-docs.json", _fresh),
    "github": (
        "github/package-published-container-octokit.json",
        _with_header("X-GitHub-Delivery", stable_id("another delivery")),
    ),
    "nexus": (
        "nexus/component-created-docker-ibdm.json",
        _with_header("X-Nexus-Webhook-Delivery", stable_id("another delivery")),
    ),
    "gar": ("gar/INSERT-with-tag.json", _with_header("x-goog-pubsub-message-id", "42")),
    "ecr": ("ecr/image-action-PUSH.json", _with_field(("id",), "other")),
    "alibaba": (
        "alibaba/push-argocd-image-updater.json",
        _with_field(("push_data", "pushed_at"), "2016-11-29 12:30:00"),
    ),
}


@pytest.mark.parametrize("label", sorted(REDELIVERIES))
def test_redelivery_is_one_build(
    gateway: gateway_process.Daemon, namespace: Namespace, label: str
) -> None:
    """The same delivery posted twice is answered twice with the same builds,
    which exist once; a different delivery of the same image is a new build."""
    name, change = REDELIVERIES[label]
    commit = f"redelivery/{label}"
    before = builds(namespace)
    first = send(gateway, name, commit=commit)
    again = send(gateway, name, commit=commit)
    assert first.status == again.status == 200, (first.body, again.body)
    names = first.json()["builds"]
    assert first.json() == again.json() == {"status": "Success", "builds": names}
    assert len(names) == 1
    assert set(new_builds(namespace, before)) == set(names)

    body, headers = change(fixture(name), headers_for(name))
    other = send(gateway, name, commit=commit, body=body, headers=headers)
    assert other.status == 200, other.body
    other_names = other.json()["builds"]
    assert len(other_names) == 1 and set(other_names).isdisjoint(names)
    assert set(new_builds(namespace, before)) == set(names) | set(other_names)


def test_simultaneous_redelivery_is_one_build(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """The same ACR webhook arriving four times at once is four 200s with the
    same build, which exists once."""
    name = "acr/push-kobold.json"
    before = builds(namespace)
    answers: list[gateway_process.Answer] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        answers.append(send(gateway, name, commit="simultaneous"))

    senders = [threading.Thread(target=deliver) for _ in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    assert [a.status for a in answers] == [200] * 4, [a.body for a in answers]
    (names,) = {tuple(a.json()["builds"]) for a in answers}
    assert len(names) == 1
    assert set(new_builds(namespace, before)) == set(names)


# -- Registries that sign their bodies --------------------------------------------


def _hex_hmac(algorithm: Any, key: str, body: bytes) -> str:
    """The hex HMAC of ``body`` keyed with ``key``, as the registries sign."""
    return hmac.new(key.encode(), body, algorithm).hexdigest()


SIGNED = {
    "github": (
        "github/package-published-container-octokit.json",
        lambda key, body: {"X-Hub-Signature-256": "sha256=" + _hex_hmac(hashlib.sha256, key, body)},
    ),
    "jfrog-signing": (
        "jfrog/docker-pushed-keel.json",
        lambda key, body: {"X-JFrog-Event-Auth": _hex_hmac(hashlib.sha256, key, body)},
    ),
    "jfrog-secret-token": (
        "jfrog/docker-pushed-keel.json",
        lambda key, body: {"X-JFrog-Event-Auth": key},
    ),
    "nexus": (
        "nexus/component-created-docker-ibdm.json",
        lambda key, body: {"X-Nexus-Webhook-Signature": _hex_hmac(hashlib.sha1, key, body)},
    ),
}


@pytest.mark.parametrize("label", sorted(SIGNED))
def test_registry_own_credentials(
    gateway: gateway_process.Daemon, namespace: Namespace, label: str
) -> None:
    """A registry that proves itself its own way (the token as its signing
    secret or secret token, no ?token=) makes its build; the same header
    made with another secret is a 401 and makes nothing."""
    name, credentials = SIGNED[label]
    body = fixture(name)
    headers = {k: v for k, v in headers_for(name).items() if k != "Authorization"}
    before = builds(namespace)
    wrong = send(
        gateway,
        name,
        commit=f"signed/{label}",
        headers={**headers, **credentials("not-the-token", body)},
        token_in_url=False,
    )
    assert wrong.status == 401, wrong.body
    assert builds(namespace) == before
    answer = send(
        gateway,
        name,
        commit=f"signed/{label}",
        headers={**headers, **credentials(TOKEN, body)},
        token_in_url=False,
    )
    assert answer.status == 200, answer.body
    (build,) = answer.json()["builds"]
    created = new_builds(namespace, before)
    assert set(created) == {build}
    assert decoded(created[build])["event_provider"] == name.split("/")[0]


# -- 5. ?registry= -------------------------------------------------------------

PORTUS_PUSH = "distribution/push-event-portus-registry2.3.json"
PORTUS_SHORT = "mssola/lala@sha256:b9c8a3839b27"
PORTUS_DIGEST = "sha256:b9c8a3839b2754e0fc4309e0f994f617d43814996805388e2f9d977db3fa7967"


@pytest.mark.parametrize(
    ("registry", "kind", "short", "long"),
    [
        (
            None,
            "acr",
            PORTUS_SHORT,
            f"Pushed registry.mssola.cat:5000/{PORTUS_SHORT} ({PORTUS_DIGEST}) via acr by mssola",
        ),
        (
            "distribution",
            "distribution",
            PORTUS_SHORT,
            f"Pushed registry.mssola.cat:5000/{PORTUS_SHORT} ({PORTUS_DIGEST}) "
            "via distribution by mssola",
        ),
        (
            "DISTRIBUTION",
            "distribution",
            PORTUS_SHORT,
            f"Pushed registry.mssola.cat:5000/{PORTUS_SHORT} ({PORTUS_DIGEST}) "
            "via distribution by mssola",
        ),
        # The generic reader looks for a name at the top level only.
        ("generic", "generic", "(unknown repository)", "Pushed (unknown repository) via generic"),
    ],
)
def test_registry_parameter_overrides_detection(
    gateway: gateway_process.Daemon,
    namespace: Namespace,
    registry: str | None,
    kind: str,
    short: str,
    long: str,
) -> None:
    """A bare Distribution event sent as plain JSON reads as ACR's webhook
    (the same shape), and as Distribution's, or anything named, with
    ?registry=."""
    commit = f"override/{registry}"
    before = builds(namespace)
    answer = send(
        gateway, PORTUS_PUSH, commit=commit, headers={**JSON, **BEARER}, registry=registry
    )
    assert answer.status == 200, answer.body
    (name,) = answer.json()["builds"]
    created = new_builds(namespace, before)
    assert set(created) == {name}
    data = check_build(created[name], name, commit)
    assert (data["event_provider"], data["short_title"], data["long_title"]) == (kind, short, long)
    assert data["payload"].encode() == fixture(PORTUS_PUSH)


def test_unknown_registry_parameter_is_400(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """An unknown ?registry= is a 400 JSON answer naming it, and makes nothing."""
    before = builds(namespace)
    answer = send(gateway, "acr/push.json", commit="unknown", registry="artifactory")
    assert answer.status == 400, answer.body
    assert answer.headers["content-type"] == "application/json"
    reply = answer.json()
    assert reply["status"] == "bad request"
    assert "'artifactory'" in reply["reason"] and "distribution" in reply["reason"]
    assert builds(namespace) == before


# -- 6. Every fixture ---------------------------------------------------------------

# Fixtures that are not whole deliveries: the Pub/Sub envelope's data is the
# documentation's placeholder, not base64.
REFUSED = {"gar/pubsub-push-envelope.json": 400}

# The fixtures that make builds, with their count and provider, by hand: one
# image push each, except the Distribution documentation's delete *fragment*
# (a bare "target"), which nothing recognises and so is a generic push.
BUILDING = {
    **{
        f"acr/{file}": ("acr", 1)
        for file in (
            "ImagePushed-cloudevents-current.json",
            "ImagePushed-cloudevents.json",
            "ImagePushed-eventgrid-azurecn.json",
            "ImagePushed-eventgrid.json",
            "push-argocd-image-updater.json",
            "push-docs-unredacted.json",
            "push-kobold.json",
            "push-rest-api-listevents-example.json",
            "push.json",
        )
    },
    "alibaba/push-argocd-image-updater.json": ("alibaba", 1),
    "distribution/push-envelope-docs.json": ("distribution", 1),
    "distribution/push-envelope-eventtest-v2.8.json": ("distribution", 1),
    "distribution/push-envelope-eventtest-v3.json": ("distribution", 1),
    "distribution/push-event-portus-registry2.3.json": ("distribution", 1),
    "distribution/delete-target-fragment-docs.json": ("generic", 1),
    **{
        f"dockerhub/{file}": ("dockerhub", 1)
        for file in (
            "push-captured-aumjaud.json",
            "push-docs-legacy.json",
            "push-docs.json",
            "push-keel.json",
        )
    },
    "dtr/TAG_PUSH-test-payload.json": ("dtr", 1),
    "ecr/image-action-PUSH.json": ("ecr", 1),
    "gar/INSERT-digest-only.json": ("gar", 1),
    "gar/INSERT-with-tag.json": ("gar", 1),
    "github/package-published-container-octokit.json": ("github", 1),
    "github/registry_package-published-container-octokit.json": ("github", 1),
    "github/registry_package-published-keel.json": ("github", 1),
    **{
        f"harbor/{file}": ("harbor", 1)
        for file in (
            "pushImage-keel.json",
            "pushImage-v1.10-sourcetest.json",
            "pushImage-v1.10docs.json",
            "push_artifact-argocd-image-updater.json",
            "push_artifact-cloudevents.json",
            "push_artifact-default-v2.0docs.json",
            "push_artifact-default.json",
            "push_artifact-keel.json",
            "push_artifact-kobold.json",
        )
    },
    "jfrog/docker-pushed-keel.json": ("jfrog", 1),
    "jfrog/docker-pushed-telegraf.json": ("jfrog", 1),
    "nexus/component-created-docker-ibdm.json": ("nexus", 1),
    **{
        f"quay/{file}": ("quay", 1)
        for file in (
            "repo_push-glossary-legacy.json",
            "repo_push-keel.json",
            "repo_push-legacy2015.json",
            "repo_push.json",
        )
    },
}

# Builds per registry directory, counted by hand from BUILDING.
BUILDS_PER_REGISTRY = {
    "acr": 9,
    "alibaba": 1,
    "distribution": 5,
    "dockerhub": 4,
    "dtr": 1,
    "ecr": 1,
    "gar": 2,
    "github": 3,
    "harbor": 9,
    "jfrog": 2,
    "nexus": 1,
    "quay": 4,
}


def test_every_fixture(gateway: gateway_process.Daemon, namespace: Namespace) -> None:
    """Every real payload, sent as its registry sends it, is answered 200 (a
    documented fragment a clean 4xx), never harms the daemon, and makes
    exactly the builds it names: those written out by hand, and no others."""
    names = every_fixture()
    assert len(names) == 97
    assert set(names) == set(BUILDING) | set(IGNORED) | set(REFUSED) | {VALIDATION}
    summary: dict[str, str] = {}  # fixture -> its builds, or its refusal
    made_by: dict[str, int] = {}
    per_registry: dict[str, int] = {}
    for index, name in enumerate(names):
        # A commit-ish of its own: fixtures copied from one another's
        # documentation share event ids, which would read as redeliveries.
        commit = f"corpus/{index}"
        before = builds(namespace)
        answer = send(gateway, name, commit=commit)
        assert gateway.alive(), f"{name} ended the daemon:\n{gateway.log()}"
        if name in REFUSED:
            assert answer.status == REFUSED[name], (name, answer.body)
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["status"] == "bad request", name
            assert builds(namespace) == before
            summary[name] = f"refused {answer.status}"
            continue
        assert answer.status == 200, (name, answer.body)
        reply = answer.json()
        made = reply.get("builds", [])
        created = new_builds(namespace, before)
        assert set(created) == set(made), (name, reply)
        assert len(made) == len(set(made))
        if name in BUILDING:
            kind, count = BUILDING[name]
            assert reply["status"] == "Success" and len(made) == count, (name, reply)
            for build in made:
                data = check_build(created[build], build, commit)
                assert data["event_provider"] == kind, name
        elif name == VALIDATION:
            assert reply == {"validationResponse": VALIDATION_CODE}
        else:
            assert reply == {"status": "ignored", "reason": IGNORED[name] + IGNORED_BECAUSE}
        summary[name] = f"{len(made)} build(s)"
        made_by[name] = len(made)
        registry = name.split("/")[0]
        per_registry[registry] = per_registry.get(registry, 0) + len(made)
    print("\nbuilds per fixture:")
    for name, outcome in summary.items():
        print(f"  {name}: {outcome}")
    assert {name for name, made_count in made_by.items() if made_count} == set(BUILDING)
    assert per_registry == BUILDS_PER_REGISTRY
    assert gateway.request("GET", "/healthz").status == 200
