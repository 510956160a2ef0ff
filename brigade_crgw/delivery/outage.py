"""Riding out a short Kubernetes outage within one request.

:func:`within` calls an attempt again after a failure that an outage
explains, with full-jitter exponential backoff, until a total budget of
seconds is spent.  Retrying is safe because build names are deterministic:
a create that did reach Kubernetes comes back as AlreadyExists.

The clock, the sleep and the randomness are parameters, so tests drive it
without waiting.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

import attr

from ..kubernetes.store import StoreUnavailable

T = TypeVar("T")

# The first pause is up to this long, doubling with each failure, up to CAP.
FIRST = 0.25
CAP = 2.0
# A last attempt is not worth starting with less time left than this.
MIN_ATTEMPT = 0.5


def within(
    budget: float,
    per_call: float,
    attempt: Callable[[float], T],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    jitter: Callable[[], float] = random.random,
    on_retry: Callable[[StoreUnavailable, float], object] = lambda error, pause: None,
) -> T:
    """``attempt(timeout)``'s result, retrying :class:`StoreUnavailable`
    until ``budget`` seconds have passed.

    Each attempt gets ``timeout`` seconds: ``per_call``, cut down so that
    the whole stays within the budget.  With a budget of 0 there is exactly
    one attempt, with ``per_call``.

    :param on_retry: told of each failure that will be retried, and the pause.
    :raises StoreUnavailable: the last failure, once the budget is spent.
    """
    deadline = clock() + budget
    failures = 0
    while True:
        left = deadline - clock()
        timeout = per_call if budget <= 0 else min(per_call, max(left, MIN_ATTEMPT))
        try:
            return attempt(timeout)
        except StoreUnavailable as error:
            pause = jitter() * min(CAP, FIRST * 2**failures)
            failures += 1
            if deadline - clock() - pause < MIN_ATTEMPT:
                raise
            on_retry(error, pause)
            sleep(pause)


def backoff(failures: int, jitter: Callable[[], float] = random.random, cap: float = 30.0) -> float:
    """The pause after ``failures`` failures in a row: between half and all
    of ``min(cap, 2**failures)`` seconds (never zero, so a drainer that
    keeps failing never spins)."""
    ceiling = min(cap, 2.0 ** max(0, failures))
    return ceiling * (0.5 + 0.5 * jitter())


# Once an outage has outlasted the retry budget, a webhook makes one attempt
# of at most this many seconds before its builds go to the spool.
QUICK_ATTEMPT = 1.0


@attr.s(auto_attribs=True)
class Health:
    """Since when Kubernetes has been failing every webhook (None: it answers).

    Shared by the webhooks of the process: the retry budget is for riding
    out a short outage, and once one has lasted longer than that, waiting
    the whole budget again in every webhook would only hold the thread pool
    (and, with it, every other webhook) while the spool is there to take them.
    """

    failing_since: float | None = None
    #: When reading a project the cache did not know last failed (None:
    #: the last such read was answered).
    read_failed_at: float | None = None


@attr.s(auto_attribs=True)
class Drain:
    """When the work of every webhook must be over: unset while the gateway
    serves, set once shutdown begins to drain.

    Shared by the pipeline and the lookups: past it no Kubernetes call is
    started or retried and no registry is asked, and the calls made before
    it are cut to end by it, so every webhook in flight is answered (or its
    builds spooled) before the process exits, whatever it was waiting for.
    """

    clock: Callable[[], float] = time.monotonic
    deadline: float | None = None

    def begin(self, seconds: float) -> None:
        """Shutdown began: the work must be over within ``seconds``."""
        self.deadline = self.clock() + seconds

    def left(self) -> float:
        """Seconds until the deadline; infinite while not draining."""
        return math.inf if self.deadline is None else self.deadline - self.clock()

    def cap(self, deadline: float) -> float:
        """``deadline``, or the drain's when that is sooner."""
        return deadline if self.deadline is None else min(deadline, self.deadline)
