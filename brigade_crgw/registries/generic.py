"""The fallback for JSON that no registry module recognises.

Brigade v1's gateway made a build for any body, so an unknown JSON object or
array is one image push (the web layer refuses it when configured strict),
with the repository read from wherever such bodies usually put it.
"""

from __future__ import annotations

from brigade_crgw.events import IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import Delivery, Headers, Obj
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "generic"


def anything(doc: object) -> bool:
    """Every body: this is the last registry tried."""
    return True


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """One image push carrying the body.

    :raises PayloadError: only when the name it reads is not valid Unicode.
    """
    event = ImageEvent(registry=NAME, action=IMAGE_PUSH, repository=_repository(doc), payload=body)
    return Delivery(NAME, (event,))


def _repository(doc: object) -> str:
    if not isinstance(doc, dict):
        return ""
    root = Obj(doc)
    repository = root.raw("repository")
    if isinstance(repository, dict):
        nested = Obj(repository)
        for key in ("repo_name", "full_name", "repo_full_name", "name"):
            if nested.loose(key):
                return nested.loose(key)
    for key in ("repository", "repo", "image", "name"):
        if root.loose(key):
            return root.loose(key)
    return ""


SETUP = Setup(
    title="Any other sender",
    where="the sender's webhook or HTTP call",
    url="<url>",
    placement="Authorization: Bearer <token>, or the URL <token-url>; to sign instead, "
    "X-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with the token>",
    events="any JSON object or array that no registry module recognises makes one "
    "image_push (refused with 422 under [gateway] strict = true)",
    content_type="application/json",
    auth="bearer",
    command="curl -X POST '<url>' -H 'Authorization: Bearer <token>' \\\n"
    '  -H \'Content-Type: application/json\' -d \'{"repository": "acme/app", "tag": "v1"}\'',
    language="shell",
    sample="generic.json",
    headers={"Content-Type": "application/json"},
)


REGISTRY = Registry(name=NAME, setup=SETUP, decode=decode, looks_like=anything)
