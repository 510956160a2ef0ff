"""deliver() when Kubernetes is away: the in-request retry, the spool, the
refusals that are never retried.  A fake clock drives the retry (no
waiting); the spool is a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attr
import pytest
from twisted.logger import LogLevel, globalLogPublisher

from brigade_crgw.answers import Refusal, Target, Trace, Webhook
from brigade_crgw.brigade import project_id
from brigade_crgw.config import Config
from brigade_crgw.delivery.outage import Drain
from brigade_crgw.delivery.pipeline import Pipeline
from brigade_crgw.delivery.spool import Spool
from brigade_crgw.kubernetes.projects import ProjectCache
from brigade_crgw.kubernetes.store import StoreForbidden, StoreUnavailable
from devtools.projects import TOKEN, fresh, project_secret

from .helpers import DOCKERHUB
from .memory import MemoryStore


class Time:
    """Monotonic seconds that move only when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@attr.s(auto_attribs=True)
class Flaky:
    """A store whose creates fail ``failures`` times (forever with -1), like
    an API server that is away; projects stay readable unless ``reads_fail``."""

    inner: MemoryStore
    failures: int = -1
    reads_fail: bool = False
    error: type[StoreUnavailable] = StoreUnavailable
    creates: int = 0
    timeouts: list[float | None] = attr.ib(factory=list)

    def get_project(self, project_id: str, timeout: float | None = None) -> Any:
        if self.reads_fail:
            raise self.error("ConnectionRefusedError: away")
        return self.inner.get_project(project_id)

    def create_build(self, secret: Mapping[str, Any], timeout: float | None = None) -> bool:
        self.creates += 1
        self.timeouts.append(timeout)
        if self.failures != 0:
            self.failures -= 1
            raise self.error("Kubernetes answered 503 to create secrets")
        return self.inner.create_build(secret)


@pytest.fixture
def memory() -> MemoryStore:
    store = MemoryStore()
    store.put(project_secret("acme/app"))
    return store


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    spool = Spool.open(str(tmp_path / "spool.sqlite"), 100)
    yield spool
    spool.close()


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def pipeline(
    store: Any, t: Time, spool: Spool | None = None, projects: Any = None, **config: Any
) -> Pipeline:
    return Pipeline(
        Config(**config),
        projects or ProjectCache(store, 0, 0),
        store,
        spool=spool,
        clock=t.clock,
        sleep=t.sleep,
    )


def webhook(n: int = 0) -> Webhook:
    return Webhook(
        target=Target(project="acme/app", commit=""),
        headers={"content-type": "application/json"},
        body=fresh(DOCKERHUB, n),
        query_token=TOKEN,
    )


def test_short_outage_is_ridden_out(memory: MemoryStore, spool: Spool) -> None:
    """Failures within the budget are retried and the answer is 200, with
    nothing spooled."""
    t = Time()
    store = Flaky(memory, failures=3)
    outcome = pipeline(store, t, spool).deliver(webhook(), Trace())
    assert outcome.code == 200 and store.creates == 4
    assert len(memory.builds()) == 1 and spool.depth() == 0
    assert t.now - 1000 <= 8


def test_long_outage_is_queued_durably(memory: MemoryStore, spool: Spool) -> None:
    """Past the budget the builds go to the spool and the answer is 202
    queued, naming them; the whole took about the budget, no more."""
    t = Time()
    store = Flaky(memory)
    trace = Trace()
    outcome = pipeline(store, t, spool).deliver(webhook(), trace)
    assert outcome.code == 202
    assert outcome.body["status"] == "queued"
    [entry] = spool.peek(5)
    assert outcome.body["builds"] == [entry.name] == trace.builds
    assert memory.builds() == []
    assert t.now - 1000 <= 8 + 0.5
    assert all(timeout is not None and timeout <= 8 for timeout in store.timeouts)


