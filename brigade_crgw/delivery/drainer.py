"""The spool's drainer: a small Service that empties the spool into Kubernetes.

Every second (or at once, while a batch came out whole) it runs
:func:`~brigade_crgw.delivery.spool.drain_once` on the gateway's thread pool; while
Kubernetes stays unavailable it waits longer between attempts (jittered, up
to 30 s).  Every second, whatever the drain is doing, it also refreshes the
spool's figures for ``GET /metrics`` and ``/readyz``, so the reactor never
reads the file itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..kubernetes.store import StoreForbidden
from .outage import Drain, backoff
from .spool import BuildStore, Drained, Spool, SpoolError, SpoolStats, drain_once

log = Logger()
Runner = Callable[..., "Deferred[Any]"]

TICK = 1.0
BATCH = 50


@attr.s(auto_attribs=True)
class Drainer(Service):
    """Drains ``spool`` into ``store`` through ``run`` (the thread pool).

    :param clock: the reactor, for timers.
    :param dropped: told how many builds were dropped because their
        project is gone (a metric counts them).
    :param drain: set once shutdown begins: a trip that gets its thread
        after that leaves the spool to the next start.
    """

    spool: Spool
    store: BuildStore
    run: Runner
    clock: IReactorTime
    dropped: Callable[[int], object] = lambda count: None
    stats: SpoolStats = attr.ib(factory=SpoolStats)
    drain: Drain = attr.ib(factory=Drain)
    _failures: int = 0
    _timer: IDelayedCall | None = None
    _busy: Deferred[None] | None = None
    _figures: LoopingCall | None = None
    _reading: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._schedule(0)
        self._figures = LoopingCall(self._refresh)
        self._figures.clock = self.clock
        self._figures.start(TICK, now=False)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._figures is not None and self._figures.running:
            self._figures.stop()
        # The pool must not stop under a trip in progress.
        busy = [d for d in (self._busy, self._reading) if d is not None]
        return gatherResults(busy).addCallback(lambda _: None)

    def _refresh(self) -> None:
        """The figures, read on the pool; skipped while the last read runs."""
        if self._reading is not None and not self._reading.called:
            return

        def read() -> SpoolStats:
            return SpoolStats(self.spool.depth(), self.spool.oldest_age(), self.spool.rejected())

        def got(stats: SpoolStats) -> None:
            self.stats = stats

        def failed(failure: Any) -> None:
            if not failure.check(SpoolError):
                log.failure("reading the spool's figures failed unexpectedly", failure)

        self._reading = self.run(read).addCallbacks(got, failed)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._timer = self.clock.callLater(delay, self._trip)

    def _trip(self) -> None:
        d = self.run(self._drain)
        self._busy = d.addCallbacks(self._done, self._broken)

    def _drain(self) -> tuple[Drained | None, SpoolStats]:
        """On the pool: one batch (when something waits), then the figures."""
        waiting = self.spool.depth() and self.drain.deadline is None
        drained = drain_once(self.spool, self.store, BATCH) if waiting else None
        stats = SpoolStats(self.spool.depth(), self.spool.oldest_age(), self.spool.rejected())
        return drained, stats

    def _done(self, result: tuple[Drained | None, SpoolStats]) -> None:
        self._busy = None
        drained, self.stats = result
        if drained is None:
            self._failures = 0
            self._schedule(TICK)
            return
        for name in drained.created:
            log.info("drained spooled build {build}: created", build=name)
        for name in drained.existed:
            log.info("drained spooled build {build}: it already existed", build=name)
        for name, project in drained.dropped:
            log.warn(
                "dropped spooled build {build}: its project {project} no longer exists",
                build=name,
                project=project,
            )
        if drained.dropped:
            self.dropped(len(drained.dropped))
        for name, reason in drained.rejected:
            log.error(
                "Kubernetes refused spooled build {build} for good; it stays in the spool "
                "{path}, marked rejected: {reason}",
                build=name,
                path=self.spool.path,
                reason=reason,
            )
        if drained.failure is None:
            self._failures = 0
            self._schedule(0 if self.stats.depth else TICK)
            return
        self._failures += 1
        pause = backoff(self._failures)
        emit = log.error if isinstance(drained.failure, StoreForbidden) else log.warn
        emit(
            "{depth} spooled builds wait: Kubernetes is unavailable ({error}); "
            "next attempt in {pause:.1f}s",
            depth=self.stats.depth,
            error=str(drained.failure),
            pause=pause,
        )
        self._schedule(pause)

    def _broken(self, failure: Any) -> None:
        self._busy = None
        self._failures += 1
        pause = backoff(self._failures)
        if failure.check(SpoolError):
            log.error("cannot drain the spool: {error}", error=str(failure.value))
        else:
            log.failure("draining the spool failed unexpectedly", failure)
        self._schedule(pause)
