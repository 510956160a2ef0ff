"""The spool's drainer: a small Service that empties the spool into Kubernetes.

Every second (or at once, while a batch came out whole) it runs
:func:`drain_once` on the gateway's thread pool; while
Kubernetes stays unavailable it waits longer between attempts (jittered, up
to 30 s).  Every second, whatever the drain is doing, it also refreshes the
spool's figures for ``GET /metrics`` and ``/readyz``, so the reactor never
reads the file itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..kubernetes.store import StoreForbidden, StoreRejected, StoreUnavailable
from .outage import Drain, backoff
from .spool import Spool, SpoolError, SpoolStats

log = Logger()
Runner = Callable[..., "Deferred[Any]"]

TICK = 1.0
BATCH = 50


class BuildStore(Protocol):
    """The part of the Kubernetes store the drainer needs."""

    def create_build(self, secret: Mapping[str, Any]) -> bool: ...

    def get_project(self, project_id: str, timeout: float | None = None) -> object | None: ...


@attr.s(frozen=True, auto_attribs=True)
class Drained:
    """What one :func:`drain_once` did.

    :param created: builds created now.
    :param existed: builds Kubernetes already had (a sender's retry won).
    :param rejected: (name, reason) of builds Kubernetes refused for good.
    :param failure: why it stopped early (Kubernetes unavailable), or None.
    :param dropped: (name, project) of builds whose project no longer exists.
    """

    created: tuple[str, ...] = ()
    existed: tuple[str, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()
    failure: StoreUnavailable | None = None
    dropped: tuple[tuple[str, str], ...] = ()


def drain_once(spool: Spool, store: BuildStore, limit: int = 50) -> Drained:
    """Create up to ``limit`` spooled builds, oldest first, removing each
    once Kubernetes has it.  A build whose project was deleted meanwhile is
    removed without being created (each project is asked once per call).
    Stops at the first sign that Kubernetes is unavailable; the entries not
    done stay for the next time.

    :raises SpoolError: when the spool cannot be read or written.
    """
    created: list[str] = []
    existed: list[str] = []
    rejected: list[tuple[str, str]] = []
    dropped: list[tuple[str, str]] = []
    projects: dict[str, bool] = {}

    def done(failure: StoreUnavailable | None = None) -> Drained:
        return Drained(tuple(created), tuple(existed), tuple(rejected), failure, tuple(dropped))

    for entry in spool.peek(limit):
        project = str(entry.secret["metadata"].get("labels", {}).get("project", ""))
        try:
            if project and project not in projects:
                projects[project] = store.get_project(project) is not None
            if project and not projects[project]:
                spool.remove(entry)
                dropped.append((entry.name, project))
                continue
            new = store.create_build(entry.secret)
        except StoreRejected as e:
            spool.reject(entry, str(e))
            rejected.append((entry.name, str(e)))
            continue
        except StoreUnavailable as e:
            spool.note(entry, str(e))
            return done(e)
        spool.remove(entry)
        (created if new else existed).append(entry.name)
    return done()


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
