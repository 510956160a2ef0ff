"""The webhook pipeline as one plain function: no reactor, no HTTP, the
in-memory store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from brigade_crgw.answers import Refusal, Target, Trace, Webhook
from brigade_crgw.brigade import project_id
from brigade_crgw.config import Config
from brigade_crgw.delivery.pipeline import Pipeline
from brigade_crgw.kubernetes.projects import ProjectCache
from devtools.projects import TOKEN, decoded, project_secret

from .helpers import body
from .memory import MemoryStore

ACR_PUSH = body("acr/push.json")


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.put(project_secret("acme/app"))
    return store


def pipeline(store: MemoryStore, **config: Any) -> Pipeline:
    return Pipeline(Config(**config), ProjectCache(store, 0, 0), store)


def webhook(body: bytes = ACR_PUSH, token: str | None = TOKEN, **target: str) -> Webhook:
    return Webhook(
        target=Target(project=target.get("project", "acme/app"), commit=target.get("commit", "")),
        headers={"content-type": "application/json"},
        body=body,
        query_token=token,
    )


def test_push_makes_a_build_and_traces_it(store: MemoryStore) -> None:
    """A push answers Success naming the build Kubernetes now holds, and the
    trace carries what the log line needs."""
    trace = Trace()
    outcome = pipeline(store).deliver(webhook(commit="abc123"), trace)
    assert outcome.code == 200
    assert outcome.body["status"] == "Success"
    [name] = outcome.body["builds"]
    assert decoded(store.secrets[name])["commit_ref"] == "abc123"
    assert (trace.project, trace.registry, trace.repository, trace.tag, trace.builds) == (
        project_id("acme/app"),
        "acr",
        "hello-world",
        "v1",
        [name],
    )


def test_wrong_token_is_401_and_nothing_is_made(store: MemoryStore) -> None:
    """A wrong token is refused with 401 before the payload is decoded."""
    trace = Trace()
    with pytest.raises(Refusal) as refused:
        pipeline(store).deliver(webhook(token="nope"), trace)
    assert refused.value.code == 401
    assert trace.registry == ""
    assert store.builds() == []


def test_store_down_is_503_with_retry_after(store: MemoryStore) -> None:
    """Kubernetes away means 503 and Retry-After, whether reading or creating."""
    store.down = True
    with pytest.raises(Refusal) as refused:
        pipeline(store, retry_seconds=0).deliver(webhook(), Trace())
    assert (refused.value.code, refused.value.headers) == (503, {"Retry-After": "5"})


def test_rejected_build_is_422_with_the_reason() -> None:
    """A build Kubernetes refuses as invalid (here a defaultScript that takes
    the Secret past 1 MiB) is a 422 naming the reason, not a 503 to retry."""
    store = MemoryStore()
    store.put(project_secret("acme/app", defaultScript="x" * (1024 * 1024)))
    with pytest.raises(Refusal) as refused:
        pipeline(store).deliver(webhook(), Trace())
    assert refused.value.code == 422
    assert "Too long" in refused.value.reason
    assert store.builds() == []


def test_ignored_and_handshake_answers(store: MemoryStore) -> None:
    """A ping is 200 ignored with the reason; no build is made."""
    outcome = pipeline(store).deliver(webhook(json.dumps({"action": "ping"}).encode()), Trace())
    assert outcome.code == 200
    assert outcome.body["status"] == "ignored"
    assert store.builds() == []


def test_redelivery_names_the_same_build(store: MemoryStore) -> None:
    """The same delivery twice answers the same build, and one exists."""
    first = pipeline(store).deliver(webhook(), Trace())
    second = pipeline(store).deliver(webhook(), Trace())
    assert first.body == second.body
    assert len(store.builds()) == 1


QUAY_PUSH = body("quay/repo_push.json")


def test_repeated_tags_make_one_build(store: MemoryStore) -> None:
    """A Quay push naming one tag a thousand times makes one build."""
    doc = json.loads(QUAY_PUSH)
    doc["updated_tags"] = ["v1"] * 1000
    outcome = pipeline(store).deliver(webhook(json.dumps(doc).encode()), Trace())
    assert len(outcome.body["builds"]) == 1
    assert len(store.builds()) == 1


def test_too_many_images_are_422_before_any_build(store: MemoryStore) -> None:
    """A webhook naming more images than max_builds_per_webhook is refused
    with 422 and a reason, and nothing is made; at the limit it builds."""
    doc = json.loads(QUAY_PUSH)
    doc["updated_tags"] = [f"v{n}" for n in range(4)]
    body = json.dumps(doc).encode()
    with pytest.raises(Refusal) as refused:
        pipeline(store, max_builds_per_webhook=3).deliver(webhook(body), Trace())
    assert refused.value.code == 422
    assert "max_builds_per_webhook" in refused.value.reason
    assert store.builds() == []
    outcome = pipeline(store, max_builds_per_webhook=4).deliver(webhook(body), Trace())
    assert len(outcome.body["builds"]) == 4
