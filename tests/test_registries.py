"""decode(): detection, ?registry= overrides, bad bodies, redelivery ids.

Per-registry event contents are in test_registries_formats.py; property
tests are in test_registries_fuzz.py.
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from brigade_crgw import registries
from brigade_crgw.events import IMAGE_PUSH, ImageEvent
from brigade_crgw.registries import NAMES, REGISTRIES, Delivery, PayloadError, decode, detect
from brigade_crgw.registries._registry import never

PAYLOADS = Path(__file__).parent / "payloads"

DISTRIBUTION_V1 = {"content-type": "application/vnd.docker.distribution.events.v1+json"}

# Bodies that are not whole deliveries: a target fragment from the docs, and
# an envelope whose data is the docs' placeholder.
NOT_BODIES = {"distribution/delete-target-fragment-docs.json", "gar/pubsub-push-envelope.json"}

# Distribution's bare events (as Portus stored them) have exactly the shape of
# ACR's native webhook, which is what a bare event is detected as.
BARE_DISTRIBUTION_EVENTS = {
    "distribution/delete-event-portus.json",
    "distribution/pull-event-portus.json",
    "distribution/push-event-portus-registry2.3.json",
}

# The headers each registry sends (tests/payloads/*/HEADERS.md).
HEADERS: dict[str, dict[str, str]] = {
    "acr": {"content-type": "application/json", "user-agent": "AzureContainerRegistry/1.0"},
    "alibaba": {"content-type": "application/json"},
    "distribution": DISTRIBUTION_V1,
    "dockerhub": {},
    "dtr": {},
    "ecr": {"content-type": "application/json"},
    "gar": {"content-type": "application/json"},
    "github": {"content-type": "application/json", "x-github-delivery": "d"},
    "harbor": {"content-type": "application/json"},
    "jfrog": {"x-jfrog-event-auth": "token"},
    "nexus": {"content-type": "application/json; charset=UTF-8", "x-nexus-webhook-delivery": "d"},
    "quay": {"content-type": "application/json"},
}


def fixtures() -> list[str]:
    """Every fixture that is a whole delivery, as ``registry/file.json``."""
    return sorted(
        str(path.relative_to(PAYLOADS))
        for path in PAYLOADS.glob("*/*.json")
        if str(path.relative_to(PAYLOADS)) not in NOT_BODIES
    )


def kind_of(name: str) -> str:
    """The registry kind a fixture's folder names."""
    return name.split("/")[0]


def headers_for(name: str) -> dict[str, str]:
    """The headers a fixture's registry would have sent with it."""
    headers = dict(HEADERS[kind_of(name)])
    if name.startswith("github/"):
        headers["x-github-event"] = "ping" if "ping" in name else name.split("/")[1].split("-")[0]
    if name.startswith("nexus/"):
        headers["x-nexus-webhook-id"] = "rm:repository:" + name.split("/")[1].split("-")[0]
    if name.startswith("acr/") and name[4].isupper():  # Event Grid
        headers = {"content-type": "application/json", "aeg-event-type": "Notification"}
    if name.startswith("harbor/") and "cloudevents" in name:
        headers = {"content-type": "application/cloudevents+json"}
    return headers


def body(name: str) -> bytes:
    """A fixture's bytes."""
    return (PAYLOADS / name).read_bytes()


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


def test_fixtures_are_all_there() -> None:
    """Every registry folder has fixtures, and SOURCES.md names every one."""
    sources = (PAYLOADS / "SOURCES.md").read_text()
    names = [str(p.relative_to(PAYLOADS)) for p in PAYLOADS.glob("*/*.json")]
    assert {kind_of(name) for name in names} == set(HEADERS)
    assert [name for name in names if f"`{name}`" not in sources] == []


@pytest.mark.parametrize("name", fixtures())
def test_detected_with_its_headers(name: str) -> None:
    """Each fixture, with its registry's headers, is decoded as its own kind."""
    delivery = decode(body(name), headers_for(name))
    assert delivery.registry == kind_of(name)
    assert all(event.registry == kind_of(name) for event in delivery.events)


@pytest.mark.parametrize("name", [n for n in fixtures() if n not in BARE_DISTRIBUTION_EVENTS])
def test_detected_from_the_body_alone(name: str) -> None:
    """Each fixture is detected as its own kind with no headers at all."""
    assert decode(body(name), {}).registry == kind_of(name)


@pytest.mark.parametrize("name", sorted(BARE_DISTRIBUTION_EVENTS))
def test_bare_distribution_event_reads_as_acr(name: str) -> None:
    """A bare Distribution event without its content type is ACR's native shape."""
    assert decode(body(name), {}).registry == "acr"
    assert decode(body(name), {}, registry="distribution").registry == "distribution"


@pytest.mark.parametrize("name", fixtures())
def test_forced_own_kind_agrees(name: str) -> None:
    """``?registry=<own kind>`` gives the same delivery as detection."""
    headers = headers_for(name)
    assert decode(body(name), headers, kind_of(name)) == decode(body(name), headers)


@pytest.mark.parametrize("name", fixtures())
def test_events_are_well_formed(name: str) -> None:
    """Every event has its registry's kind, a non-empty action word and aware time."""
    delivery = decode(body(name), headers_for(name))
    for event in delivery.events:
        assert isinstance(event, ImageEvent)
        assert event.action
        assert event.action == event.action.lower()
        assert event.timestamp is None or event.timestamp.tzinfo is not None
        assert event.payload


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
    """An unknown ``?registry=`` is refused with the accepted kinds named."""
    with pytest.raises(PayloadError) as caught:
        decode(body("acr/push.json"), {}, "artifactory")
    message = str(caught.value)
    assert "'artifactory'" in message
    assert all(kind in message for kind in NAMES)


