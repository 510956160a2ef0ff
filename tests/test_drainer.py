"""The drainer Service on a fake clock, with the pool replaced by maybeDeferred."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

from brigade_crgw.delivery import drainer as drainer_module
from brigade_crgw.delivery.drainer import Drainer
from brigade_crgw.delivery.spool import Spool

from .helpers import acme_store
from .helpers import build_for_tag as build


def make(tmp_path: Path, store: Any) -> tuple[Drainer, Spool, Clock]:
    spool = Spool.open(str(tmp_path / "spool.sqlite"), 1000)
    clock = Clock()
    return Drainer(spool, store, maybeDeferred, clock), spool, clock


def test_drains_on_start_and_reports_figures(tmp_path: Path) -> None:
    """Started with builds waiting, it creates them all and its figures show
    an empty spool."""
    store = acme_store()
    service, spool, clock = make(tmp_path, store)
    spool.put([build("a"), build("b")])
    service.startService()
    clock.advance(0)
    assert len(store.builds()) == 2 and spool.depth() == 0
    assert service.stats.depth == 0 and service.stats.oldest_age is None


def test_keeps_going_while_batches_come_out_whole(tmp_path: Path) -> None:
    """More than a batch waiting is drained without waiting a tick between batches."""
    store = acme_store()
    service, spool, clock = make(tmp_path, store)
    spool.put([build(str(i)) for i in range(drainer_module.BATCH * 2 + 3)])
    service.startService()
    clock.advance(0)
    clock.advance(0)
    clock.advance(0)
    assert spool.depth() == 0 and len(store.builds()) == drainer_module.BATCH * 2 + 3


def test_backs_off_while_kubernetes_is_down(tmp_path: Path) -> None:
    """With Kubernetes down nothing is lost, the figures count the waiting
    builds, and the pause grows; once it is back the spool empties."""
    store = acme_store(down=True)
    service, spool, clock = make(tmp_path, store)
    spool.put([build("a")])
    service.startService()
    pauses = []
    for _ in range(4):
        clock.advance(0)
        call = service._timer  # the drain's own timer, not the figures' tick
        assert call is not None
        pauses.append(call.getTime() - clock.seconds())
        clock.advance(pauses[-1])
    assert spool.depth() == 1 and service.stats.depth == 1
    assert pauses[-1] > pauses[0]
    store.down = False
    clock.advance(max(c.getTime() for c in clock.getDelayedCalls()))
    assert spool.depth() == 0 and len(store.builds()) == 1


def test_figures_are_fresh_every_second_while_backing_off(tmp_path: Path) -> None:
    """While the drain waits up to 30 s between attempts (Kubernetes down),
    the spool's figures still follow within a tick: a build spooled meanwhile
    shows in the depth one second later."""
    service, spool, clock = make(tmp_path, acme_store(down=True))
    spool.put([build("a")])
    service.startService()
    for _ in range(6):  # the pause grows past a few seconds
        clock.advance(0)
        assert service._timer is not None
        clock.advance(service._timer.getTime() - clock.seconds())
    clock.advance(0)
    assert service._timer.getTime() - clock.seconds() > 2 * drainer_module.TICK
    spool.put([build("b")])
    clock.advance(drainer_module.TICK)
    assert service.stats.depth == 2


def test_builds_of_a_deleted_project_are_dropped_and_counted(tmp_path: Path) -> None:
    """A spooled build whose project was deleted before the drain is not
    created: it leaves the spool, with a warning naming it, and the
    metric brigade_crgw_spool_dropped_total counts it."""
    from twisted.logger import LogLevel, globalLogPublisher

    from brigade_crgw.brigade import project_id
    from brigade_crgw.http.metrics import Metrics

    store = acme_store()
    del store.secrets[project_id("acme/app")]
    metrics = Metrics(lambda: 0)
    spool = Spool.open(str(tmp_path / "spool.sqlite"), 1000)
    clock = Clock()
    service = Drainer(spool, store, maybeDeferred, clock, metrics.record_dropped)
    metrics.watch_spool(lambda: service.stats)
    spool.put([build("a"), build("b")])
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        service.startService()
        clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert store.builds() == [] and spool.depth() == 0 and spool.rejected() == 0
    warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
    assert [e["build"] for e in warnings] == [build(t)["metadata"]["name"] for t in "ab"]
    assert "brigade_crgw_spool_dropped_total 2.0\n" in metrics.render()


def test_picks_up_builds_spooled_later(tmp_path: Path) -> None:
    """A build spooled while the drainer idles is created within a tick."""
    store = acme_store()
    service, spool, clock = make(tmp_path, store)
    service.startService()
    clock.advance(0)
    spool.put([build("late")])
    clock.advance(drainer_module.TICK)
    assert len(store.builds()) == 1


def test_stop_cancels_the_timer(tmp_path: Path) -> None:
    """Stopping leaves no timer behind and answers at once when idle."""
    service, _, clock = make(tmp_path, acme_store())
    service.startService()
    clock.advance(0)
    fired: list[object] = []
    service.stopService().addCallback(fired.append)
    assert fired == [None] and clock.getDelayedCalls() == []


def test_metrics_show_the_spool(tmp_path: Path) -> None:
    """GET /metrics carries the drainer's last figures: depth, oldest age, rejected."""
    from brigade_crgw.http.metrics import Metrics

    service, spool, clock = make(tmp_path, acme_store(down=True))
    spool.put([build("a"), build("b")])
    service.startService()
    clock.advance(0)
    text = Metrics(lambda: 0, lambda: service.stats).render()
    assert "brigade_crgw_spool_depth 2.0\n" in text
    assert "brigade_crgw_spool_rejected 0.0\n" in text
    assert "brigade_crgw_spool_oldest_age_seconds " in text
    assert "brigade_crgw_spool_depth" not in Metrics(lambda: 0).render()


def test_metrics_watch_a_spool_given_later(tmp_path: Path) -> None:
    """A spool handed to the metrics after they were made (as makeService
    does) is served from then on."""
    from brigade_crgw.http.metrics import Metrics

    service, spool, clock = make(tmp_path, acme_store(down=True))
    spool.put([build("a")])
    service.startService()
    clock.advance(0)
    metrics = Metrics(lambda: 0)
    metrics.watch_spool(lambda: service.stats)
    assert "brigade_crgw_spool_depth 1.0\n" in metrics.render()


def test_a_missing_permission_is_an_error(tmp_path: Path) -> None:
    """When Kubernetes answers 401/403 to the drainer, the log line is an
    error (the operator must act), and the builds stay."""
    from twisted.logger import LogLevel, globalLogPublisher

    from brigade_crgw.kubernetes.store import StoreForbidden

    store = acme_store()

    def forbidden(secret: Any, timeout: float | None = None) -> bool:
        raise StoreForbidden("Kubernetes answered 403 to create secrets: lacks a permission")

    store.create_build = forbidden  # type: ignore[method-assign]
    service, spool, clock = make(tmp_path, store)
    spool.put([build("a")])
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        service.startService()
        clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(events.append)
    errors = [e for e in events if e.get("log_level") == LogLevel.error]
    assert errors and "403 to create secrets" in str(errors[0].get("error"))
    assert spool.depth() == 1
