"""Every registry understood end to end: the real daemon, real HTTP, the
real API server.

For each registry, one push and one other event from the payload catalogue
(tests/payloads/, see tests/helpers.py) are POSTed with the headers that
registry sends (its HEADERS.toml) and the project token where that registry
can put it, and the build Secrets are read back as the admin sees them. The
unit tier checks every payload's events and titles; this tier checks that
the gateway turns them into exactly those builds and answers. Then the cases
that cross registries: a binary CloudEvent, several builds from one
delivery, Event Grid's handshakes, redelivery, registries' own credentials
and ``?registry=``.

The same delivery posted twice is a redelivery (its build ID hashes the
delivery id and the commit-ish), so every test names a commit-ish of its
own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from brigade_crgw.brigade import project_id
from brigade_crgw.events import IMAGE_PUSH
from devtools import gateway as gateway_process
from devtools.projects import TOKEN, decoded, fresh, project_secret

from .conftest import Namespace
from .helpers import Payload, builds, edit, payload

pytestmark = pytest.mark.integration

PROJECT = "acme/app"
PROJECT_ID = project_id(PROJECT)
SCRIPT = "events.on('image_push', () => {})"
IGNORED_BECAUSE = "; builds are made for image_push"


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
    entry: Payload,
    *,
    commit: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    registry: str | None = None,
) -> gateway_process.Answer:
    """POST a payload (or a body made from it) as its registry would: the
    token in the URL unless the headers carry it."""
    headers = entry.headers if headers is None else headers
    return gateway.request(
        "POST",
        url(token="Authorization" not in headers, commit=commit, registry=registry),
        entry.body if body is None else body,
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


def check_builds(
    answer: gateway_process.Answer,
    created: dict[str, dict[str, Any]],
    commit: str,
    expected: list[tuple[str, tuple[str, str], bytes]],
) -> None:
    """The answer names exactly the builds made, one per expected
    ``(provider, (short_title, long_title), payload)``, in order."""
    assert answer.status == 200, answer.body
    reply = answer.json()
    assert reply["status"] == "Success", reply
    names = reply["builds"]
    assert len(names) == len(set(names)) == len(expected)
    assert set(created) == set(names)
    for name, (provider, (short, long), payload_) in zip(names, expected, strict=True):
        data = check_build(created[name], name, commit)
        assert (data["event_provider"], data["short_title"], data["long_title"]) == (
            provider,
            short,
            long,
        )
        assert data["payload"].encode() == payload_


# -- Each registry ----------------------------------------------------------------

# One push per registry, from its catalogue entry: ACR's native webhook with
# a bearer header, Distribution 3's envelope (each build carries its event),
# Pub/Sub's unwrapped message with metadata headers...
PUSHES = [
    "acr/push-docs-unredacted.json",
    "alibaba/push-argocd-image-updater.json",
    "distribution/push-envelope-docs.json",
    "dockerhub/push-docs.json",
    "dtr/TAG_PUSH-test-payload.json",
    "ecr/image-action-PUSH.json",
    "gar/INSERT-with-tag.json",
    "github/package-published-container-octokit.json",
    "harbor/push_artifact-kobold.json",
    "jfrog/docker-pushed-keel.json",
    "nexus/component-created-docker-ibdm.json",
    "quay/repo_push.json",
]

# One other delivery per registry that sends any (Docker Hub, Alibaba and DTR
# document only pushes), answered as its catalogue entry says: ignored,
# naming its actions; Event Grid's validation answered; a refusal a 400.
OTHERS = [
    "acr/ChartPushed-cloudevents.json",  # Event Grid's CloudEvents batch type
    "acr/SubscriptionValidation-eventgrid-docs.json",
    "distribution/pull-event-portus.json",  # a bare event, registry 2's type
    "ecr/image-scan-basic.json",
    "gar/DELETE-tag.json",
    "gar/pubsub-push-envelope.json",  # placeholder data: refused
    "github/ping-octokit.json",
    "harbor/scanning_completed-cloudevents.json",
    "jfrog/docker-deleted-telegraf.json",
    "nexus/asset-created-docs.json",
    "quay/build_failure.json",
]


@pytest.mark.parametrize("name", PUSHES)
def test_push_makes_its_builds(
    gateway: gateway_process.Daemon, namespace: Namespace, name: str
) -> None:
    """A registry's documented push, sent as that registry sends it, makes
    exactly the builds its catalogue entry names: the registry as provider,
    the entry's titles, the event as payload."""
    entry = payload(name)
    commit = f"push/{name}"
    before = builds(namespace)
    answer = send(gateway, entry, commit=commit)
    expected = [
        (entry.registry, titles, event.payload)
        for event, titles in zip(entry.events(), entry.titles(), strict=True)
        if event.action == IMAGE_PUSH
    ]
    check_builds(answer, new_builds(namespace, before), commit, expected)


