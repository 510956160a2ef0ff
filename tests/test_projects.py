"""The short-lived project cache in front of the store."""

from __future__ import annotations

import pytest

from brigade_crgw.brigade import project_id
from brigade_crgw.kubernetes.projects import MAX_MISSES, ProjectCache
from brigade_crgw.kubernetes.store import StoreUnavailable
from devtools.projects import project_secret

from .memory import MemoryStore


class CountingStore(MemoryStore):
    """The in-memory store, counting reads."""

    reads = 0

    def get_project(self, project_id: str, timeout: float | None = None):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().get_project(project_id, timeout)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _acme() -> tuple[CountingStore, Clock, ProjectCache, str]:
    """acme/app in a counting store behind a cache of 5 s (1 s for misses);
    the store, the clock, the cache and the project's ID."""
    store, clock = CountingStore(), Clock()
    store.put(project_secret("acme/app"))
    return store, clock, ProjectCache(store, 5.0, 1.0, clock), project_id("acme/app")


def test_hits_are_reused_until_they_expire() -> None:
    """A project is read once within ``seconds``, and again after."""
    store, clock, cache, pid = _acme()
    assert cache.get_project(pid) is not None
    clock.now += 4.9
    assert cache.get_project(pid) is not None
    assert store.reads == 1
    clock.now += 0.2
    cache.get_project(pid)
    assert store.reads == 2


def test_misses_expire_sooner() -> None:
    """An unknown project is remembered for ``miss_seconds`` only, so a new
    project is seen soon."""
    store, clock = CountingStore(), Clock()
    cache = ProjectCache(store, 5.0, 1.0, clock)
    pid = project_id("new/app")
    assert cache.get_project(pid) is None
    store.put(project_secret("new/app"))
    assert cache.get_project(pid) is None
    clock.now += 1.1
    assert cache.get_project(pid) is not None


def test_zero_turns_it_off() -> None:
    """With 0 seconds every call reads the store."""
    store = CountingStore()
    cache = ProjectCache(store, 0.0, 0.0, Clock())
    cache.get_project("brigade-x")
    cache.get_project("brigade-x")
    assert store.reads == 2


def test_failures_are_not_cached() -> None:
    """A store failure is raised, and the next call asks again."""
    store = CountingStore(down=True)
    cache = ProjectCache(store, 5.0, 1.0, Clock())
    with pytest.raises(StoreUnavailable):
        cache.get_project("brigade-x")
    store.down = False
    assert cache.get_project("brigade-x") is None
    assert store.reads == 2


def test_known_project_outlives_an_outage() -> None:
    """While the store is unavailable, a project read before is used past
    its time; one never read still raises."""
    store, clock, cache, pid = _acme()
    assert cache.get_project(pid) is not None
    clock.now += 3600
    store.down = True
    project = cache.get_project(pid)
    assert project is not None and project.name == "acme/app"
    assert cache.get_project(pid) is project  # not asked again at once
    with pytest.raises(StoreUnavailable):
        cache.get_project(project_id("acme/other"))
    assert store.reads == 3


def test_known_never_asks_the_store() -> None:
    """known() gives the project as last read, even expired, without a read;
    None for a project never read."""
    store, clock, cache, pid = _acme()
    assert cache.known(pid) is None
    cache.get_project(pid)
    clock.now += 3600
    store.down = True
    project = cache.known(pid)
    assert project is not None and project.name == "acme/app"
    assert store.reads == 1


def test_size_is_bounded() -> None:
    """Made-up names cannot grow the cache past MAX_MISSES."""
    cache = ProjectCache(MemoryStore(), 5.0, 1.0, Clock())
    for n in range(MAX_MISSES + 50):
        cache.get_project(f"brigade-{n}")
    assert len(cache._misses) == MAX_MISSES and not cache._entries


def test_a_flood_of_made_up_names_never_evicts_a_project() -> None:
    """4,200 unknown names (more than MAX_ENTRIES) after a project was read
    leave it known, so that an outage that follows can still use it."""
    store, clock, cache, pid = _acme()
    cache.get_project(pid)
    for n in range(4200):
        cache.get_project(f"brigade-flood-{n}")
    clock.now += 3600
    store.down = True
    assert cache.known(pid) is not None
    project = cache.get_project(pid)
    assert project is not None and project.name == "acme/app"
