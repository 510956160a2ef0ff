"""Project Secrets as `brig project create` writes them, for the tests and the bench."""

from __future__ import annotations

import base64
import json
from typing import Any

from brigade_crgw.brigade import project_id

# The gateway token of every test project: not a secret of anything real.
TOKEN = "s3cret-token-for-tests"  # noqa: S105


def project_secret(
    name: str = "acme/app", token: str | None = TOKEN, **data: str
) -> dict[str, Any]:
    """A project Secret for ``name``, with a gateway token unless ``token`` is None."""
    values = {
        "repository": name,
        "cloneURL": f"https://github.com/{name}.git",
        "defaultScript": "events.on('image_push', () => {})",
        "sharedSecret": "shared-secret-never-logged",
        "secrets": "{}",
        **data,
    }
    if token is not None:
        values["crGatewayToken"] = token
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "brigade.sh/project",
        "metadata": {
            "name": project_id(name),
            "labels": {"app": "brigade", "heritage": "brigade", "component": "project"},
            "annotations": {"projectName": name},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's data, decoded."""
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def fresh(body: bytes, n: int) -> bytes:
    """A Docker Hub or ACR push made distinct from every other (its
    ``pushed_at`` or ``id``), so that it is not taken for a redelivery."""
    doc = json.loads(body)
    if "push_data" in doc:
        doc["push_data"]["pushed_at"] = 1700000000 + n
    else:
        doc["id"] = f"{doc.get('id', 'event')}-{n}"
    return json.dumps(doc).encode()
