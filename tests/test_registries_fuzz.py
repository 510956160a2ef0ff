"""decode() never raises anything but PayloadError, whatever it is sent.

Random bytes rarely get past the JSON parser, so most of these tests build
JSON from the field names and values of the real fixtures, and put random
JSON where the decoders look.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brigade_crgw.registries import NAMES, Delivery, PayloadError, decode
from brigade_crgw.registries._common import split_reference, timestamp

from .helpers import catalogue

DOCS = {entry.name: json.loads(entry.body) for entry in catalogue()}
FIXTURES = sorted(DOCS)

Path_ = tuple[str | int, ...]


def walk(value: object, prefix: Path_ = ()) -> Iterator[tuple[Path_, object]]:
    """Every (path, value) in a JSON document, containers included."""
    yield prefix, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from walk(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from walk(child, (*prefix, index))


def collect() -> tuple[list[str], list[str]]:
    """The field names, and the short string values, that the fixtures use."""
    keys: set[str] = set()
    values: set[str] = set()
    for doc in DOCS.values():
        for path, value in walk(doc):
            if path and isinstance(path[-1], str):
                keys.add(path[-1])
            if isinstance(value, str) and len(value) < 60:
                values.add(value)
    return sorted(keys), sorted(values)


KEYS, VALUES = collect()

HEADER_NAMES = [
    "content-type",
    "user-agent",
    "aeg-event-type",
    "x-github-event",
    "x-github-delivery",
    "x-nexus-webhook-id",
    "x-nexus-webhook-delivery",
    "x-jfrog-event-auth",
    "x-goog-pubsub-message-id",
    "x-goog-pubsub-publish-time",
    "ce-specversion",
    "ce-type",
    "ce-source",
    "ce-id",
    "ce-time",
    "ce-subject",
    "ce-operator",
]
HEADER_VALUES = [
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/vnd.docker.distribution.events.v1+json",
    "AzureContainerRegistry/1.0",
    "Notification",
    "SubscriptionValidation",
    "package",
    "registry_package",
    "ping",
    "1.0",
    "zotregistry.image.updated",
    "harbor.artifact.pushed",
    "Microsoft.ContainerRegistry.ImagePushed",
    "2025-01-01T00:00:00Z",
]

headers_st = st.dictionaries(
    st.sampled_from(HEADER_NAMES) | st.text(max_size=20),
    st.sampled_from(HEADER_VALUES) | st.text(max_size=40),
    max_size=6,
)
registry_st = st.sampled_from([None, *NAMES, "bogus"])

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(VALUES)
    | st.text(max_size=30)
)
json_st = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=25,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decodes_or_refuses(raw: bytes, headers: dict[str, str], registry: str | None) -> None:
    """The property: a Delivery of ImageEvents, or a PayloadError with a reason."""
    try:
        delivery = decode(raw, headers, registry)
    except PayloadError as error:
        assert str(error)
        return
    assert isinstance(delivery, Delivery)
    for event in delivery.events:
        assert isinstance(event.action, str) and event.action
        assert isinstance(event.repository, str)
        assert isinstance(event.payload, bytes)
        assert event.timestamp is None or event.timestamp.tzinfo is not None
        assert isinstance(event.delivery_id, str)
        event.delivery_id.encode("utf-8")  # usable in a label or a Secret


@FUZZ
@given(raw=st.binary(max_size=512), headers=headers_st, registry=registry_st)
def test_any_bytes(raw: bytes, headers: dict[str, str], registry: str | None) -> None:
    """Any bytes with any headers, any registry forced: Delivery or PayloadError."""
    decodes_or_refuses(raw, headers, registry)


@FUZZ
@given(doc=json_st, headers=headers_st, registry=registry_st)
def test_json_built_from_known_fields(
    doc: object, headers: dict[str, str], registry: str | None
) -> None:
    """JSON made of the registries' field names and values: Delivery or PayloadError."""
    decodes_or_refuses(json.dumps(doc).encode(), headers, registry)


@st.composite
def mutated_fixture(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real fixture with random JSON put at a few of its paths."""
    name = draw(st.sampled_from(FIXTURES))
    doc = json.loads(json.dumps(DOCS[name]))  # a private copy
    paths = [path for path, _ in walk(doc) if path]
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = draw(json_st)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced this path's parent
    return name, json.dumps(doc).encode()


@FUZZ
@given(case=mutated_fixture(), headers=headers_st, forced=st.booleans())
def test_mutated_fixtures(case: tuple[str, bytes], headers: dict[str, str], forced: bool) -> None:
    """Real payloads with random JSON in their fields: Delivery or PayloadError."""
    name, raw = case
    decodes_or_refuses(raw, headers, name.split("/")[0] if forced else None)


@FUZZ
@given(raw=st.binary(max_size=256), ce_type=st.sampled_from(HEADER_VALUES) | st.text(max_size=30))
def test_binary_cloudevents_any_body(raw: bytes, ce_type: str) -> None:
    """A binary-mode CloudEvent with any body and any type: Delivery or PayloadError."""
    decodes_or_refuses(raw, {"ce-specversion": "1.0", "ce-type": ce_type, "ce-id": "1"}, None)


@pytest.mark.parametrize("name", FIXTURES)
def test_every_field_of_the_wrong_type(name: str) -> None:
    """Each field of each fixture, replaced by each JSON type: Delivery or PayloadError."""
    doc = json.loads(json.dumps(DOCS[name]))
    registry = name.split("/")[0]
    for path, _ in list(walk(doc)):
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        original = parent[path[-1]]
        bad: object
        for bad in (None, 7, -1.5, "x", "", [], {}, True, [{}], {"": None}):
            parent[path[-1]] = bad
            raw = json.dumps(doc).encode()
            decodes_or_refuses(raw, {}, None)
            decodes_or_refuses(raw, {}, registry)
        parent[path[-1]] = original


@given(value=json_st | st.text() | st.floats() | st.integers())
def test_timestamp_never_raises(value: object) -> None:
    """Any JSON value as a time is an aware datetime or None."""
    parsed = timestamp(value)
    assert parsed is None or parsed.tzinfo is not None


segment = st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)*", fullmatch=True)


@given(
    host=st.sampled_from(
        ["", "ghcr.io", "localhost", "localhost:5000", "10.0.0.1:443", "eu.gcr.io"]
    ),
    path=st.lists(segment, min_size=1, max_size=4),
    tag=st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
    digest=st.one_of(st.just(""), st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)),
)
def test_split_reference(host: str, path: list[str], tag: str, digest: str) -> None:
    """An image reference splits back into the host, repository, tag and digest it was made of."""
    repository = "/".join(path)
    if not host and len(path) > 1 and ("." in path[0] or path[0] == "localhost"):
        repository = "library/" + repository  # a first component like a host would be one
    ref = f"{host}/{repository}" if host else repository
    ref += f":{tag}" if tag else ""
    ref += f"@{digest}" if digest else ""
    assert split_reference(ref) == (host, repository, tag, digest)
