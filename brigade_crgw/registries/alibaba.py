"""Alibaba Cloud Container Registry webhooks (triggers).

Like Docker Hub's, but with ``repository.repo_full_name``, a ``region`` and a
``push_data.digest``; push only. ``pushed_at`` is local time without a
timezone, so it gives no timestamp (a guessed zone would be a wrong time),
only part of the delivery id.
"""

from __future__ import annotations

from brigade_crgw.events import IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import Delivery, Headers, Obj, PayloadError, join, timestamp
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "alibaba"


def looks_like(doc: object) -> bool:
    """``push_data`` beside a ``repository`` with ``repo_full_name`` or
    ``region``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("push_data"), dict):
        return False
    repository = doc.get("repository")
    return isinstance(repository, dict) and (
        "repo_full_name" in repository or "region" in repository
    )


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode a push.

    :raises PayloadError: for a body without a repository name, or with
        fields of the wrong type.
    """
    root = Obj.root(doc)
    push = root.obj("push_data")
    repo = root.obj("repository")
    repository = repo.text("repo_full_name") or join(repo.text("namespace"), repo.text("name"))
    if not repository:
        raise PayloadError("repository.repo_full_name: missing; not an Alibaba ACR webhook")
    region = repo.text("region")
    tag = push.text("tag")
    pushed_at = push.text("pushed_at")
    event = ImageEvent(
        registry=NAME,
        action=IMAGE_PUSH,
        repository=repository,
        host=f"registry.{region}.aliyuncs.com" if region else "",
        tag=tag,
        digest=push.text("digest"),
        timestamp=timestamp(pushed_at),
        delivery_id=f"{NAME}:{repository}:{tag}:{pushed_at}" if pushed_at else "",
        payload=body,
    )
    return Delivery(NAME, (event,))


SETUP = Setup(
    title="Alibaba Cloud Container Registry",
    where="the repository's Triggers tab: Create, with the trigger URL",
    url="<token-url>",
    placement="in the URL (?token=)",
    events="All tags, or the tags (or a regular expression) that should make builds",
    content_type="application/json, which the registry sends",
    auth="query-token",
    sample="alibaba.json",
    headers={"Content-Type": "application/json"},
)


REGISTRY = Registry(name=NAME, setup=SETUP, decode=decode, looks_like=looks_like)
