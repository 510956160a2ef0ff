"""The spool: build Secrets kept on disk while Kubernetes is away.

When Kubernetes stays unavailable past the retry budget, the gateway writes
the ready-made build Secrets of an authorised webhook here and answers 202
once the write is durable.  :func:`.drainer.drain_once` later creates them in
Kubernetes, oldest first, and deletes each entry once Kubernetes has it.

The file is SQLite (WAL, ``synchronous=FULL``: a committed write survives a
crash of the process or the machine).  Every method blocks, so callers run
them on the gateway's thread pool; one connection is shared under a lock.
The build names are deterministic, so an entry is unique by name: a sender
that retries a spooled delivery adds nothing, and a build that reached
Kubernetes some other way is found there (AlreadyExists) and removed.

Nothing here knows of Twisted or HTTP.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attr

# Bumped when the table changes; a file from a newer gateway is refused,
# one from an older gateway is brought up to date.
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    queued REAL NOT NULL,
    secret TEXT NOT NULL,
    rejected TEXT,
    project TEXT NOT NULL DEFAULT '',
    error TEXT
)
"""
# Version 1 had no project column: it is read from each build's labels.
_TO_2 = (
    "ALTER TABLE builds ADD COLUMN project TEXT NOT NULL DEFAULT ''",
    "UPDATE builds SET project = coalesce(json_extract(secret, '$.metadata.labels.project'), '')",
)
# The last error of a build (why it was spooled, then why the drainer's last
# attempt failed), for the operator: added to a file that has none; older
# gateways name their columns, so this needs no new version.
_ERROR = "ALTER TABLE builds ADD COLUMN error TEXT"
_INDEX = "CREATE INDEX IF NOT EXISTS builds_project ON builds (project)"


class SpoolError(Exception):
    """The spool file cannot be opened, read or written; the message names it."""


class SpoolFull(Exception):
    """The spool holds ``max_entries`` builds, or the project its share of
    them; nothing was written."""


@attr.s(frozen=True, auto_attribs=True)
class Entry:
    """One spooled build.

    :param id: its place in the queue (smaller is older).
    :param name: the build Secret's name.
    :param queued: when it was spooled (seconds since the epoch).
    :param secret: the build Secret, ready to create.
    """

    id: int
    name: str
    queued: float
    secret: dict[str, Any]


@attr.s(frozen=True, auto_attribs=True)
class Listed:
    """One spooled build as an operator sees it (``brigade-crgw spool``).

    :param name: the build Secret's name.
    :param queued: when it was spooled (seconds since the epoch).
    :param project: its project's ID.
    :param error: the last error: why it was spooled, or why the drainer's
        last attempt failed; empty when not known.
    :param rejected: why Kubernetes refused it for good, or empty while it waits.
    """

    name: str
    queued: float
    project: str
    error: str
    rejected: str


