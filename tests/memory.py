"""An in-memory :class:`~brigade_crgw.kubernetes.store.SecretStore` for fast tests.

It is verified against the real API server by tests/test_store_contract.py:
the same contract tests pass against both.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from typing import Any

import attr

from brigade_crgw.brigade import Project
from brigade_crgw.kubernetes.store import StoreRejected, StoreUnavailable

# A Secret's data may hold at most 1 MiB.
MAX_SECRET_BYTES = 1024 * 1024


@attr.s(auto_attribs=True)
class MemoryStore:
    """Secrets by name.  Set ``down`` to make every call fail like an
    unreachable API server."""

    secrets: dict[str, dict[str, Any]] = attr.ib(factory=dict)
    down: bool = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("ConnectionRefusedError: the memory store is down")

    def get_project(self, project_id: str, timeout: float | None = None) -> Project | None:
        self._check()
        secret = self.secrets.get(project_id)
        return None if secret is None else Project.from_secret(project_id, secret)

    def get_secret(self, name: str) -> dict[str, Any] | None:
        self._check()
        secret = self.secrets.get(name)
        return None if secret is None else copy.deepcopy(secret)

    def create_build(self, secret: Mapping[str, Any], timeout: float | None = None) -> bool:
        self._check()
        name = secret["metadata"]["name"]
        size = sum(len(base64.b64decode(v)) for v in (secret.get("data") or {}).values())
        if size > MAX_SECRET_BYTES:
            # Kubernetes' own words, as the real API server says them.
            raise StoreRejected(
                f'Secret "{name}" is invalid: data: Too long: may not be more than '
                f"{MAX_SECRET_BYTES} bytes"
            )
        if name in self.secrets:
            return False
        self.secrets[name] = copy.deepcopy(dict(secret))
        return True

    # Arranging and inspecting, as an admin would.

    def put(self, secret: Mapping[str, Any]) -> None:
        self.secrets[secret["metadata"]["name"]] = copy.deepcopy(dict(secret))

    def builds(self) -> list[dict[str, Any]]:
        return [s for s in self.secrets.values() if s.get("type") == "brigade.sh/build"]
