"""Docker Hub repository webhooks.

Docker Hub sends one kind of event, a push, with no id, no digest and no
signature. ``repository.repo_name`` + ``push_data.tag`` +
``push_data.pushed_at`` identify a push, so a redelivery repeats the id made
of them.
"""

from __future__ import annotations

from brigade_crgw.events import IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import (
    Delivery,
    Headers,
    Obj,
    PayloadError,
    join,
    timestamp,
)
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "dockerhub"
HOST = "docker.io"


def looks_like(doc: object) -> bool:
    """``push_data`` beside a ``repository`` with ``repo_name``."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("push_data"), dict)
        and isinstance(doc.get("repository"), dict)
        and "repo_name" in doc["repository"]
    )


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode a push.

    :raises PayloadError: for a body without a repository name, or with
        fields of the wrong type.
    """
    root = Obj.root(doc)
    push = root.obj("push_data")
    repo = root.obj("repository")
    repository = repo.text("repo_name") or join(repo.text("namespace"), repo.text("name"))
    if not repository:
        raise PayloadError("repository.repo_name: missing; not a Docker Hub webhook")
    tag = push.text("tag")
    pushed_at = _stamp(push.raw("pushed_at"))
    event = ImageEvent(
        registry=NAME,
        action=IMAGE_PUSH,
        repository=repository,
        host=HOST,
        tag=tag,
        pusher=push.text("pusher"),
        timestamp=timestamp(push.raw("pushed_at")),
        delivery_id=f"{NAME}:{repository}:{tag}:{pushed_at}" if pushed_at else "",
        payload=body,
    )
    return Delivery(NAME, (event,))


def _stamp(value: object) -> str:
    # The older documentation shows 1.417566161e+09 where the newer shows
    # 1417566161: the same push must give the same id.
    if isinstance(value, bool):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return ""


SETUP = Setup(
    title="Docker Hub",
    where="the repository's Webhooks tab: a webhook name, and the webhook URL",
    url="<token-url>",
    placement="in the URL (?token=): Docker Hub sends no custom header and signs nothing",
    events="none to choose: Docker Hub sends every push to the repository",
    content_type="application/json, which Docker Hub sends",
    auth="query-token",
    sample="dockerhub.json",
    headers={"Content-Type": "application/json"},
)


REGISTRY = Registry(name=NAME, setup=SETUP, decode=decode, looks_like=looks_like)
