"""CloudEvents 1.0 whose type no other registry claims (Zot, CDEvents...).

Structured mode posts the event as JSON (``application/cloudevents+json``,
or a JSON array as ``application/cloudevents-batch+json``); binary mode puts
the attributes in ``ce-*`` headers and the data in the body. The package
reads the envelope and gives each event to the registry that claims its
type (Harbor's ``harbor.*``, ACR's ``Microsoft.ContainerRegistry.*``); the
rest come here. Any type whose words mean an image push (``image.pushed``,
``image.updated``, ``artifact.pushed``, ``push``...) is an image push, with
repository, tag and digest read from ``data`` where the usual names are
(Zot's ``zotregistry.image.updated`` has ``name``, ``reference``, ``digest``
and ``mediaType``).
"""

from __future__ import annotations

import re

from brigade_crgw.events import CHART_DELETE, CHART_PUSH, IMAGE_DELETE, IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._cloudevent import CloudEvent, looks_structured
from brigade_crgw.registries._common import Headers, Obj, media_type, split_reference, word
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "cloudevents"

MEDIA_TYPES = ("application/cloudevents+json", "application/cloudevents-batch+json")

_PUSH = frozenset({"push", "pushed"})
_SUBJECTS = frozenset({"image", "artifact", "manifest", "tag", "chart"})
_CHANGED = frozenset({"updated", "created", "uploaded", "published"})
_DELETE = frozenset({"delete", "deleted", "removed"})
_FAILED = frozenset({"failed", "failure", "error"})
_TOKEN = re.compile(r"[^a-z0-9]+")


def sent_as_cloudevents(doc: object, headers: Headers) -> bool:
    """A CloudEvents content type on a structured CloudEvent or batch."""
    return media_type(headers) in MEDIA_TYPES and looks_structured(doc)


def action(ce_type: str) -> str:
    """The action a CloudEvents type means, by its words."""
    tokens = set(_TOKEN.split(ce_type.lower()))
    if not tokens & _FAILED:
        chart = "chart" in tokens
        if tokens & _PUSH or (tokens & _SUBJECTS and tokens & _CHANGED):
            return CHART_PUSH if chart else IMAGE_PUSH
        if tokens & _DELETE:
            return CHART_DELETE if chart else IMAGE_DELETE
    # Else the type's last two words, less any version (``...packaged.0.1.0``).
    parts = [part for part in ce_type.split(".") if part and not part.isdigit()]
    return word("_".join(parts[-2:]))


def from_cloudevent(ce: CloudEvent) -> tuple[ImageEvent, ...]:
    """The image event a CloudEvent of no known registry describes."""
    return (_event(ce),)


def _event(ce: CloudEvent) -> ImageEvent:
    # ``data`` has no standard shape: read the usual names, leniently.
    data = ce.data_obj()
    host, ref_repository, ref_tag, ref_digest = split_reference(
        data.loose("image") or data.loose("imageName")
    )
    nested = data.raw("repository")
    repo = Obj(nested) if isinstance(nested, dict) else Obj({})
    reference = data.loose("reference")
    by_digest = reference.startswith("sha256:")
    return ImageEvent(
        registry=NAME,
        action=action(ce.type),
        repository=data.loose("repository")
        or data.loose("name")
        or data.loose("repo")
        or repo.loose("repo_full_name")
        or repo.loose("name")
        or ref_repository,
        host=host,
        tag=data.loose("tag") or ("" if by_digest else reference) or ref_tag,
        digest=data.loose("digest") or (reference if by_digest else "") or ref_digest,
        media_type=data.loose("mediaType") or data.loose("media_type"),
        pusher=data.loose("pusher")
        or data.loose("actor")
        or ce.extensions.get("operator", "")
        or ce.extensions.get("actor", ""),
        timestamp=ce.time,
        delivery_id=ce.delivery_id,
        payload=ce.payload,
    )


# It claims no type of its own: it reads the CloudEvents no registry claims.
SETUP = Setup(
    title="Any CloudEvents source (Zot...)",
    where="the source's HTTP sink; for Zot, extensions.events in its configuration",
    url="<url>",
    placement="Authorization: Bearer <token> (Zot: credentials.token), or the URL "
    "<token-url>; Basic credentials with the token as the password work too",
    events="image pushes: a type whose words say push, or image, artifact, manifest "
    "or tag with updated, created, uploaded or published",
    content_type="CloudEvents in binary mode, or structured (application/cloudevents+json)",
    auth="bearer",
    command='"extensions": {\n'
    '  "events": {\n'
    '    "enable": true,\n'
    '    "sinks": [{"type": "http", "address": "<url>", "timeout": "5s",\n'
    '               "credentials": {"token": "<token>"}}]\n'
    "  }\n"
    "}",
    language="json",
    sample="cloudevents.json",
    headers={"Content-Type": "application/cloudevents+json"},
)


REGISTRY = Registry(
    name=NAME,
    setup=SETUP,
    looks_like=looks_structured,
    header_hint=sent_as_cloudevents,
    from_cloudevent=from_cloudevent,
)