def test_without_a_spool_an_outage_is_503(memory: MemoryStore) -> None:
    """With no spool, an outage past the budget is 503 with Retry-After."""
    t = Time()
    with pytest.raises(Refusal) as refused:
        pipeline(Flaky(memory), t).deliver(webhook(), Trace())
    assert refused.value.code == 503 and refused.value.headers["Retry-After"]


def test_full_spool_is_503(memory: MemoryStore, tmp_path: Path) -> None:
    """A full spool stores nothing and answers 503."""
    t = Time()
    spool = Spool.open(str(tmp_path / "small.sqlite"), 1)
    deliver = pipeline(Flaky(memory), t, spool).deliver
    assert deliver(webhook(1), Trace()).code == 202
    with pytest.raises(Refusal) as refused:
        deliver(webhook(2), Trace())
    assert refused.value.code == 503 and spool.depth() == 1


def test_retry_zero_is_one_attempt(memory: MemoryStore, spool: Spool) -> None:
    """retry_seconds = 0: one attempt, then straight to the spool."""
    t = Time()
    store = Flaky(memory)
    outcome = pipeline(store, t, spool, retry_seconds=0).deliver(webhook(), Trace())
    assert outcome.code == 202 and store.creates == 1 and t.now == 1000


def test_rejected_build_is_never_retried_or_spooled(spool: Spool) -> None:
    """A build Kubernetes refuses for good is a 422 with the reason, at
    once: not retried, not spooled."""
    t = Time()
    store = MemoryStore()
    store.put(project_secret("acme/app", defaultScript="x" * (1024 * 1024)))
    with pytest.raises(Refusal) as refused:
        pipeline(store, t, spool).deliver(webhook(), Trace())
    assert refused.value.code == 422 and refused.value.status == "rejected"
    assert spool.depth() == 0 and t.now == 1000


def test_a_spooled_delivery_sent_again_is_one_entry(memory: MemoryStore, spool: Spool) -> None:
    """A sender retrying a delivery that was queued gets 202 with the same
    build name, and the spool still holds it once."""
    t = Time()
    deliver = pipeline(Flaky(memory), t, spool).deliver
    first = deliver(webhook(7), Trace())
    again = deliver(webhook(7), Trace())
    assert first.body["builds"] == again.body["builds"]
    assert spool.depth() == 1


def test_known_project_is_used_while_kubernetes_is_away(memory: MemoryStore, spool: Spool) -> None:
    """A project the gateway read before the outage authorises webhooks
    during it (past its cache time), so they can be spooled."""
    t = Time()
    store = Flaky(memory)
    cache = ProjectCache(store, 5.0, 1.0, clock=t.clock)
    deliver = pipeline(store, t, spool, projects=cache).deliver
    cache.get_project(project_id("acme/app"))
    t.now += 60
    store.reads_fail = True
    assert deliver(webhook(), Trace()).code == 202


def test_unknown_project_while_kubernetes_is_away_is_503(memory: MemoryStore, spool: Spool) -> None:
    """A project the gateway never read cannot be authorised during an
    outage: 503, nothing spooled."""
    t = Time()
    store = Flaky(memory, reads_fail=True)
    with pytest.raises(Refusal) as refused:
        pipeline(store, t, spool).deliver(webhook(), Trace())
    assert refused.value.code == 503 and spool.depth() == 0


def test_forbidden_is_logged_as_an_error_and_queued(
    memory: MemoryStore, spool: Spool, logged: list[dict[str, Any]]
) -> None:
    """A 401/403 from Kubernetes is handled like an outage (here: spooled)
    and logged as an error carrying its explanation."""
    t = Time()
    store = Flaky(memory, error=StoreForbidden)
    assert pipeline(store, t, spool).deliver(webhook(), Trace()).code == 202
    errors = [e for e in logged if e.get("log_level") == LogLevel.error]
    assert errors and "create secrets" in str(errors[0].get("error"))


