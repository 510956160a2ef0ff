"""The per-project filters and the annotation in the pipeline itself, with
lookups off (no [registry] hosts): the in-memory store, no reactor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brigade_crgw.answers import Target, Trace, Webhook
from brigade_crgw.config import Config
from brigade_crgw.delivery.pipeline import Pipeline
from brigade_crgw.kubernetes.projects import ProjectCache
from devtools.projects import TOKEN, decoded, project_secret

from .memory import MemoryStore

PAYLOADS = Path(__file__).resolve().parent / "payloads"
ACR_PUSH = json.loads((PAYLOADS / "acr" / "push.json").read_bytes())


def acr_push(tag: str, n: int) -> bytes:
    """ACR's documented push, as a new event (its own id) for ``tag``; same digest."""
    doc = json.loads(json.dumps(ACR_PUSH))
    doc["id"] = f"event-{n}"
    doc["target"]["tag"] = tag
    return json.dumps(doc).encode()


def deliver(store: MemoryStore, body: bytes, project: str = "acme/app", **config: Any) -> Any:
    webhook = Webhook(
        target=Target(project=project, commit=""),
        headers={"content-type": "application/json", "user-agent": "AzureContainerRegistry/1.0"},
        body=body,
        query_token=TOKEN,
    )
    return Pipeline(Config(**config), ProjectCache(store, 0, 0), store).deliver(webhook, Trace())


def test_tags_filtered_without_lookups() -> None:
    """crGatewayTags applies with lookups off: an excluded tag is ignored, naming the pattern."""
    store = MemoryStore()
    store.put(project_secret("acme/app", crGatewayTags="v* !*-rc*"))
    ignored = deliver(store, acr_push("v2-rc1", 1))
    assert ignored.code == 200 and ignored.body["status"] == "ignored"
    assert "!*-rc*" in ignored.body["reason"]
    assert store.builds() == []
    assert deliver(store, acr_push("v2", 2)).body["status"] == "Success"


def test_one_build_per_payload_digest() -> None:
    """With crGatewayOneBuildPerDigest, pushes that name the same digest make one build."""
    store = MemoryStore()
    store.put(project_secret("acme/app", crGatewayOneBuildPerDigest="true"))
    names = {tuple(deliver(store, acr_push(tag, n)).body["builds"]) for n, tag in enumerate("abc")}
    assert len(names) == 1 and len(store.builds()) == 1


def test_annotation_without_lookup() -> None:
    """annotate_payload without lookups adds the key (lookup "off"); off, the payload is as sent."""
    store = MemoryStore()
    store.put(project_secret("acme/app"))
    body = acr_push("v1", 1)
    [name] = deliver(store, body, annotate_payload=True).body["builds"]
    doc = json.loads(decoded(store.secrets[name])["payload"])
    value = doc.pop("brigade_crgw")
    assert doc == json.loads(body) and value["lookup"] == "off" and value["tag"] == "v1"
    [plain] = deliver(store, acr_push("v1", 2)).body["builds"]
    assert decoded(store.secrets[plain])["payload"] == acr_push("v1", 2).decode()
