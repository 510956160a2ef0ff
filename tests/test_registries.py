"""decode(): detection, ?registry= overrides, bad bodies, redelivery ids.

Per-registry event contents are in test_registries_formats.py; property
tests are in test_registries_fuzz.py.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from brigade_crgw import registries
from brigade_crgw.brigade import Project, build_id, project_id
from brigade_crgw.events import IMAGE_PUSH, ImageEvent
from brigade_crgw.registries import (
    NAMES,
    REGISTRIES,
    Delivery,
    PayloadError,
    decode,
    detect,
    lower_names,
)
from brigade_crgw.registries._registry import never
from devtools.projects import fresh

from .helpers import PAYLOADS, Payload, body, catalogue, edit, payload, sent_headers

CATALOGUE = catalogue()
DECODED = [entry for entry in CATALOGUE if "refused" not in entry.expected]
DISTRIBUTION_V1 = lower_names(sent_headers("distribution", "v1"))

# Distribution's bare events (as Portus stored them) have exactly the shape of
# ACR's native webhook, which is what a bare event is detected as.
BARE_DISTRIBUTION_EVENTS = {
    "distribution/delete-event-portus.json",
    "distribution/pull-event-portus.json",
    "distribution/push-event-portus-registry2.3.json",
}


def by_name(entries: list[Payload]) -> dict[str, Any]:
    """Parametrisation over catalogue entries, with their names as ids."""
    return {"argvalues": entries, "ids": [entry.name for entry in entries]}


# -- The interface ------------------------------------------------------------


def test_one_record_per_module() -> None:
    """Every registry module defines its REGISTRY, named after the module;
    REGISTRIES holds each once, generic last (it matches any body); a record
    that claims CloudEvents types can read them."""
    package = Path(registries.__file__).parent
    modules = sorted(p.stem for p in package.glob("*.py") if not p.stem.startswith("_"))
    records = [importlib.import_module(f"brigade_crgw.registries.{m}").REGISTRY for m in modules]
    assert [record.name for record in records] == modules
    assert sorted(REGISTRIES, key=lambda record: record.name) == records
    assert NAMES[-1] == "generic"
    claims = [r for r in REGISTRIES if r.cloudevent_types is not never or r.decode is None]
    assert all(record.from_cloudevent for record in claims)


def test_payload_folders_are_registries() -> None:
    """Each payload folder is named after a registry and has its HEADERS.toml,
    and SOURCES.md names every payload."""
    sources = (PAYLOADS / "SOURCES.md").read_text()
    folders = {entry.folder for entry in CATALOGUE}
    assert folders <= set(NAMES)
    assert all((PAYLOADS / folder / "HEADERS.toml").is_file() for folder in folders)
    assert [e.name for e in CATALOGUE if f"`{e.name}`" not in sources] == []


@pytest.mark.parametrize(
    "entry", **by_name([e for e in DECODED if e.name not in BARE_DISTRIBUTION_EVENTS])
)
def test_detected_from_the_body_alone(entry: Payload) -> None:
    """Each payload is detected as its registry with no headers at all."""
    assert decode(entry.body, {}).registry == entry.registry


@pytest.mark.parametrize("name", sorted(BARE_DISTRIBUTION_EVENTS))
def test_bare_distribution_event_reads_as_acr(name: str) -> None:
    """A bare Distribution event without its content type is ACR's native shape."""
    assert decode(body(name), {}).registry == "acr"
    assert decode(body(name), {}, registry="distribution").registry == "distribution"


@pytest.mark.parametrize("entry", **by_name(DECODED))
def test_forced_own_registry_agrees(entry: Payload) -> None:
    """``?registry=<its own registry>`` gives the same delivery as detection."""
    assert decode(entry.body, entry.headers, entry.registry) == decode(entry.body, entry.headers)


