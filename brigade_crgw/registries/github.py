"""GitHub Packages (GHCR) webhooks: the ``package`` and ``registry_package`` events.

``X-GitHub-Event`` names the event and ``X-GitHub-Delivery`` is the delivery
id. A container version ``published`` is the image push; other actions
(``updated``...) keep their word, other package types read
``<type>_<action>`` (``npm_published``), and other GitHub events (``ping``)
read their event name.

Which package is a container: ``package_type`` says so first (``docker``,
``CONTAINER``; GitHub's own examples contradict themselves in
``ecosystem``), then ``ecosystem`` and ``registry.type``, and container
metadata in the version proves it whatever those say.
"""

from __future__ import annotations

from datetime import datetime

from brigade_crgw.events import IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    Obj,
    PayloadError,
    header,
    join,
    split_reference,
    timestamp,
    url_host,
    word,
)
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "github"
GHCR = "ghcr.io"

_PACKAGE_EVENTS = ("package", "registry_package")
_CONTAINER_TYPES = frozenset({"docker", "container"})


def looks_like(doc: object) -> bool:
    """A package event (``action`` with ``package``/``registry_package``)
    or a ping (``zen`` and ``hook_id``)."""
    if not isinstance(doc, dict):
        return False
    if isinstance(doc.get("action"), str) and any(
        isinstance(doc.get(key), dict) for key in _PACKAGE_EVENTS
    ):
        return True
    return "zen" in doc and "hook_id" in doc


def sent_by_github(doc: object, headers: Headers) -> bool:
    """``X-GitHub-Event`` on a JSON object: every GitHub event, ping
    included, is one."""
    return "x-github-event" in headers and isinstance(doc, dict)


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode one event.

    :raises PayloadError: for a body that names no event, a package event
        without its package, or fields of the wrong type.
    """
    root = Obj.root(doc)
    name = header(headers, "x-github-event").lower() or _event_name(root)
    delivery_id = header(headers, "x-github-delivery")
    if name not in _PACKAGE_EVENTS:
        event = ImageEvent(
            registry=NAME,
            action=word(name),
            repository=root.obj("repository").text("full_name"),
            pusher=root.obj("sender").text("login"),
            delivery_id=delivery_id,
            payload=body,
        )
        return Delivery(NAME, (event,))
    package = root.obj(name) if root.has(name) else root.obj(_other(name))
    if not package.data:
        raise PayloadError(f"{name}: missing")
    return Delivery(NAME, (_package_event(root, package, delivery_id, body),))


def _event_name(root: Obj) -> str:
    # Without the header (a proxy dropped it), the body's shape says which.
    for key in _PACKAGE_EVENTS:
        if root.has(key):
            return key
    if root.has("zen") and root.has("hook_id"):
        return "ping"
    raise PayloadError("X-GitHub-Event: missing; not a GitHub webhook")


def _other(name: str) -> str:
    return _PACKAGE_EVENTS[1] if name == _PACKAGE_EVENTS[0] else _PACKAGE_EVENTS[0]


def _package_event(root: Obj, package: Obj, delivery_id: str, body: bytes) -> ImageEvent:
    version = package.obj("package_version")
    metadata = version.obj("container_metadata")
    manifest = metadata.obj("manifest")
    tag_info = metadata.obj("tag")
    registry = package.obj("registry")
    package_type = (
        package.text("package_type") or package.text("ecosystem") or registry.text("type")
    ).lower()
    container = package_type in _CONTAINER_TYPES or bool(manifest.data or tag_info.data)
    github_action = root.text("action")
    if not github_action:
        raise PayloadError("action: missing")
    if container:
        action = IMAGE_PUSH if github_action == "published" else word(github_action)
    else:
        action = word(f"{package_type or 'package'}_{github_action}")

    # The version is the tag on the legacy docker.pkg.github.com, a digest on GHCR.
    number = version.text("version")
    digest = next(
        (
            candidate
            for candidate in (
                manifest.text("digest"),
                tag_info.text("digest"),
                number,
                version.text("name"),
            )
            if candidate.startswith("sha256:")
        ),
        "",
    )
    host, repository = _where(package, version, registry, container)
    return ImageEvent(
        registry=NAME,
        action=action,
        repository=repository,
        host=host,
        tag=tag_info.text("name") or ("" if number.startswith("sha256:") else number),
        digest=digest,
        media_type=manifest.text("media_type"),
        pusher=root.obj("sender").text("login"),
        timestamp=_when(
            version.raw("updated_at"), version.raw("created_at"), package.raw("updated_at")
        ),
        delivery_id=delivery_id,
        payload=body,
    )


def _where(package: Obj, version: Obj, registry: Obj, container: bool) -> tuple[str, str]:
    name = package.text("name")
    url = version.text("package_url")  # "ghcr.io/owner/name:tag"
    if url:
        host, repository, _, _ = split_reference(url)
        return host, repository
    registry_url = registry.text("url")  # "https://ghcr.io/owner"
    if registry_url:
        prefix = registry_url.partition("://")[2].partition("/")[2].strip("/")
        return url_host(registry_url), join(prefix, name)
    owner = package.text("namespace") or package.obj("owner").text("login")
    return (GHCR if container else ""), join(owner, name)


def _when(*values: object) -> datetime | None:
    # GitHub writes Go's zero time, 0001-01-01T00:00:00Z, for "unknown".
    for value in values:
        parsed = timestamp(value)
        if parsed is not None and parsed.year > 1:
            return parsed
    return None


SETUP = Setup(
    title="GitHub Packages (ghcr.io)",
    where="the repository's or organisation's Settings, Webhooks, Add webhook",
    url="<url>",
    placement="Secret: <token> (GitHub signs each body with it: X-Hub-Signature-256)",
    events="Let me select individual events: Packages (or the older Registry packages)",
    content_type="application/json (choose it: the form's default, "
    "application/x-www-form-urlencoded, is refused with 415)",
    auth="github-signature",
    command="gh api --method POST repos/<owner>/<repository>/hooks \\\n"
    "  -f name=web -F active=true -f 'events[]=package' \\\n"
    "  -f 'config[url]=<url>' -f 'config[content_type]=json' \\\n"
    "  -f 'config[secret]=<token>'",
    language="shell",
    sample="github.json",
    headers={
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": "package",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    },
)


REGISTRY = Registry(
    name=NAME, setup=SETUP, decode=decode, looks_like=looks_like, header_hint=sent_by_github
)