@pytest.mark.parametrize("name", fixtures())
@pytest.mark.parametrize("kind", NAMES)
def test_any_kind_forced_on_any_fixture(name: str, kind: str) -> None:
    """Forcing any kind on any real body gives a Delivery or a PayloadError, nothing else."""
    try:
        delivery = decode(body(name), {}, kind)
    except PayloadError as error:
        assert str(error)
    else:
        assert isinstance(delivery, Delivery)


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
        (b'{"n": ' + b"9" * 5000 + b"}", "not JSON"),
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


@pytest.mark.parametrize("kind", NAMES)
def test_deep_nesting_with_any_registry(kind: str) -> None:
    """Deep nesting is a PayloadError whatever registry is forced, never a RecursionError."""
    with pytest.raises(PayloadError):
        decode(b"[" * 100_000 + b"]" * 100_000, {}, kind)


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
    doc = json.loads(body(name))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(PayloadError) as caught:
        decode(json.dumps(doc).encode(), headers_for(name), kind_of(name))
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


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("acr/push.json", {}),
        ("acr/ImagePushed-eventgrid.json", {"aeg-event-type": "Notification"}),
        ("distribution/push-envelope-docs.json", DISTRIBUTION_V1),
        ("harbor/push_artifact-cloudevents.json", {"content-type": "application/cloudevents+json"}),
        ("acr/ImagePushed-cloudevents-current.json", {}),
        ("dockerhub/push-docs.json", {}),
    ],
)
def test_redelivery_repeats_ids(name: str, headers: dict[str, str]) -> None:
    """The same delivery decoded twice gives the same, non-empty delivery ids."""
    first = [event.delivery_id for event in decode(body(name), headers).events]
    second = [event.delivery_id for event in decode(body(name), dict(headers)).events]
    assert first == second
    assert all(first)


def test_binary_cloudevent_redelivery() -> None:
    """A binary CloudEvent's id comes from its headers, the same on redelivery."""
    headers = {"ce-specversion": "1.0", "ce-type": "x.image.pushed", "ce-source": "s", "ce-id": "7"}
    ids = [decode(b"{}", dict(headers)).events[0].delivery_id for _ in range(2)]
    assert ids == ["s#7", "s#7"]


@pytest.mark.parametrize(
    "name", ["distribution/push-envelope-docs.json", "distribution/push-envelope-eventtest-v3.json"]
)
def test_distribution_events_have_distinct_ids(name: str) -> None:
    """Different events in one Distribution delivery have different ids."""
    ids = [event.delivery_id for event in decode(body(name), DISTRIBUTION_V1).events]
    assert len(ids) == 3
    assert len(set(ids)) == len(ids)


# -- What builds ----------------------------------------------------------------

# The fixtures that are image pushes; every other fixture must make none.
PUSHES = {
    "acr/ImagePushed-cloudevents-current.json",
    "acr/ImagePushed-cloudevents.json",
    "acr/ImagePushed-eventgrid-azurecn.json",
    "acr/ImagePushed-eventgrid.json",
    "acr/push-argocd-image-updater.json",
    "acr/push-docs-unredacted.json",
    "acr/push-kobold.json",
    "acr/push-rest-api-listevents-example.json",
    "acr/push.json",
    "alibaba/push-argocd-image-updater.json",
    "distribution/push-envelope-docs.json",
    "distribution/push-envelope-eventtest-v2.8.json",
    "distribution/push-envelope-eventtest-v3.json",
    "distribution/push-event-portus-registry2.3.json",
    "dockerhub/push-captured-aumjaud.json",
    "dockerhub/push-docs-legacy.json",
    "dockerhub/push-docs.json",
    "dockerhub/push-keel.json",
    "dtr/TAG_PUSH-test-payload.json",
    "ecr/image-action-PUSH.json",
    "gar/INSERT-digest-only.json",
    "gar/INSERT-with-tag.json",
    "github/package-published-container-octokit.json",
    "github/registry_package-published-container-octokit.json",
    "github/registry_package-published-keel.json",
    "harbor/pushImage-keel.json",
    "harbor/pushImage-v1.10-sourcetest.json",
    "harbor/pushImage-v1.10docs.json",
    "harbor/push_artifact-argocd-image-updater.json",
    "harbor/push_artifact-cloudevents.json",
    "harbor/push_artifact-default-v2.0docs.json",
    "harbor/push_artifact-default.json",
    "harbor/push_artifact-keel.json",
    "harbor/push_artifact-kobold.json",
    "jfrog/docker-pushed-keel.json",
    "jfrog/docker-pushed-telegraf.json",
    "nexus/component-created-docker-ibdm.json",
    "quay/repo_push-glossary-legacy.json",
    "quay/repo_push-keel.json",
    "quay/repo_push-legacy2015.json",
    "quay/repo_push.json",
}


@pytest.mark.parametrize("name", fixtures())
def test_exactly_one_image_push_per_push_fixture(name: str) -> None:
    """Push fixtures hold exactly one image push; all others (delete, pull, scan, ping...) none."""
    events = decode(body(name), headers_for(name)).events
    pushes = [event for event in events if event.action == IMAGE_PUSH]
    assert len(pushes) == (1 if name in PUSHES else 0)