@pytest.mark.parametrize("entry", **by_name(CATALOGUE))
def test_any_registry_forced_on_any_payload(entry: Payload) -> None:
    """Forcing any registry on a real body gives a Delivery or a PayloadError, nothing else."""
    for name in NAMES:
        try:
            delivery = decode(entry.body, {}, name)
        except PayloadError as error:
            assert str(error)
        else:
            assert isinstance(delivery, Delivery)


def test_detect_headers_beat_shapes() -> None:
    """A header that only one sender sets decides over a body its sender could send."""
    harbor = json.loads(body("harbor/push_artifact-kobold.json"))
    assert detect(harbor, {}).name == "harbor"
    assert detect(harbor, {"x-github-event": "ping"}).name == "github"
    assert detect(harbor, {"x-nexus-webhook-id": "rm:repository:component"}).name == "nexus"
    bare = json.loads(body("distribution/pull-event-portus.json"))
    assert detect(bare, {}).name == "acr"
    assert detect(bare, DISTRIBUTION_V1).name == "distribution"


@pytest.mark.parametrize(
    "headers",
    [
        DISTRIBUTION_V1,
        {"content-type": "application/cloudevents+json"},
        {"x-jfrog-event-auth": "token"},
        {"aeg-event-type": "Notification"},
        {"user-agent": "AzureContainerRegistry/1.0"},
        {"x-goog-pubsub-message-id": "1"},
    ],
)
def test_header_hint_on_another_shape(headers: dict[str, str]) -> None:
    """A sender's header on a body its sender never sends does not hide the body's format."""
    assert decode(body("dockerhub/push-docs.json"), headers).registry == "dockerhub"


def test_unknown_json_is_generic() -> None:
    """JSON that no registry sends is one generic image push carrying the body (v1's behaviour)."""
    raw = b'{"repository": {"name": "acme/app"}, "tag": "v1"}'
    assert decode(raw, {}) == Delivery(
        "generic",
        (ImageEvent(registry="generic", action=IMAGE_PUSH, repository="acme/app", payload=raw),),
    )


@pytest.mark.parametrize(
    ("raw", "repository"),
    [
        (b"{}", ""),
        (b"[]", ""),
        (b"[1, 2]", ""),
        (b'{"repository": "acme/app"}', "acme/app"),
        (b'{"repository": {"repo_name": "acme/app"}}', "acme/app"),
        (b'{"image": "acme/app", "repository": 5}', "acme/app"),
    ],
)
def test_generic_repository_best_effort(raw: bytes, repository: str) -> None:
    """The generic push reads a repository where one usually is, else leaves it empty."""
    (event,) = decode(raw, {}).events
    assert (event.registry, event.action, event.repository) == ("generic", IMAGE_PUSH, repository)


# -- ?registry= ---------------------------------------------------------------


def test_registry_overrides_detection() -> None:
    """``?registry=generic`` takes a Docker Hub body as a generic push."""
    raw = body("dockerhub/push-docs.json")
    assert decode(raw, {}, "generic").registry == "generic"


def test_registry_is_case_insensitive_and_empty_means_detect() -> None:
    """``ACR`` names acr; an empty ``?registry=`` detects."""
    raw = body("acr/push.json")
    assert decode(raw, {}, "ACR").registry == "acr"
    assert decode(raw, {}, "").registry == "acr"


def test_registry_forced_on_a_foreign_body() -> None:
    """A Harbor body forced as Docker Hub is refused, not guessed at."""
    with pytest.raises(PayloadError, match="Docker Hub"):
        decode(body("harbor/push_artifact-kobold.json"), {}, "dockerhub")


def test_unknown_registry() -> None:
    """An unknown ``?registry=`` is refused with the accepted names named."""
    with pytest.raises(PayloadError) as caught:
        decode(body("acr/push.json"), {}, "artifactory")
    message = str(caught.value)
    assert "'artifactory'" in message
    assert all(name in message for name in NAMES)


