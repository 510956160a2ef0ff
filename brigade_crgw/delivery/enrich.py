"""What a project asks of its pushes, and what its script is shown of them.

Pure functions, no I/O: the project's tag filter (``crGatewayTags``), the
``brigade_crgw`` key that ``[gateway] annotate_payload`` adds to a payload,
and the build Secrets (made by :mod:`brigade_crgw.brigade`) with what the
lookups found.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from .. import brigade, registries
from ..brigade import Project
from ..events import ImageEvent, ImageFacts
from ..lookups.outcomes import LookupResult

ANNOTATION_KEY = "brigade_crgw"


def tag_refusal(tag: str, patterns: Sequence[str]) -> str:
    """Why ``tag`` is not built under ``patterns``, or ``""`` when it is.

    A tag is built when it matches a pattern without ``!`` (or there is
    none) and no pattern with ``!``.  Patterns are shell globs (``*``, ``?``,
    ``[...]``), matched case-sensitively, as tags are.  A push without a tag
    (by digest) matches no pattern.
    """
    if not patterns:
        return ""
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [p[1:] for p in patterns if p.startswith("!") and len(p) > 1]
    shown = " ".join(patterns)
    if not tag:
        return f"a push without a tag matches no crGatewayTags pattern ({shown})"
    for pattern in excludes:
        if fnmatchcase(tag, pattern):
            return f"tag {tag!r} is excluded by crGatewayTags pattern !{pattern}"
    if includes and not any(fnmatchcase(tag, p) for p in includes):
        return f"tag {tag!r} matches no crGatewayTags pattern ({shown})"
    return ""


def normalised(event: ImageEvent, facts: ImageFacts | None, lookup: str) -> dict[str, Any]:
    """The event as every registry's script sees it under ``brigade_crgw``.

    :param lookup: the lookup's outcome (``found``, ``cached``, ``off``,
        ``timeout``...).
    """
    labels: Mapping[str, str] = facts.labels if facts else {}
    return {
        "registry": event.registry,
        "action": event.action,
        "host": event.host,
        "repository": event.repository,
        "tag": event.tag,
        "digest": event.digest or (facts.digest if facts else ""),
        "pusher": event.pusher,
        "platforms": list(facts.platforms) if facts else [],
        "platforms_omitted": facts.platforms_omitted if facts else 0,
        "labels": dict(labels),
        "lookup": lookup,
    }


def annotate(payload: bytes, value: Mapping[str, Any]) -> bytes:
    """``payload`` with one more top-level key, ``brigade_crgw``.

    Every byte of the original stays as it was: the key is written just
    before the object's closing brace.  A payload that is not a JSON object
    is returned unchanged, as is one the decoders would not read (nested
    too deeply, numbers too large: a binary CloudEvent's data is not
    decoded before).  (A payload that already had the key now has it
    twice; ``JSON.parse`` keeps the last, which is ours.)
    """
    try:
        doc = registries.parse_json(payload)
    except registries.PayloadError:
        return payload
    if not isinstance(doc, dict):
        return payload
    text = payload.rstrip()
    if not text.endswith(b"}"):
        return payload
    added = json.dumps({ANNOTATION_KEY: value}, separators=(",", ":")).encode()[1:-1]
    head = text[:-1]
    joint = b"," if doc else b""
    return head + joint + added + b"}" + payload[len(text) :]


def filter_tags(
    project: Project, events: Sequence[ImageEvent]
) -> tuple[list[ImageEvent], list[str]]:
    """The events the project's ``crGatewayTags`` let through, and why the
    others were left out."""
    patterns = project.tag_patterns
    kept, reasons = [], []
    for event in events:
        reason = tag_refusal(event.tag, patterns)
        if reason:
            reasons.append(reason)
        else:
            kept.append(event)
    return kept, reasons


def build_secrets(
    project: Project,
    events: Sequence[ImageEvent],
    results: Sequence[LookupResult] | None,
    commit: str,
    annotate_payload: bool,
) -> list[dict[str, object]]:
    """The build Secrets for ``events``, with what their lookups found.

    :param results: one lookup result per event, or None when lookups are off.
    :returns: one Secret per distinct build: under
        ``crGatewayOneBuildPerDigest`` pushes of one digest share one.
    """
    secrets: dict[str, dict[str, object]] = {}
    for i, event in enumerate(events):
        result = results[i] if results is not None else None
        facts = result.facts if result is not None else None
        build = brigade.build_id(project, event, commit, facts)
        payload = None
        if annotate_payload:
            outcome = result.outcome if result is not None else "off"
            payload = annotate(event.payload, normalised(event, facts, outcome))
        secret = brigade.build_secret(project, event, build, commit, facts, payload)
        name = str(secret["metadata"]["name"])  # type: ignore[index]
        secrets.setdefault(name, secret)
    return list(secrets.values())
