"""What a lookup adds to a build, the tag filters and the payload
annotation: pure functions, checked without any registry."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from brigade_crgw import brigade
from brigade_crgw.delivery import enrich
from brigade_crgw.events import ImageEvent, ImageFacts
from devtools.projects import decoded

from .helpers import acme_project, push_event

SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
FACTS = ImageFacts(
    DIGEST,
    "application/vnd.oci.image.index.v1+json",
    ("linux/amd64", "linux/arm64"),
    {"revision": SHA, "source": "https://github.com/acme/app"},
)


def _event(**fields: object) -> ImageEvent:
    """A Docker Hub push with a host and a pusher, as the titles name them."""
    return push_event(
        **{"host": "docker.io", "pusher": "alice", "payload": b'{"push_data": {"tag": "v1"}}'}
        | fields
    )


def test_titles_with_lookup() -> None:
    """A looked-up tag push is titled with its short digest; the long title
    names the digest, the platforms and the source."""
    assert brigade.short_title(_event(), FACTS) == "acme/app:v1@sha256:abababababab"
    assert brigade.long_title(_event(), FACTS) == (
        f"Pushed docker.io/acme/app:v1 ({DIGEST}) for linux/amd64, linux/arm64 "
        f"from https://github.com/acme/app@{SHA} via dockerhub by alice"
    )
    assert brigade.short_title(_event()) == "acme/app:v1"


def test_commit_id_from_revision() -> None:
    """commit_id is the revision label when it is a full SHA and the URL named no commit."""
    secret = decoded(brigade.build_secret(acme_project(), _event(), "0" * 26, "", FACTS))
    assert (secret["commit_id"], secret["commit_ref"]) == (SHA, "")
    from_url = decoded(brigade.build_secret(acme_project(), _event(), "0" * 26, "main", FACTS))
    assert (from_url["commit_id"], from_url["commit_ref"]) == ("", "main")
    for revision in ("v1.2.3", SHA[:12], SHA.upper(), ""):
        facts = ImageFacts(DIGEST, labels={"revision": revision})
        assert brigade.commit_id("", facts) == "", revision
    assert brigade.commit_id("", ImageFacts(DIGEST, labels={"revision": "f" * 64})) == "f" * 64


def test_plain_build_unchanged() -> None:
    """Without a lookup the build Secret is exactly what it was."""
    plain = brigade.build_secret(acme_project(), _event(), "0" * 26, "main")
    assert brigade.build_secret(acme_project(), _event(), "0" * 26, "main", None, None) == plain
    assert decoded(plain)["commit_id"] == ""


def test_tag_filters() -> None:
    """Includes and ! excludes, as globs; no patterns accept every tag."""
    patterns = ("v*", "!*-rc*", "latest")
    for tag in ("v1", "v1.2.3", "latest"):
        assert enrich.tag_refusal(tag, patterns) == "", tag
    assert "excluded by crGatewayTags pattern !*-rc*" in enrich.tag_refusal("v2-rc1", patterns)
    assert "matches no crGatewayTags pattern" in enrich.tag_refusal("dev", patterns)
    assert "without a tag" in enrich.tag_refusal("", patterns)
    assert enrich.tag_refusal("V1", ("v*",)) != ""  # tags are case-sensitive
    assert enrich.tag_refusal("anything", ()) == ""
    assert enrich.tag_refusal("main", ("!dev*",)) == ""  # only excludes: the rest pass


def test_normalised_shape_is_fixed() -> None:
    """With or without a lookup, the normalised event has the same keys."""
    with_lookup = enrich.normalised(_event(), FACTS, "found")
    without = enrich.normalised(_event(registry="acr", pusher=""), None, "off")
    assert set(with_lookup) == set(without)
    assert with_lookup["digest"] == DIGEST and with_lookup["platforms"] == list(FACTS.platforms)
    assert with_lookup["labels"] == dict(FACTS.labels)
    assert without["digest"] == "" and without["platforms"] == [] and without["labels"] == {}
    # The payload's own digest wins over the lookup's.
    own = enrich.normalised(_event(digest="sha256:" + "00" * 32), FACTS, "found")
    assert own["digest"] == "sha256:" + "00" * 32


def test_annotate_keeps_every_byte() -> None:
    """The key is added before the closing brace; the original bytes are all there."""
    raw = b'{"push_data": {"tag": "v1", "n": 1.0e5},  "x": "\\u00e9"}\n'
    out = enrich.annotate(raw, {"digest": DIGEST})
    assert out.startswith(raw.rstrip()[:-1])
    assert out.endswith(b"}\n")
    doc = json.loads(out)
    assert doc["brigade_crgw"] == {"digest": DIGEST}
    assert {k: v for k, v in doc.items() if k != "brigade_crgw"} == json.loads(raw)
    assert json.loads(enrich.annotate(b"{ }", {"a": 1})) == {"brigade_crgw": {"a": 1}}


def test_annotate_leaves_non_objects() -> None:
    """A payload that is not a JSON object is carried unchanged."""
    for raw in (b"[1, 2]", b"not json", b'"text"', b""):
        assert enrich.annotate(raw, {"a": 1}) == raw


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(10**18), 10**18) | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=6,
    ),
    st.sampled_from(["", " ", "\n", "\r\n  "]),
)
def test_annotate_any_object(doc: dict[str, object], trailing: str) -> None:
    """For any JSON object, the annotated payload parses to the object plus one key."""
    raw = (json.dumps(doc, indent=1) + trailing).encode()
    parsed = json.loads(enrich.annotate(raw, {"k": [1]}))
    assert parsed.pop("brigade_crgw") == {"k": [1]}
    doc.pop("brigade_crgw", None)
    parsed.pop("brigade_crgw", None)
    assert parsed == doc


def test_same_shape_for_every_registry() -> None:
    """Every registry's documented push, decoded and built with
    annotate_payload, carries the same brigade_crgw keys, and its payload is
    otherwise what it was."""
    from pathlib import Path

    from brigade_crgw import registries

    payloads = Path(__file__).resolve().parent / "payloads"
    shapes: dict[str, set[frozenset[str]]] = {}
    for path in sorted(payloads.glob("*/*.json")):
        try:
            delivery = registries.decode(path.read_bytes(), {}, path.parent.name)
        except registries.PayloadError:
            continue
        for event in [e for e in delivery.events if e.action == "image_push"]:
            [secret] = enrich.build_secrets(acme_project(), [event], None, "", True)
            doc = json.loads(decoded(secret)["payload"])
            if not isinstance(doc, dict):
                continue
            value = doc.pop(enrich.ANNOTATION_KEY)
            assert doc == json.loads(event.payload)
            assert value["registry"] == delivery.registry and value["lookup"] == "off"
            shapes.setdefault(delivery.registry, set()).add(frozenset(value))
    assert len(shapes) >= 10, sorted(shapes)
    assert len({shape for found in shapes.values() for shape in found}) == 1


def test_annotate_leaves_what_the_decoders_would_refuse() -> None:
    """Data nested 2,000 deep (a binary CloudEvent's, never decoded before)
    comes back unchanged, never a RecursionError."""
    deep = b"[" * 2000 + b"]" * 2000
    assert enrich.annotate(deep, {"k": 1}) == deep
    wide = b'{"n": ' + b"9" * 400 + b"}"
    assert enrich.annotate(wide, {"k": 1}) == wide
