"""JFrog Artifactory webhooks.

The body names a ``domain`` and an ``event_type``. In the ``docker`` domain,
``pushed`` is the image push (``data.sha256`` is the manifest file's
checksum, which is the manifest digest), ``deleted`` the image delete;
other events read ``<domain>_<event_type>`` (``artifact_deployed``...), since
a docker push also deploys each layer as an artifact.
"""

from __future__ import annotations

from brigade_crgw.events import IMAGE_DELETE, IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    Obj,
    PayloadError,
    digest_of,
    url_host,
    word,
)
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "jfrog"

_DOCKER_ACTIONS = {"pushed": IMAGE_PUSH, "deleted": IMAGE_DELETE}


def looks_like(doc: object) -> bool:
    """A ``domain`` and ``event_type`` with ``data``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("domain"), str)
        and isinstance(doc.get("event_type"), str)
        and isinstance(doc.get("data"), dict)
    )


def signed_by_jfrog(doc: object, headers: Headers) -> bool:
    """JFrog's ``X-JFrog-Event-Auth`` on a JFrog body."""
    return "x-jfrog-event-auth" in headers and looks_like(doc)


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode one event.

    :raises PayloadError: for a body without ``domain``/``event_type`` or
        with fields of the wrong type.
    """
    root = Obj.root(doc)
    domain = root.text("domain")
    event_type = root.text("event_type")
    if not domain or not event_type:
        raise PayloadError("domain, event_type: missing; not a JFrog webhook")
    data = root.obj("data")
    if domain == "docker":
        action = _DOCKER_ACTIONS.get(event_type) or word(event_type)
        repository = data.text("image_name")
    else:
        action = word(f"{domain}_{event_type}")
        repository = data.text("repo_key")
    event = ImageEvent(
        registry=NAME,
        action=action,
        repository=repository,
        host=url_host(root.text("jpd_origin")),
        tag=data.text("tag"),
        digest=digest_of(data.text("sha256")),
        pusher=root.text("source").removeprefix("jfrog/"),
        payload=body,
    )
    return Delivery(NAME, (event,))


SETUP = Setup(
    title="JFrog Artifactory",
    where="Administration, General, Webhooks: a new webhook with the event domain Docker",
    url="<url>",
    placement="Secret token: <token> (Artifactory sends it in X-JFrog-Event-Auth, or, "
    "with Use secret for payload signing, signs each body with it; both work)",
    events="Docker: Docker tag was pushed (pushed)",
    content_type="application/json, which Artifactory sends",
    auth="jfrog-token",
    command="curl -u '<admin user>' -X POST 'https://<artifactory>/event/api/v1/subscriptions' \\\n"
    "  -H 'Content-Type: application/json' -d '{\n"
    '    "key": "brigade", "enabled": true,\n'
    '    "event_filter": {"domain": "docker", "event_types": ["pushed"],\n'
    '                     "criteria": {"anyLocal": true, "anyRemote": false, "repoKeys": []}},\n'
    '    "handlers": [{"handler_type": "webhook", "url": "<url>", "secret": "<token>"}]}\'',
    language="shell",
    sample="jfrog.json",
    headers={"Content-Type": "application/json"},
)


REGISTRY = Registry(
    name=NAME, setup=SETUP, decode=decode, looks_like=looks_like, header_hint=signed_by_jfrog
)