# -- Bodies that are not JSON, or not sane ------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not JSON"),
        (b"hello", "not JSON"),
        (b"{'single': 'quotes'}", "not JSON"),
        (b'{"a": 1} trailing', "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": "\xc3"}', "not UTF-8"),
        (b"\xef\xbb\xbf{}", "not JSON"),  # a BOM is not JSON
        (b"1", "object or array"),
        (b'"text"', "object or array"),
        (b"null", "object or array"),
        (b"true", "object or array"),
        (b'{"n": NaN}', "not JSON"),
        (b'{"n": Infinity}', "not JSON"),
        (b'{"n": ' + b"9" * 5000 + b"}", "too large"),
        (b'{"n": ' + b"9" * 31 + b"}", "too large"),
        (b"[" * 100_000, "not JSON|nested"),
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested"),
        (b"[" * 65 + b"]" * 65, "nested"),
    ],
)
def test_bad_bodies(raw: bytes, reason: str) -> None:
    """Bodies that are not UTF-8 JSON objects or arrays are PayloadErrors with a reason."""
    with pytest.raises(PayloadError, match=reason):
        decode(raw, {})


def test_depth_limit_is_not_too_tight() -> None:
    """JSON nested 64 deep (more than any registry sends) is still accepted."""
    assert decode(b"[" * 64 + b"]" * 64, {}).registry == "generic"


@pytest.mark.parametrize("name", NAMES)
def test_deep_nesting_with_any_registry(name: str) -> None:
    """Deep nesting is a PayloadError whatever registry is forced, never a RecursionError."""
    with pytest.raises(PayloadError):
        decode(b"[" * 100_000 + b"]" * 100_000, {}, name)


def test_lone_surrogate_in_a_field() -> None:
    """A JSON escape that makes invalid Unicode in a field read is a PayloadError."""
    doc = json.loads(body("dockerhub/push-docs.json"))
    raw = json.dumps(doc).replace('"latest"', '"\\ud800"').encode()
    with pytest.raises(PayloadError, match=r"push_data\.tag"):
        decode(raw, {})


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("dockerhub/push-docs.json", ["push_data", "tag"], 5),
        ("dockerhub/push-docs.json", ["push_data"], "x"),
        ("acr/push.json", ["target"], []),
        ("acr/push.json", ["target", "repository"], {"a": 1}),
        ("harbor/push_artifact-kobold.json", ["event_data", "resources"], {}),
        ("harbor/push_artifact-kobold.json", ["event_data", "resources", 0], "x"),
        ("quay/repo_push.json", ["updated_tags", 0], 1),
        ("distribution/push-envelope-docs.json", ["events", 0, "target", "mediaType"], 1),
        ("github/package-published-container-octokit.json", ["package", "package_version"], 1),
        ("ecr/image-action-PUSH.json", ["detail", "image-tag"], True),
        ("jfrog/docker-pushed-keel.json", ["data", "tag"], 1.5),
        ("nexus/component-created-docker-ibdm.json", ["component", "version"], 1),
    ],
)
def test_wrong_types_name_the_field(name: str, path: list[str | int], value: object) -> None:
    """A field of the wrong type, in a body of a named registry, is a PayloadError naming it."""
    entry = payload(name)
    with pytest.raises(PayloadError) as caught:
        decode(edit(body(name), tuple(path), value), entry.headers, entry.registry)
    assert str(path[-1]) in str(caught.value) or str(path[-2]) in str(caught.value)


