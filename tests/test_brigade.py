"""The Brigade v1 contract: project IDs, build IDs, the build Secret."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import attr
from hypothesis import given
from hypothesis import strategies as st

from brigade_crgw import brigade
from brigade_crgw.events import ImageFacts
from devtools.projects import decoded, project_secret

from .helpers import acme_project, push_event

ULID = re.compile(r"^[0-9a-hjkmnp-tv-z]{26}$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_project_id_vector() -> None:
    """The project ID of deis/empty-testbed is the one Brigade v1 computes."""
    assert (
        brigade.project_id("deis/empty-testbed")
        == "brigade-830c16d4aaf6f5490937ad719afd8490a5bcbef064d397411043ac"
    )


def test_project_id_keeps_ids() -> None:
    """A name that already starts with brigade- is used as it is."""
    assert brigade.project_id("brigade-abc") == "brigade-abc"


@given(st.text(min_size=1))
def test_project_id_shape(name: str) -> None:
    """Any name that is not an ID maps to brigade- and 54 hex digits."""
    if not name.startswith("brigade-"):
        assert re.fullmatch(r"brigade-[0-9a-f]{54}", brigade.project_id(name))


def test_project_from_secret_decodes_data() -> None:
    """A project Secret is read with its name from the projectName annotation."""
    project = acme_project()
    assert project.name == "acme/app"
    assert project.data["repository"] == "acme/app"
    assert "shared-secret" not in repr(project)


def test_not_a_project() -> None:
    """Secrets of another type, or without a repository, are not projects."""
    secret = project_secret()
    assert brigade.Project.from_secret("x", {**secret, "type": "brigade.sh/build"}) is None
    assert brigade.Project.from_secret("x", {**secret, "type": "Opaque"}) is None
    no_repo = project_secret(repository="")
    assert brigade.Project.from_secret("x", no_repo) is None
    assert brigade.Project.from_secret("x", {**secret, "data": "nonsense"}) is None


def test_ulid_encoding() -> None:
    """A ULID is 26 lower-case Crockford characters, time first."""
    assert brigade.ulid(0, bytes(10)) == "0" * 26
    assert brigade.ulid((1 << 48) - 1, b"\xff" * 10) == "7" + "z" * 25
    assert brigade.ulid(1, bytes(10))[:10] == "0000000001"


@given(st.integers(0, (1 << 48) - 1), st.binary(min_size=10, max_size=10))
def test_ulid_shape(ms: int, randomness: bytes) -> None:
    """Every ULID is valid in a DNS-1123 name and a label value."""
    value = brigade.ulid(ms, randomness)
    assert ULID.match(value)
    assert DNS1123.match(f"brigade-worker-{value}")


def test_random_build_ids_differ() -> None:
    """Events without an identity get fresh IDs every time."""
    project, event = acme_project(), push_event()
    assert brigade.build_id(project, event) != brigade.build_id(project, event)


def test_build_id_from_identity_is_stable() -> None:
    """A redelivered event gets the same ID, its time part from the event."""
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    project = acme_project()
    event = push_event(delivery_id="evt-1", timestamp=when)
    first = brigade.build_id(project, event)
    assert first == brigade.build_id(project, event)
    assert ULID.match(first)
    assert first[:10] == brigade.ulid(int(when.timestamp() * 1000), bytes(10))[:10]
    assert first != brigade.build_id(
        project, push_event(delivery_id="evt-1", tag="v2", timestamp=when)
    )
    assert first != brigade.build_id(project, push_event(delivery_id="evt-2", timestamp=when))
    assert first != brigade.build_id(project, event, "main")
    assert first != brigade.build_id(project, attr.evolve(event, digest="sha256:1"))
    other = brigade.Project.from_secret("brigade-other", project_secret("other/app"))
    assert other is not None and first != brigade.build_id(other, event)


def test_project_accessors() -> None:
    """The gateway's keys of a project Secret read through Project: tag
    patterns and tokens split on white space, one build per digest only
    for "true", the pull secret trimmed, and empty defaults."""
    project = acme_project(
        crGatewayTags="v*  !*-rc*\n",
        crGatewayOneBuildPerDigest=" True ",
        crGatewayPullSecret=" regcred\n",
        defaultScript="console.log(1)",
        cloneURL="https://example.com/acme/app.git",
    )
    assert project.tag_patterns == ("v*", "!*-rc*")
    assert project.one_build_per_digest and project.pull_secret == "regcred"
    assert (project.script, project.clone_url) == (
        "console.log(1)",
        "https://example.com/acme/app.git",
    )
    bare = acme_project()
    assert bare.tag_patterns == () and not bare.one_build_per_digest
    assert bare.pull_secret == ""
    assert brigade.Project("brigade-x", "x", {"repository": "x"}).script == ""
    assert not acme_project(crGatewayOneBuildPerDigest="yes please").one_build_per_digest
    rotating = brigade.Project(
        "brigade-x", "x", {"crGatewayToken": " old\nnew ", "genericGatewaySecret": "generic"}
    )
    assert rotating.tokens(("crGatewayToken",)) == ["old", "new"]
    assert rotating.tokens(("crGatewayToken", "genericGatewaySecret")) == ["old", "new", "generic"]
    assert rotating.tokens(("nothing",)) == []


def test_one_build_per_digest_id() -> None:
    """Under crGatewayOneBuildPerDigest one project and digest (the event's
    or the lookup's) always give the same ID, whatever the tag, delivery or
    time; another digest or project does not; without a digest the ID is
    the event's own."""
    digest = "sha256:" + "ab" * 32
    project = acme_project(crGatewayOneBuildPerDigest="true")
    event = push_event(
        digest=digest, delivery_id="evt-1", timestamp=datetime(2024, 1, 1, tzinfo=UTC)
    )
    first = brigade.build_id(project, event)
    assert ULID.match(first) and first.startswith("0000000000")
    again = attr.evolve(event, tag="v2", delivery_id="evt-2", timestamp=None)
    assert first == brigade.build_id(project, again, "main")
    facts = ImageFacts(digest, "", (), {})
    assert first == brigade.build_id(project, attr.evolve(event, digest=""), "", facts)
    assert first != brigade.build_id(project, attr.evolve(event, digest="sha256:" + "cd" * 32))
    other = brigade.Project("brigade-other", "other", {"repository": "x"})
    assert first != brigade.build_id(
        attr.evolve(other, data={**other.data, "crGatewayOneBuildPerDigest": "true"}), event
    )
    plain = attr.evolve(event, digest="")
    assert brigade.build_id(project, plain) == brigade.build_id(acme_project(), plain)
    assert brigade.build_id(acme_project(), event) != first


def test_build_secret_fields() -> None:
    """The build Secret has exactly the name, type, labels and data keys of v1."""
    project = acme_project()
    event = push_event(host="registry.example.com", digest="sha256:" + "ab" * 32, pusher="alice")
    secret = brigade.build_secret(project, event, "01hv0000000000000000000000", "feature/x")
    name = "brigade-worker-01hv0000000000000000000000"
    assert secret["type"] == "brigade.sh/build"
    assert secret["metadata"] == {
        "name": name,
        "labels": {
            "build": "01hv0000000000000000000000",
            "component": "build",
            "heritage": "brigade",
            "project": project.id,
        },
    }
    assert all(len(v) <= 63 for v in secret["metadata"]["labels"].values())  # type: ignore[index]
    data = decoded(secret)
    assert data == {
        "script": "events.on('image_push', () => {})",
        "config": "",
        "payload": '{"x": 1}',
        "build_id": name,
        "build_name": name,
        "short_title": "acme/app:v1",
        "long_title": "Pushed registry.example.com/acme/app:v1 (sha256:"
        + "ab" * 32
        + ") via dockerhub by alice",
        "clone_url": "https://github.com/acme/app.git",
        "commit_id": "",
        "commit_ref": "feature/x",
        "event_provider": "dockerhub",
        "event_type": "image_push",
        "project_id": project.id,
        "log_level": "",
    }


def test_payload_bytes_kept_exactly() -> None:
    """The payload is the bytes received, not a re-encoding."""
    raw = b'{"b":1,  "a":"\\u00e9"}'
    secret = brigade.build_secret(acme_project(), push_event(payload=raw), "0" * 26)
    assert base64.b64decode(secret["data"]["payload"]) == raw  # type: ignore[index]


def test_titles_for_digest_push() -> None:
    """A push by digest is titled with a short digest."""
    event = push_event(tag="", digest="sha256:0123456789abcdef0123")
    assert brigade.short_title(event) == "acme/app@sha256:0123456789ab"
    assert brigade.long_title(event) == (
        "Pushed acme/app@sha256:0123456789ab (sha256:0123456789abcdef0123) via dockerhub"
    )


def test_missing_script_is_empty() -> None:
    """A project without defaultScript gives an empty script field."""
    project = brigade.Project("brigade-x", "x", {"repository": "x"})
    data = decoded(brigade.build_secret(project, push_event(), "0" * 26))
    assert data["script"] == "" and data["clone_url"] == ""


def test_secret_names() -> None:
    """Project IDs are checked as Kubernetes checks Secret names."""
    assert brigade.is_secret_name(brigade.project_id("acme/app"))
    assert brigade.is_secret_name("brigade-abc.def")
    for bad in ("brigade-demo/hello", "brigade-Upper", "brigade-", "brigade-" + "a" * 250, ""):
        assert not brigade.is_secret_name(bad), bad