@attr.s(auto_attribs=True)
class Spool:
    """An open spool file.  Use :meth:`open`.

    :param path: the file.
    :param max_entries: the most builds it holds (rejected ones included).
    :param clock: seconds since the epoch, for the entries' ages.
    :param max_per_project: the most builds of one project it holds, so
        that one project cannot fill it for all the others.
    """

    path: str
    max_entries: int
    _db: sqlite3.Connection
    clock: Callable[[], float] = time.time
    max_per_project: int | None = None
    _lock: threading.Lock = attr.ib(factory=threading.Lock)

    @classmethod
    def open(
        cls,
        path: str,
        max_entries: int,
        clock: Callable[[], float] = time.time,
        max_per_project: int | None = None,
    ) -> Spool:
        """Open (creating if needed) the spool at ``path`` and check that it
        can be read.

        :raises SpoolError: naming the file, when it cannot be opened,
            is not a spool, or cannot be read.
        """
        try:
            # Only the gateway reads it: payloads and scripts are in it.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        except OSError as e:
            raise SpoolError(f"cannot open the spool {path}: {e.strerror or e}") from None
        except sqlite3.Error as e:
            raise SpoolError(f"cannot open the spool {path}: {e}") from None
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise SpoolError(f"the spool {path} cannot use a write-ahead log ({mode})")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SpoolError(
                    f"the spool {path} was written by a newer brigade-crgw "
                    f"(version {version}; this one reads {SCHEMA_VERSION})"
                )
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(builds)")}
            if "project" not in columns:
                for statement in _TO_2:
                    db.execute(statement)
            if "error" not in columns:
                db.execute(_ERROR)
            db.execute(_INDEX)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            # Read every entry once: a spool whose builds cannot be read
            # must stop the gateway now, not be found out while draining.
            for name, secret in db.execute("SELECT name, secret FROM builds"):
                _load(path, name, secret)
        except sqlite3.Error as e:
            db.close()
            raise SpoolError(f"cannot read the spool {path}: {e}") from None
        except SpoolError:
            db.close()
            raise
        return cls(path, max_entries, db, clock, max_per_project)

    @classmethod
    def open_existing(cls, path: str, max_entries: int) -> Spool:
        """Open a spool that must exist already, as the operator's command
        does: it never makes one where the gateway would not look.

        :raises SpoolError: as :meth:`open`, or when there is no such file.
        """
        if not os.path.isfile(path):
            raise SpoolError(f"there is no spool file {path}")
        return cls.open(path, max_entries)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, secrets: Sequence[Mapping[str, Any]], error: str = "") -> None:
        """Write the builds of one webhook, all or none, durably.

        A build whose name is already spooled is left as it is (the sender
        retried a delivery that was spooled).

        :param error: why they are spooled (Kubernetes' failure), for the operator.
        :raises SpoolFull: when they do not fit; nothing is written.
        :raises SpoolError: when the file cannot be written.
        """
        now = self.clock()
        rows = [
            (
                str(s["metadata"]["name"]),
                now,
                json.dumps(s, separators=(",", ":")),
                str(s["metadata"].get("labels", {}).get("project", "")),
                error or None,
            )
            for s in secrets
        ]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    new = len(rows) - self._count_named([row[0] for row in rows])
                    total = self._db.execute("SELECT count(*) FROM builds").fetchone()[0]
                    if total + new > self.max_entries:
                        raise SpoolFull(f"the spool holds {total} of {self.max_entries} builds")
                    self._check_share(rows, new)
                    self._db.executemany(
                        "INSERT OR IGNORE INTO builds (name, queued, secret, project, error) "
                        "VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise SpoolError(f"cannot write the spool {self.path}: {e}") from None

    def _check_share(self, rows: list[tuple[str, float, str, str, str | None]], new: int) -> None:
        """:raises SpoolFull: when the webhook's project would pass its share."""
        if self.max_per_project is None or not new:
            return
        project = rows[0][3]  # one webhook, one project
        held = self._db.execute(
            "SELECT count(*) FROM builds WHERE project = ?", (project,)
        ).fetchone()[0]
        if held + new > self.max_per_project:
            raise SpoolFull(
                f"project {project} holds {held} builds in the spool, its share of "
                f"{self.max_per_project} ([spool] project_share)"
            )

    def _count_named(self, names: list[str]) -> int:
        marks = ",".join("?" * len(names))
        query = f"SELECT count(*) FROM builds WHERE name IN ({marks})"  # noqa: S608
        return int(self._db.execute(query, names).fetchone()[0]) if names else 0

    def peek(self, limit: int = 1) -> list[Entry]:
        """Up to ``limit`` waiting builds, oldest first (rejected ones are
        not waiting).

        :raises SpoolError: when the file cannot be read.
        """
        rows = self._read(
            "SELECT id, name, queued, secret FROM builds WHERE rejected IS NULL "
            "ORDER BY id LIMIT ?",
            (limit,),
        )
        return [Entry(i, name, queued, _load(self.path, name, s)) for i, name, queued, s in rows]

    def remove(self, entry: Entry) -> None:
        """Delete an entry: Kubernetes has its build."""
        self._write("DELETE FROM builds WHERE id = ?", (entry.id,))

    def note(self, entry: Entry, error: str) -> None:
        """Remember why the last attempt to create an entry's build failed."""
        self._write("UPDATE builds SET error = ? WHERE id = ?", (error, entry.id))

    def listing(self) -> list[Listed]:
        """Every build in the file, waiting or rejected, oldest first.

        :raises SpoolError: when the file cannot be read.
        """
        rows = self._read("SELECT name, queued, project, error, rejected FROM builds ORDER BY id")
        return [Listed(n, q, p, e or "", r or "") for n, q, p, e, r in rows]

    def find(self, name: str) -> tuple[Listed, dict[str, Any]] | None:
        """The build called ``name`` and its Secret, or None when it is not here.

        :raises SpoolError: when the file cannot be read.
        """
        rows = self._read(
            "SELECT name, queued, project, error, rejected, secret FROM builds WHERE name = ?",
            (name,),
        )
        if not rows:
            return None
        n, q, p, e, r, secret = rows[0]
        return Listed(n, q, p, e or "", r or ""), _load(self.path, name, secret)

    def drop(self, name: str) -> bool:
        """Delete the build called ``name``, never to be made; False when it
        was not here.

        :raises SpoolError: when the file cannot be written.
        """
        with self._lock:
            try:
                return self._db.execute("DELETE FROM builds WHERE name = ?", (name,)).rowcount > 0
            except sqlite3.Error as e:
                raise SpoolError(f"cannot write the spool {self.path}: {e}") from None

    def check_writable(self) -> None:
        """Take the write lock and let it go, changing nothing: what a write needs.

        :raises SpoolError: when the file cannot be written.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ROLLBACK")
            except sqlite3.Error as e:
                raise SpoolError(f"cannot write the spool {self.path}: {e}") from None

    def reject(self, entry: Entry, reason: str) -> None:
        """Keep an entry that Kubernetes refused for good, out of the queue:
        it is never retried, and never dropped without a trace."""
        self._write("UPDATE builds SET rejected = ? WHERE id = ?", (reason, entry.id))

    def depth(self) -> int:
        """Builds waiting to be created."""
        return int(self._read("SELECT count(*) FROM builds WHERE rejected IS NULL")[0][0])

    def rejected(self) -> int:
        """Builds that Kubernetes refused for good, kept in the file."""
        return int(self._read("SELECT count(*) FROM builds WHERE rejected IS NOT NULL")[0][0])

    def oldest_age(self) -> float | None:
        """Seconds the oldest waiting build has waited; None when none waits."""
        queued = self._read("SELECT min(queued) FROM builds WHERE rejected IS NULL")[0][0]
        return None if queued is None else max(0.0, self.clock() - queued)

    def _read(self, query: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(query, args).fetchall()
            except sqlite3.Error as e:
                raise SpoolError(f"cannot read the spool {self.path}: {e}") from None

    def _write(self, query: str, args: Sequence[Any]) -> None:
        with self._lock:
            try:
                self._db.execute(query, args)
            except sqlite3.Error as e:
                raise SpoolError(f"cannot write the spool {self.path}: {e}") from None


def _load(path: str, name: str, text: str) -> dict[str, Any]:
    try:
        secret = json.loads(text)
    except ValueError:
        secret = None
    if not isinstance(secret, dict) or secret.get("metadata", {}).get("name") != name:
        raise SpoolError(f"the spool {path} holds an unreadable entry for {name}")
    return secret


@attr.s(frozen=True, auto_attribs=True)
class SpoolStats:
    """A spool's figures: builds waiting, the oldest one's age in seconds
    (None when none waits), and builds kept as rejected."""

    depth: int = 0
    oldest_age: float | None = None
    rejected: int = 0
