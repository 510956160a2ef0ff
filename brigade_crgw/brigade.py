"""The Brigade v1 contract: project IDs, build IDs and the build Secret.

Everything here must match what Brigade's controller, worker and ``brig``
read (see the v1 sources cited in the contract document); nothing here knows
HTTP, registries' formats or the Kubernetes client.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Mapping

import attr

from . import text
from .events import ImageEvent, ImageFacts, is_commit_sha

PROJECT_TYPE = "brigade.sh/project"
BUILD_TYPE = "brigade.sh/build"
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


# What Kubernetes accepts as a Secret name (a DNS-1123 subdomain).
_SECRET_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def is_secret_name(name: str) -> bool:
    """Whether ``name`` can name a Secret at all (an ID like ``brigade-X/y`` cannot)."""
    return bool(_SECRET_NAME.match(name))


def project_id(name: str) -> str:
    """The Secret name of the project called ``name`` (``org/repo``, or an ID)."""
    if name.startswith("brigade-"):
        return name
    return "brigade-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:54]


# The keys of a project Secret that belong to this gateway (the rest are
# Brigade's: defaultScript, cloneURL, repository...).
# Where a project keeps its gateway tokens unless [auth] token_keys says otherwise.
TOKEN_KEY = "crGatewayToken"  # noqa: S105 (a key name, not a secret)
TAGS_KEY = "crGatewayTags"
ONE_BUILD_PER_DIGEST_KEY = "crGatewayOneBuildPerDigest"
PULL_SECRET_KEY = "crGatewayPullSecret"  # noqa: S105 (a key name, not a secret)
FILTER_KEY = "crGatewayFilter"


@attr.s(frozen=True, auto_attribs=True)
class Project:
    """A project as the gateway sees it: its ID, its name and its decoded data.

    ``data`` holds secrets (``sharedSecret``, tokens, ...): never log it.
    What the gateway reads of it, it reads through the properties below
    (the tokens through ``[auth] token_keys``, which name their keys).
    """

    id: str
    name: str
    data: Mapping[str, str] = attr.ib(repr=False)

    @property
    def script(self) -> str:
        """``defaultScript``: the ``brigade.js`` a build runs unless its commit has one."""
        return self.data.get("defaultScript", "")

    @property
    def clone_url(self) -> str:
        return self.data.get("cloneURL", "")

    @property
    def tag_patterns(self) -> tuple[str, ...]:
        """``crGatewayTags``: the shell globs (``!`` to exclude) of the tags
        that make builds; empty when every tag does."""
        return tuple(self.data.get(TAGS_KEY, "").split())

    @property
    def one_build_per_digest(self) -> bool:
        """``crGatewayOneBuildPerDigest``: pushes of one digest share one build."""
        return self.data.get(ONE_BUILD_PER_DIGEST_KEY, "").strip().lower() == "true"

    def tokens(self, keys: tuple[str, ...]) -> list[str]:
        """Every token the project accepts under ``keys`` (``[auth]
        token_keys``): each key's value split on white space, so that an old
        and a new token can both be valid while a registry is rotated."""
        return [token for key in keys for token in self.data.get(key, "").split()]

    @property
    def filter(self) -> str:
        """``crGatewayFilter``: the CEL expression an image must satisfy to
        be built, or ``""`` (or only white space) when every image is."""
        return self.data.get(FILTER_KEY, "")

    @property
    def pull_secret(self) -> str:
        """``crGatewayPullSecret``: the Secret holding the project's registry
        credentials, or ``""``."""
        return self.data.get(PULL_SECRET_KEY, "").strip()

    @classmethod
    def from_secret(cls, name: str, secret: Mapping[str, object]) -> Project | None:
        """The project held in a Secret as the API returns it, or None when the
        Secret is not a usable Brigade project.

        :param name: the Secret's name (the project ID).
        :param secret: the Secret as a JSON-like mapping (``type``,
            ``metadata``, base64 ``data``).
        """
        if secret.get("type") != PROJECT_TYPE:
            return None
        metadata = secret.get("metadata") or {}
        annotations = metadata.get("annotations") or {} if isinstance(metadata, dict) else {}
        raw = secret.get("data") or {}
        if not isinstance(raw, dict):
            return None
        data = {}
        for key, value in raw.items():
            try:
                data[key] = base64.b64decode(value or "").decode("utf-8", "replace")
            except (ValueError, TypeError):
                data[key] = ""
        # Brigade v1's gateways refused projects without a repository.
        if not data.get("repository"):
            return None
        return cls(id=name, name=str(annotations.get("projectName") or name), data=data)


def ulid(milliseconds: int, randomness: bytes) -> str:
    """A lower-case ULID: 48 bits of time, then 80 bits of ``randomness``."""
    if not 0 <= milliseconds < 1 << 48 or len(randomness) != 10:
        raise ValueError("a ULID holds a 48-bit time and 10 bytes of randomness")
    value = (milliseconds << 80) | int.from_bytes(randomness, "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def build_id(
    project: Project, event: ImageEvent, commit: str = "", facts: ImageFacts | None = None
) -> str:
    """The build ID for ``event``: random, unless the event has an identity
    or the project builds once per digest.

    Under ``crGatewayOneBuildPerDigest``, every push of one digest (the
    event's, else the one a lookup found in ``facts``) gets the same ID,
    with a zero time part: it must not depend on when, or under which tag,
    the digest arrives.

    Otherwise a redelivered event (same delivery identity) gets the same
    ID, so its Secret name is taken and no second build is made: the time
    part comes from the event's own timestamp, the rest from a hash of the
    project, the identity, the tag, the digest and the commit-ish (two
    webhooks of one registry that name different commits are two builds,
    not a redelivery).
    """
    digest = event.digest or (facts.digest if facts else "")
    if project.one_build_per_digest and digest:
        hashed = hashlib.sha256(f"{project.id}\0digest\0{digest}".encode()).digest()
        return ulid(0, hashed[:10])
    if not event.delivery_id:
        return ulid(int(time.time() * 1000), os.urandom(10))
    when = int(event.timestamp.timestamp() * 1000) if event.timestamp else 0
    when = min(max(when, 0), (1 << 48) - 1)
    # The digest too: a sender that reuses an id for another image (as the
    # registries' own documentation examples do) still gets a build for it.
    hashed = hashlib.sha256(
        "\0".join((project.id, event.delivery_id, event.tag, event.digest, commit)).encode()
    ).digest()
    return ulid(when, hashed[:10])


def short_digest(digest: str) -> str:
    """``sha256:0123456789ab…`` shortened to its algorithm and 12 hex digits."""
    algorithm, _, hexdigits = digest.partition(":")
    return f"{algorithm}:{hexdigits[:12]}" if hexdigits else digest[:19]


# Longer than any digest a registry makes (sha512 in hex is 135 characters).
_MAX_DIGEST = 200
# A DNS name, with a port.
_MAX_HOST = 260
_MAX_PUSHER = 255


def short_title(event: ImageEvent, facts: ImageFacts | None = None) -> str:
    """``acme/app:v1``, or ``acme/app@sha256:0123456789ab`` for a push by digest;
    ``acme/app:v1@sha256:0123456789ab`` when a lookup found the tag's digest.

    What the payload says is shown safely: control characters escaped, and a
    repository or tag longer than registries allow cut, with the cut marked
    (see :mod:`brigade_crgw.text`).
    """
    repository = text.repository(event.repository) or "(unknown repository)"
    digest = text.printable(short_digest(event.digest or (facts.digest if facts else "")))
    if event.tag and facts is not None and digest:
        return f"{repository}:{text.tag(event.tag)}@{digest}"
    if event.tag:
        return f"{repository}:{text.tag(event.tag)}"
    if digest:
        return f"{repository}@{digest}"
    return repository


def long_title(event: ImageEvent, facts: ImageFacts | None = None) -> str:
    """What happened to which image where, and who did it, as far as known;
    with a lookup, also its platforms and its source."""
    verb = {
        "image_push": "Pushed",
        "image_delete": "Deleted",
        "chart_push": "Pushed chart",
        "chart_delete": "Deleted chart",
    }.get(event.action, text.printable(event.action))
    # The full digest follows, so the image is named without one.
    image = short_title(event)
    if event.host:
        image = f"{text.printable(text.cut(event.host, _MAX_HOST))}/{image}"
    words = [f"{verb} {image}"]
    digest = event.digest or (facts.digest if facts else "")
    if digest:
        words.append(f"({text.printable(text.cut(digest, _MAX_DIGEST))})")
    if facts is not None and facts.platforms:
        more = f" and {facts.platforms_omitted:,} more" if facts.platforms_omitted else ""
        words.append(f"for {text.printable(', '.join(facts.platforms))}{more}")
    if facts is not None:
        # Labels are what an image's author wrote: shown as safely as a payload.
        source = text.printable(text.cut(facts.labels.get("source", ""), _MAX_HOST))
        revision = text.printable(text.cut(facts.labels.get("revision", ""), _MAX_DIGEST))
        if source or revision:
            words.append(f"from {source or 'revision'}{'@' + revision if revision else ''}")
    words.append(f"via {event.registry}")
    if event.pusher:
        words.append(f"by {text.printable(text.cut(event.pusher, _MAX_PUSHER))}")
    return " ".join(words)


def commit_id(commit: str, facts: ImageFacts | None) -> str:
    """The build's ``commit_id``: the image's revision label, when it is a full
    commit SHA and the URL named no commit-ish (which always wins)."""
    if commit or facts is None:
        return ""
    revision = facts.labels.get("revision", "")
    return revision if is_commit_sha(revision) else ""


def _b64(text: str | bytes) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def build_secret(
    project: Project,
    event: ImageEvent,
    build: str,
    commit: str = "",
    facts: ImageFacts | None = None,
    payload: bytes | None = None,
) -> dict[str, object]:
    """The build Secret that makes Brigade's controller run ``project`` for ``event``.

    :param build: the build ID (a lower-case ULID).
    :param commit: the commit-ish from the URL or ``?commit=``.
    :param facts: what a registry lookup found, if one did.
    :param payload: the payload to carry instead of the event's own (annotated).
    """
    name = f"brigade-worker-{build}"
    data: dict[str, str | bytes] = {
        "script": project.script,
        "config": "",
        "payload": event.payload if payload is None else payload,
        "build_id": name,
        "build_name": name,
        "short_title": short_title(event, facts),
        "long_title": long_title(event, facts),
        "clone_url": project.clone_url,
        "commit_id": commit_id(commit, facts),
        "commit_ref": commit,
        "event_provider": event.registry,
        "event_type": event.action,
        "project_id": project.id,
        "log_level": "",
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": BUILD_TYPE,
        "metadata": {
            "name": name,
            "labels": {
                "build": build,
                "component": "build",
                "heritage": "brigade",
                "project": project.id,
            },
        },
        "data": {key: _b64(value) for key, value in data.items()},
    }
