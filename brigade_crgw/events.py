"""The normalised image event every registry format is decoded into."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime

import attr

# Actions a build can be made for; see ``[gateway] event_types``. A build's
# ``event_type`` (Brigade's word) is the action of the event it was made for.
IMAGE_PUSH = "image_push"
IMAGE_DELETE = "image_delete"
CHART_PUSH = "chart_push"
CHART_DELETE = "chart_delete"
BUILDABLE_ACTIONS = frozenset({IMAGE_PUSH, IMAGE_DELETE, CHART_PUSH, CHART_DELETE})


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class ImageEvent:
    """One thing that happened to one image, as a registry reported it.

    :param registry: the name of the registry that sent it (``dockerhub``,
        ``acr``, ...; see ``registries.NAMES``).
    :param action: what happened: one of :data:`BUILDABLE_ACTIONS`, or the
        registry's own word for anything else (``ping``, ``pull``,
        ``quarantine``, ...).
    :param repository: the repository, without host (``acme/app``).
    :param host: the registry's host name, where the payload says it.
    :param tag: the tag, empty for a push by digest.
    :param digest: the manifest digest (``sha256:...``), where known.
    :param media_type: the manifest media type, where known.
    :param pusher: who pushed, where known.
    :param timestamp: when it happened, timezone-aware, where known.
    :param delivery_id: a stable identity of this event that a redelivery
        repeats (event id, CloudEvents id, delivery header...), else empty.
    :param payload: the bytes a build carries for this event: the body as
        received, or this event's own JSON when one body holds several.
    """

    registry: str
    action: str
    repository: str
    host: str = ""
    tag: str = ""
    digest: str = ""
    media_type: str = ""
    pusher: str = ""
    timestamp: datetime | None = None
    delivery_id: str = ""
    payload: bytes = b""


#: The labels read from an image's config, by the short name they get.
LABELS = {
    "revision": "org.opencontainers.image.revision",
    "source": "org.opencontainers.image.source",
    "version": "org.opencontainers.image.version",
    "created": "org.opencontainers.image.created",
}

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "https://registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


# The platforms an image's facts keep: an index may list thousands, and
# they end up in titles, payloads and the lookup cache.
MAX_PLATFORMS = 32


@attr.s(frozen=True, auto_attribs=True)
class ImageFacts:
    """What the registry says about one manifest.

    :param digest: the manifest's digest (an index's, for a multi-platform image).
    :param media_type: the manifest's media type.
    :param platforms: ``os/architecture[/variant]`` of each image, in order;
        the first :data:`MAX_PLATFORMS` only.
    :param labels: the labels of :data:`LABELS` that the image has, by short name.
    :param platforms_omitted: how many platforms were left out of ``platforms``.
    """

    digest: str
    media_type: str = ""
    platforms: tuple[str, ...] = ()
    labels: Mapping[str, str] = attr.ib(factory=dict)
    platforms_omitted: int = 0


def canonical_host(host: str) -> str:
    """A registry host as ``[registry] hosts`` names it: lower case, Docker
    Hub's many names as ``docker.io``."""
    host = host.strip().lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def default_endpoint(host: str) -> str:
    return DOCKER_HUB_API if host == DOCKER_HUB else f"https://{host}"


def is_commit_sha(text: str) -> bool:
    """Whether ``text`` is a full git commit id (SHA-1 or SHA-256, lower case)."""
    return bool(re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", text))


def merged(events: Iterable[ImageEvent]) -> list[ImageEvent]:
    """The events, in order, with each image named once: events that agree on
    registry, action, host, repository, tag and digest make one build (the
    first one's), however often a body repeats them."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for event in events:
        key = (event.registry, event.action, event.host, event.repository, event.tag, event.digest)
        if key not in seen:
            seen.add(key)
            kept.append(event)
    return kept
