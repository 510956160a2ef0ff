"""The in-request retry, driven by a fake clock: no waiting, no timings."""

from __future__ import annotations

import pytest

from brigade_crgw.delivery import outage as retry
from brigade_crgw.kubernetes.store import StoreRejected, StoreUnavailable


class Time:
    """A clock that only moves when slept on (or told to)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def failing(times: int, t: Time, cost: float = 0.0, timeouts: list[float] | None = None):  # type: ignore[no-untyped-def]
    """An attempt that fails ``times`` times (each taking ``cost`` seconds), then succeeds."""
    calls = {"n": 0}

    def attempt(timeout: float) -> str:
        if timeouts is not None:
            timeouts.append(timeout)
        calls["n"] += 1
        t.now += cost
        if calls["n"] <= times:
            raise StoreUnavailable("ConnectionRefusedError")
        return "done"

    attempt.calls = calls  # type: ignore[attr-defined]
    return attempt


def test_success_first_time_does_not_sleep() -> None:
    """An attempt that works is called once and nothing waits."""
    t = Time()
    assert retry.within(8, 10, failing(0, t), clock=t.clock, sleep=t.sleep) == "done"
    assert t.pauses == []


def test_retries_until_it_works() -> None:
    """Failures within the budget are retried, with growing, capped pauses."""
    t = Time()
    attempt = failing(5, t)
    result = retry.within(30, 10, attempt, clock=t.clock, sleep=t.sleep, jitter=lambda: 1.0)
    assert result == "done" and attempt.calls["n"] == 6  # type: ignore[attr-defined]
    assert t.pauses == [0.25, 0.5, 1.0, 2.0, 2.0]


def test_jitter_scales_the_pause() -> None:
    """The pause is a random fraction of the backoff (full jitter)."""
    t = Time()
    retry.within(30, 10, failing(2, t), clock=t.clock, sleep=t.sleep, jitter=lambda: 0.5)
    assert t.pauses == [0.125, 0.25]


def test_budget_spent_raises_the_last_failure() -> None:
    """A failure that outlasts the budget comes out, and the time spent
    stays within the budget."""
    t = Time()
    attempt = failing(1000, t, cost=0.1)
    with pytest.raises(StoreUnavailable):
        retry.within(8, 10, attempt, clock=t.clock, sleep=t.sleep, jitter=lambda: 1.0)
    assert t.now <= 8
    assert attempt.calls["n"] > 3  # type: ignore[attr-defined]


def test_zero_budget_is_one_attempt() -> None:
    """retry_seconds = 0 turns retrying off: one attempt with the full timeout."""
    t = Time()
    timeouts: list[float] = []
    with pytest.raises(StoreUnavailable):
        retry.within(0, 10, failing(1, t, timeouts=timeouts), clock=t.clock, sleep=t.sleep)
    assert timeouts == [10] and t.pauses == []


def test_timeouts_fit_the_budget() -> None:
    """Each attempt's timeout is cut so that a hanging API server cannot
    stretch the request past the budget by a whole request_timeout."""
    t = Time()
    timeouts: list[float] = []
    attempt = failing(1000, t, timeouts=timeouts)

    def hang(timeout: float) -> str:
        t.now += timeout  # the call waits out its whole timeout
        return attempt(timeout)

    with pytest.raises(StoreUnavailable):
        retry.within(8, 10, hang, clock=t.clock, sleep=t.sleep, jitter=lambda: 1.0)
    assert timeouts[0] == 8 and t.now <= 8 + retry.MIN_ATTEMPT


def test_permanent_refusal_is_not_retried() -> None:
    """StoreRejected passes straight through: retrying cannot help."""
    t = Time()
    calls = []

    def attempt(timeout: float) -> None:
        calls.append(timeout)
        raise StoreRejected("Kubernetes answered 422")

    with pytest.raises(StoreRejected):
        retry.within(8, 10, attempt, clock=t.clock, sleep=t.sleep)
    assert len(calls) == 1


def test_on_retry_hears_each_retried_failure() -> None:
    """on_retry is told of every failure that is retried, not of the last."""
    t = Time()
    heard: list[float] = []
    retry.within(
        30,
        10,
        failing(3, t),
        clock=t.clock,
        sleep=t.sleep,
        jitter=lambda: 1.0,
        on_retry=lambda e, pause: heard.append(pause),
    )
    assert heard == t.pauses == [0.25, 0.5, 1.0]


@pytest.mark.parametrize("failures", range(0, 12))
@pytest.mark.parametrize("jitter", [0.0, 0.3, 1.0])
def test_drainer_backoff_is_bounded_and_never_zero(failures: int, jitter: float) -> None:
    """The drainer's pause is between half and all of min(30, 2**failures)."""
    pause = retry.backoff(failures, lambda: jitter)
    ceiling = min(30.0, 2.0**failures)
    assert ceiling / 2 <= pause <= ceiling and pause > 0
