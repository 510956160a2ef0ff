"""A short-lived cache of project Secrets, in front of the store.

Every webhook names a project, and most webhooks name one of a few: reading
its Secret each time doubled the gateway's calls to the API server.  The
gateway may only get and create Secrets (no list, no watch), so it cannot be
told of a change: an entry simply expires.  A rotated-out token or a deleted
project therefore keeps working for at most ``seconds``; a project created
after a miss is seen within ``miss_seconds``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import attr

from ..brigade import Project
from .store import SecretStore, StoreUnavailable

T = TypeVar("T")

# Enough for every project of a large installation.
MAX_ENTRIES = 4096
# Names found to be no project are kept apart, and fewer: a flood of made-up
# names (anyone can send one) evicts only other made-up names, never a
# project, which an outage would then leave unknown.
MAX_MISSES = 1024


@attr.s(auto_attribs=True)
class ProjectCache:
    """``get_project`` of a :class:`~brigade_crgw.kubernetes.store.SecretStore`, remembered.

    :param store: where projects are read on a miss.
    :param seconds: how long a project read is reused; 0 turns the cache off.
    :param miss_seconds: how long "no such project" is reused.
    :param clock: monotonic seconds.
    """

    store: SecretStore
    seconds: float
    miss_seconds: float
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, tuple[float, Project]] = attr.ib(factory=dict, init=False)
    _misses: dict[str, float] = attr.ib(factory=dict, init=False)
    _lock: threading.Lock = attr.ib(factory=threading.Lock, init=False)
    _warm: bool = attr.ib(default=False, init=False)

    def warm(self) -> bool:
        """Whether a project has been read since the start: while Kubernetes
        is away, the gateway can then check that project's tokens and spool
        its builds (readiness asks this)."""
        return self._warm

    def known(self, project_id: str) -> Project | None:
        """The project as last read, however long ago, without asking the
        store; None when it was never read (or was missing)."""
        with self._lock:
            entry = self._entries.get(project_id)
        return None if entry is None else entry[1]

    def get_project(self, project_id: str, timeout: float | None = None) -> Project | None:
        """The project, from the cache while fresh, else from the store.

        While Kubernetes cannot be asked, a project read before (however long
        ago) is used, so that its webhooks can still be authorised and their
        builds spooled; the outage is what keeps it from being refreshed.

        :raises StoreUnavailable: as the store does, when nothing is known;
            failures are not cached.
        """
        if self.seconds <= 0:
            # Nothing is kept, so nothing can be used in an outage: never warm.
            return self.store.get_project(project_id, timeout)
        now = self.clock()
        with self._lock:
            entry = self._entries.get(project_id)
            missing_until = self._misses.get(project_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        if missing_until is not None and missing_until > now:
            return None
        try:
            project = self.store.get_project(project_id, timeout)
        except StoreUnavailable:
            if entry is None:
                raise
            # Asked again in ``seconds``, not by every webhook of the outage
            # (each would wait out a hanging API server).
            with self._lock:
                self._entries[project_id] = (now + self.seconds, entry[1])
            return entry[1]
        with self._lock:
            if project is None:
                self._entries.pop(project_id, None)
                _put(self._misses, project_id, now + self.miss_seconds, MAX_MISSES)
            else:
                self._warm = True
                self._misses.pop(project_id, None)
                _put(self._entries, project_id, (now + self.seconds, project), MAX_ENTRIES)
        return project


def _put(entries: dict[str, T], key: str, value: T, limit: int) -> None:
    """``entries[key] = value`` as the newest entry, the oldest dropped past ``limit``."""
    entries.pop(key, None)
    while len(entries) >= limit:
        del entries[next(iter(entries))]
    entries[key] = value