def test_wrong_typed_timestamps_are_ignored() -> None:
    """A timestamp of the wrong type or format reads as no timestamp, not an error."""
    for value in ("{}", "[]", "true", '"yesterday"', '"2016-11-29 12:25:46"', "1e400", "-1e300"):
        doc = json.loads(body("acr/push.json"))
        doc["timestamp"] = "@"
        raw = json.dumps(doc).replace('"@"', value).encode()
        (event,) = decode(raw, {}).events
        assert event.timestamp is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("1700000000.5", datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)),
        ("1700000000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ('"2023-11-14T23:13:20+01:00"', datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
)
def test_epoch_and_iso_timestamps(value: str, expected: datetime) -> None:
    """Epoch seconds, epoch milliseconds and ISO 8601 with an offset name the same instant."""
    doc = json.loads(body("acr/push.json"))
    doc["timestamp"] = "@"
    raw = json.dumps(doc).replace('"@"', value).encode()
    (event,) = decode(raw, {}).events
    assert event.timestamp == expected


# -- Redelivery -----------------------------------------------------------------

PROJECT = Project(id=project_id("acme/app"), name="acme/app", data={})
Change = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]


def field(path: tuple[str | int, ...], value: object) -> Change:
    """Another delivery: the body's field at ``path`` set to ``value``."""
    return lambda raw, headers: (edit(raw, path, value), headers)


def header(name: str, value: str) -> Change:
    """Another delivery: the header ``name`` set to ``value``."""
    return lambda raw, headers: (raw, {**headers, name: value})


def another_push(raw: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """Another push time (Docker Hub) or event id (ACR), as factories.fresh makes."""
    return fresh(raw, 1), headers


# Each transport that carries an identity, and how another delivery of the
# same image differs from a redelivery.
REDELIVERIES: dict[str, tuple[str, Change]] = {
    "acr-webhook": ("acr/push-docs-unredacted.json", another_push),
    "acr-eventgrid": ("acr/ImagePushed-eventgrid-azurecn.json", field((0, "id"), "other")),
    "acr-cloudevents": ("acr/ImagePushed-cloudevents-current.json", field((0, "id"), "other")),
    "distribution": ("distribution/push-envelope-docs.json", field(("events", 0, "id"), "x")),
    "harbor-cloudevents": ("harbor/push_artifact-cloudevents.json", field(("id",), "other")),
    "dockerhub": ("dockerhub/push-docs.json", another_push),
    "github": ("github/package-published-container-octokit.json", header("X-GitHub-Delivery", "x")),
    "nexus": ("nexus/component-created-docker-ibdm.json", header("X-Nexus-Webhook-Delivery", "x")),
    "gar": ("gar/INSERT-with-tag.json", header("x-goog-pubsub-message-id", "42")),
    "ecr": ("ecr/image-action-PUSH.json", field(("id",), "other")),
    "alibaba": ("alibaba/push-argocd-image-updater.json", field(("push_data", "pushed_at"), "x")),
}


def build_ids(raw: bytes, headers: dict[str, str]) -> list[str]:
    """The build IDs of a delivery's image pushes (one commit-ish)."""
    pushes = [event for event in decode(raw, headers).events if event.action == IMAGE_PUSH]
    assert pushes and all(event.delivery_id for event in pushes)
    return [build_id(PROJECT, event, "main") for event in pushes]


@pytest.mark.parametrize("label", sorted(REDELIVERIES))
def test_redelivery_repeats_build_ids(label: str) -> None:
    """The same delivery decoded twice gives the same delivery ids and build
    IDs; another delivery of the same image gives other build IDs."""
    entry = payload(REDELIVERIES[label][0])
    first = build_ids(entry.body, entry.headers)
    assert build_ids(entry.body, entry.headers) == first
    other = build_ids(*REDELIVERIES[label][1](entry.body, entry.headers))
    assert set(other).isdisjoint(first)


def test_binary_cloudevent_redelivery() -> None:
    """A binary CloudEvent's id comes from its headers, the same on redelivery."""
    headers = {"ce-specversion": "1.0", "ce-type": "x.image.pushed", "ce-source": "s", "ce-id": "7"}
    ids = [decode(b"{}", dict(headers)).events[0].delivery_id for _ in range(2)]
    assert ids == ["s#7", "s#7"]