def test_screen_uses_the_known_project_without_waiting(memory: MemoryStore) -> None:
    """Screening a webhook (before its body is read) during an outage uses
    the project as last read, without asking Kubernetes, so the webhook
    waits out the outage once (in deliver), not twice."""
    t = Time()
    store = Flaky(memory)
    cache = ProjectCache(store, 5.0, 1.0, clock=t.clock)
    cache.get_project(project_id("acme/app"))
    t.now += 60
    store.reads_fail = True
    asked: list[str] = []
    store.get_project = lambda *a, **k: asked.append("read")  # type: ignore[method-assign]
    pipeline(store, t, projects=cache).screen(
        Target(project="acme/app", commit=""), {}, TOKEN, Trace()
    )
    assert asked == [] and t.now == 1060


def test_after_a_long_outage_webhooks_go_to_the_spool_quickly(
    memory: MemoryStore, spool: Spool
) -> None:
    """Once Kubernetes has failed for longer than the budget, a webhook makes
    one quick attempt and is queued, instead of holding a thread for the
    whole budget; the first success ends that."""
    t = Time()
    store = Flaky(memory)
    deliver = pipeline(store, t, spool).deliver
    assert deliver(webhook(1), Trace()).code == 202  # waits the budget out
    t.now += 5  # the outage is now older than the budget
    before, creates = t.now, store.creates
    assert deliver(webhook(2), Trace()).code == 202
    assert t.now == before and store.creates == creates + 1
    assert store.timeouts[-1] is not None and store.timeouts[-1] <= 1.0
    store.failures = 0  # Kubernetes is back
    assert deliver(webhook(3), Trace()).code == 200
    store.failures = 2  # a new, short blip is ridden out again
    assert deliver(webhook(4), Trace()).code == 200


def test_the_drain_deadline_cuts_the_retries(memory: MemoryStore, spool: Spool) -> None:
    """Once shutdown's drain has 3 s left, an outage is retried for those
    3 s only (each call cut to what is left), then the builds are spooled."""
    t = Time()
    store = Flaky(memory)
    p = attr.evolve(pipeline(store, t, spool), drain=Drain(t.clock))
    p.drain.begin(3)
    outcome = p.deliver(webhook(), Trace())
    assert outcome.code == 202 and spool.depth() == 1
    assert t.now - 1000 <= 3
    assert all(timeout is not None and timeout <= 3 for timeout in store.timeouts)


def test_past_the_drain_deadline_nothing_is_asked(memory: MemoryStore, spool: Spool) -> None:
    """Past shutdown's deadline a webhook of a known project starts no
    Kubernetes call: its builds go straight to the spool."""
    t = Time()
    store = Flaky(memory, failures=0)
    projects = ProjectCache(store, 5, 1, clock=t.clock)
    p = attr.evolve(pipeline(store, t, spool, projects), drain=Drain(t.clock))
    assert p.deliver(webhook(1), Trace()).code == 200
    p.drain.begin(0)
    outcome = p.deliver(webhook(2), Trace())
    assert outcome.code == 202 and spool.depth() == 1 and store.creates == 1


def test_after_a_failed_read_of_a_new_project_the_next_is_quick(memory: MemoryStore) -> None:
    """Once reading a project the cache never read has failed, the next such
    read is one quick attempt (not the retry budget), and succeeds as soon
    as Kubernetes is back."""
    t = Time()
    store = Flaky(memory, failures=0, reads_fail=True)
    p = pipeline(store, t)
    with pytest.raises(Refusal):
        p.deliver(webhook(1), Trace())
    assert t.now - 1000 > 1  # the budget, retried
    reads_before = t.now
    with pytest.raises(Refusal):
        p.deliver(webhook(2), Trace())
    assert t.now == reads_before  # no pause: one attempt
    store.reads_fail = False
    assert p.deliver(webhook(3), Trace()).code == 200
    assert p.health.read_failed_at is None
