"""Which event values can name an image: the Distribution spec's grammar,
so that a payload's odd characters never reach a URL."""

from __future__ import annotations

import re

import attr
from twisted.logger import Logger

from ..events import DOCKER_HUB, canonical_host

log = Logger()

# What the Distribution spec allows; anything else never reaches a URL.
_REPOSITORY = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


@attr.s(frozen=True, auto_attribs=True)
class Reference:
    """An image to look up, as an event names it."""

    host: str
    repository: str
    tag: str = ""
    digest: str = ""


def repository_path(host: str, repository: str) -> str:
    """The repository as the registry's API names it (Docker Hub's official
    images live under ``library/``)."""
    if host == DOCKER_HUB and "/" not in repository:
        return f"library/{repository}"
    return repository


def usable_reference(host: str, repository: str, tag: str, digest: str) -> Reference | None:
    """The reference to look up, or None when the event's values could not
    name an image (a payload's odd characters never reach a URL)."""
    host = canonical_host(host)
    path = repository_path(host, repository.strip())
    digest = digest if DIGEST.match(digest) else ""
    tag = tag if _TAG.match(tag) else ""
    if not host or not _REPOSITORY.match(path) or not (tag or digest):
        return None
    return Reference(host, path, tag, digest)
