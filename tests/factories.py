"""Project Secrets as `brig project create` writes them (see
:mod:`devtools.projects`), and what tests do with them."""

from __future__ import annotations

import base64
import json
from typing import Any

from devtools.projects import TOKEN, project_secret

__all__ = ["TOKEN", "decoded", "fresh", "project_secret"]


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