@pytest.mark.parametrize("name", OTHERS)
def test_other_delivery_makes_nothing(
    gateway: gateway_process.Daemon, namespace: Namespace, name: str
) -> None:
    """A registry's documented non-push (delete, pull, ping, scan, chart,
    handshake, placeholder) gets the answer its catalogue entry implies, a
    JSON body, and makes no Secret."""
    entry = payload(name)
    if "refused" in entry.expected:
        status, expected = 400, {"status": "bad request", "reason": entry.expected["refused"]}
    elif "reply" in entry.expected:
        status, expected = 200, entry.expected["reply"]
    else:
        actions = ", ".join(sorted(set(entry.actions())))
        reason = f"{entry.registry} sent {actions}{IGNORED_BECAUSE}"
        status, expected = 200, {"status": "ignored", "reason": reason}
    before = builds(namespace)
    answer = send(gateway, entry, commit="other")
    assert (answer.status, answer.json()) == (status, expected)
    assert answer.headers["content-type"] == "application/json"
    assert builds(namespace) == before


# -- Across registries ------------------------------------------------------------


def test_binary_cloudevent(gateway: gateway_process.Daemon, namespace: Namespace) -> None:
    """Harbor's documented CloudEvent re-sent in binary mode by hand
    (attributes as ``ce-`` headers, ``data`` as the body; no registry
    documents a binary push) makes the same build as in structured mode."""
    entry = payload("harbor/push_artifact-cloudevents.json")
    doc = json.loads(entry.body)
    headers = {"Content-Type": doc["datacontenttype"], "Authorization": f"Bearer {TOKEN}"}
    for key in ("specversion", "id", "source", "type", "time", "requestid", "operator"):
        headers[f"ce-{key}"] = doc[key]
    body = json.dumps(doc["data"]).encode()
    before = builds(namespace)
    answer = send(gateway, entry, commit="binary", body=body, headers=headers)
    (titles,) = entry.titles()
    check_builds(answer, new_builds(namespace, before), "binary", [("harbor", titles, body)])


def test_one_delivery_several_builds(gateway: gateway_process.Daemon, namespace: Namespace) -> None:
    """Quay's documented push with two more tags added by hand makes three
    builds, one per tag, each carrying the whole body."""
    entry = payload("quay/repo_push.json")
    body = edit(entry.body, ("updated_tags",), ["latest", "v1.0", "stable"])
    before = builds(namespace)
    answer = send(gateway, entry, commit="three-tags", body=body)
    expected = [
        (
            "quay",
            (
                f"mynamespace/repository:{tag}",
                f"Pushed quay.io/mynamespace/repository:{tag} via quay",
            ),
            body,
        )
        for tag in ("latest", "v1.0", "stable")
    ]
    check_builds(answer, new_builds(namespace, before), "three-tags", expected)


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


# -- Redelivery -------------------------------------------------------------------

Change = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]

# An identity in the body, one in a header, and one the gateway makes up
# (every transport's ids are checked in the unit tier), with another
# delivery of the same image.
REDELIVERIES: dict[str, tuple[str, Change]] = {
    "acr-eventgrid": (
        "acr/ImagePushed-eventgrid-azurecn.json",
        lambda body, headers: (edit(body, (0, "id"), "other"), headers),
    ),
    "github": (
        "github/package-published-container-octokit.json",
        lambda body, headers: (body, {**headers, "X-GitHub-Delivery": "another delivery"}),
    ),
    "dockerhub": ("dockerhub/push-docs.json", lambda body, headers: (fresh(body, 1), headers)),
}


