"""Readiness: whether the gateway can take a push safely now, for
``GET /readyz``; and, apart from that, whether Kubernetes answers.

A small Service asks the store every ``interval`` seconds (on the thread
pool) to get a Secret that need not exist: 404 or 200 means the API server
answered and the gateway's identity may read Secrets there; a 403, a
timeout or a refused connection means Kubernetes is unavailable.  That
answer is remembered, so ``/readyz`` costs nothing and a probe storm cannot
reach the API server; it is logged when it changes and served as the
``brigade_crgw_kubernetes_up`` metric.

Ready means a push sent here now would be kept: Kubernetes answers, or it
does not but the spool has room and the project cache is warm (a project
was read since the start, so tokens can be checked and builds spooled).  So
a fleet whose replicas have spools stays in its load balancer through an
outage, which is what the spools are for, while a replica without a spool,
with a full one, or started during the outage (nothing read: it cannot
check a token) leaves it.  From SIGTERM on it is never ready
(``[server] shutdown_delay``).  Liveness (``/healthz``) never depends on this.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..kubernetes.store import StoreUnavailable

log = Logger()

# Seconds between two checks.
INTERVAL = 5.0
_DIGITS = re.compile(r"\d+")


@attr.s(auto_attribs=True)
class Readiness(Service):
    """Checks the road to the project Secrets every ``interval`` seconds,
    and judges from that, the spool and the project cache whether a push
    can be taken safely.

    :param check: blocking; returns when a Secret get was answered as
        allowed, raises :class:`StoreUnavailable` naming the failure.
    :param run: runs ``check`` off the reactor thread, returning a Deferred.
    :param clock: the reactor, for the schedule and the age of the last answer.
    :param timeout: the longest one check can take (the Kubernetes timeout).
    :param spool_room: whether the spool can take another push; None when
        there is no spool.
    :param warm: whether a project has been read since the start.
    """

    check: Callable[[], None]
    run: Callable[..., Deferred[Any]]
    clock: IReactorTime
    timeout: float
    interval: float = INTERVAL
    spool_room: Callable[[], bool] | None = None
    warm: Callable[[], bool] = lambda: True
    stopping: bool = False
    last_ok: float | None = None
    failure: str = "not checked yet"
    _loop: LoopingCall | None = None
    _said: tuple[bool, str] | None = None

    @property
    def stale_after(self) -> float:
        """Past this many seconds without a good answer, Kubernetes counts
        as unavailable, even when no check has failed (the pool is too busy
        to run one)."""
        return 2 * self.interval + self.timeout

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._check)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def stop_taking(self) -> None:
        """From now on not ready: the process is stopping."""
        self.stopping = True
        self.state()

    def _check(self) -> Deferred[None]:
        # The loop waits for this Deferred, so checks never overlap.
        return self.run(self.check).addCallbacks(self._answered, self._failed)

    def _answered(self, _: object) -> None:
        if self.failure:
            log.info("Kubernetes answers and the project Secrets can be read")
        self.last_ok, self.failure = self.clock.seconds(), ""
        self.state()

    def _failed(self, failure: Failure) -> None:
        reason = (
            str(failure.value)
            if failure.check(StoreUnavailable)
            else f"the check failed unexpectedly: {failure.getErrorMessage()}"
        )
        if reason != self.failure:
            log.warn("Kubernetes is unavailable: {reason}", reason=reason)
        self.failure = reason
        self.state()

    def kubernetes(self) -> tuple[bool, str]:
        """Whether Kubernetes answered the last check in time, and if not, why."""
        if self.failure:
            return False, self.failure
        assert self.last_ok is not None
        age = self.clock.seconds() - self.last_ok
        if age > self.stale_after:
            return False, f"Kubernetes has not answered a check for {age:.0f}s"
        return True, ""

    def state(self) -> tuple[bool, str]:
        """Whether the gateway can take a push safely, and why (or why not)."""
        ready, reason = self._judge()
        # Logged when it changes; a count of seconds in the reason (how long
        # Kubernetes has been silent) is no change.
        said = (ready, _DIGITS.sub("", reason))
        if said != self._said:
            if ready:
                log.info("ready{why}", why=f": {reason}" if reason else "")
            else:
                log.warn("not ready: {reason}", reason=reason)
            self._said = said
        return ready, reason

    def _judge(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "stopping (SIGTERM); taking pushes until shutdown_delay has passed"
        up, why = self.kubernetes()
        if up:
            return True, ""
        if self.spool_room is None:
            return False, f"{why}; there is no spool to keep pushes in"
        if not self.spool_room():
            return False, f"{why}; the spool is full"
        if not self.warm():
            return False, (
                f"{why}; no project has been read since the start, so no token can be checked"
            )
        return True, f"{why}; pushes go to the spool"