@pytest.mark.parametrize("label", sorted(REDELIVERIES))
def test_redelivery_is_one_build(
    gateway: gateway_process.Daemon, namespace: Namespace, label: str
) -> None:
    """The same delivery posted twice is answered twice with the same builds,
    which exist once; a different delivery of the same image is a new build."""
    name, change = REDELIVERIES[label]
    entry = payload(name)
    commit = f"redelivery/{label}"
    before = builds(namespace)
    first = send(gateway, entry, commit=commit)
    again = send(gateway, entry, commit=commit)
    assert first.status == again.status == 200, (first.body, again.body)
    names = first.json()["builds"]
    assert first.json() == again.json() == {"status": "Success", "builds": names}
    assert len(names) == 1
    assert set(new_builds(namespace, before)) == set(names)

    body, headers = change(entry.body, entry.headers)
    other = send(gateway, entry, commit=commit, body=body, headers=headers)
    assert other.status == 200, other.body
    other_names = other.json()["builds"]
    assert len(other_names) == 1 and set(other_names).isdisjoint(names)
    assert set(new_builds(namespace, before)) == set(names) | set(other_names)


def test_simultaneous_redelivery_is_one_build(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """The same ACR webhook arriving four times at once is four 200s with the
    same build, which exists once."""
    entry = payload("acr/push-kobold.json")
    before = builds(namespace)
    answers: list[gateway_process.Answer] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        answers.append(send(gateway, entry, commit="simultaneous"))

    senders = [threading.Thread(target=deliver) for _ in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    assert [a.status for a in answers] == [200] * 4, [a.body for a in answers]
    (names,) = {tuple(a.json()["builds"]) for a in answers}
    assert len(names) == 1
    assert set(new_builds(namespace, before)) == set(names)


# -- Registries that sign their bodies ----------------------------------------------


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
    entry = payload(name)
    headers = {k: v for k, v in entry.headers.items() if k != "Authorization"}
    commit = f"signed/{label}"
    before = builds(namespace)
    wrong = gateway.request(
        "POST",
        url(token=False, commit=commit),
        entry.body,
        {**headers, **credentials("not-the-token", entry.body)},
    )
    assert wrong.status == 401, wrong.body
    assert builds(namespace) == before
    answer = gateway.request(
        "POST",
        url(token=False, commit=commit),
        entry.body,
        {**headers, **credentials(TOKEN, entry.body)},
    )
    assert answer.status == 200, answer.body
    (build,) = answer.json()["builds"]
    created = new_builds(namespace, before)
    assert set(created) == {build}
    assert decoded(created[build])["event_provider"] == entry.registry


# -- ?registry= -------------------------------------------------------------------

PORTUS_PUSH = "distribution/push-event-portus-registry2.3.json"
PORTUS_SHORT = "mssola/lala@sha256:b9c8a3839b27"
PORTUS_LONG = (
    f"Pushed registry.mssola.cat:5000/{PORTUS_SHORT} "
    "(sha256:b9c8a3839b2754e0fc4309e0f994f617d43814996805388e2f9d977db3fa7967) via {} by mssola"
)


@pytest.mark.parametrize(
    ("registry", "provider", "short", "long"),
    [
        (None, "acr", PORTUS_SHORT, PORTUS_LONG.format("acr")),
        ("distribution", "distribution", PORTUS_SHORT, PORTUS_LONG.format("distribution")),
        ("DISTRIBUTION", "distribution", PORTUS_SHORT, PORTUS_LONG.format("distribution")),
        # The generic reader looks for a name at the top level only.
        ("generic", "generic", "(unknown repository)", "Pushed (unknown repository) via generic"),
    ],
)
def test_registry_parameter_overrides_detection(
    gateway: gateway_process.Daemon,
    namespace: Namespace,
    registry: str | None,
    provider: str,
    short: str,
    long: str,
) -> None:
    """A bare Distribution event sent as plain JSON reads as ACR's webhook
    (the same shape), and as Distribution's, or anything named, with
    ?registry=."""
    entry = payload(PORTUS_PUSH)
    commit = f"override/{registry}"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    before = builds(namespace)
    answer = send(gateway, entry, commit=commit, headers=headers, registry=registry)
    expected = [(provider, (short, long), entry.body)]
    check_builds(answer, new_builds(namespace, before), commit, expected)


def test_unknown_registry_parameter_is_400(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """An unknown ?registry= is a 400 JSON answer naming it, and makes nothing."""
    before = builds(namespace)
    answer = send(gateway, payload("acr/push.json"), commit="unknown", registry="artifactory")
    assert answer.status == 400, answer.body
    assert answer.headers["content-type"] == "application/json"
    reply = answer.json()
    assert reply["status"] == "bad request"
    assert "'artifactory'" in reply["reason"] and "distribution" in reply["reason"]
    assert builds(namespace) == before
