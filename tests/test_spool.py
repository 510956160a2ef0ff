"""The spool on real SQLite files: durability, bounds, damage, draining."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from brigade_crgw.delivery.drainer import drain_once
from brigade_crgw.delivery.spool import Spool, SpoolError, SpoolFull
from brigade_crgw.kubernetes.store import StoreRejected, StoreUnavailable

from .helpers import acme_store
from .helpers import build_for_tag as build

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "spool.sqlite")


def test_put_then_peek_oldest_first(path: str) -> None:
    """Builds come out in the order they were spooled, with their Secrets whole."""
    spool = Spool.open(path, 100)
    first, second, third = build("a"), build("b"), build("c")
    spool.put([first, second])
    spool.put([third])
    entries = spool.peek(10)
    assert [e.name for e in entries] == [s["metadata"]["name"] for s in (first, second, third)]
    assert entries[0].secret == first
    assert [e.name for e in spool.peek(1)] == [first["metadata"]["name"]]
    assert spool.depth() == 3


def test_remove_and_depth(path: str) -> None:
    """Removing an entry takes it out of the queue and the depth."""
    spool = Spool.open(path, 100)
    spool.put([build("a"), build("b")])
    spool.remove(spool.peek(1)[0])
    assert spool.depth() == 1
    assert spool.peek(5)[0].secret == build("b")


def test_oldest_age(path: str) -> None:
    """The oldest waiting entry's age follows the clock; None when empty."""
    clock = Clock()
    spool = Spool.open(path, 100, clock)
    assert spool.oldest_age() is None
    spool.put([build("a")])
    clock.now += 7
    spool.put([build("b")])
    clock.now += 5
    assert spool.oldest_age() == 12
    spool.remove(spool.peek(1)[0])
    assert spool.oldest_age() == 5


def test_same_build_spooled_once(path: str) -> None:
    """A sender retrying a spooled delivery adds nothing: entries are unique by name."""
    spool = Spool.open(path, 100)
    spool.put([build("a")])
    spool.put([build("a"), build("b")])
    assert [e.secret for e in spool.peek(10)] == [build("a"), build("b")]


def test_full_spool_refuses_and_writes_nothing(path: str) -> None:
    """Past max_entries a put raises SpoolFull and writes none of its builds,
    yet a build already spooled is still accepted (it takes no room)."""
    spool = Spool.open(path, 3)
    spool.put([build("a"), build("b")])
    with pytest.raises(SpoolFull):
        spool.put([build("c"), build("d")])
    assert spool.depth() == 2
    spool.put([build("a"), build("c")])
    assert spool.depth() == 3
    with pytest.raises(SpoolFull):
        spool.put([build("d")])
    spool.put([build("b")])
    assert spool.depth() == 3


def test_reopened_spool_keeps_entries(path: str) -> None:
    """What was put is there after closing and opening the file again."""
    spool = Spool.open(path, 100)
    spool.put([build("a")])
    spool.close()
    again = Spool.open(path, 100)
    assert [e.secret for e in again.peek(5)] == [build("a")]


def test_file_is_private_and_durable(path: str) -> None:
    """The file is readable by its owner only, in WAL mode with synchronous=FULL."""
    spool = Spool.open(path, 100)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


CRASH = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from tests.helpers import build_for_tag as build
from brigade_crgw.delivery.spool import Spool
spool = Spool.open(sys.argv[1], 100)
spool.put([build("a"), build("b")])
os.kill(os.getpid(), signal.SIGKILL)  # between the write and the answer
"""


def test_sigkill_after_put_keeps_the_builds(path: str) -> None:
    """A process killed right after put returned (before it could answer)
    leaves both builds in the file for the next process."""
    result = subprocess.run([sys.executable, "-c", CRASH, path, str(ROOT)], capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert Path(path + "-wal").exists()  # not checkpointed: the log holds them
    spool = Spool.open(path, 100)
    assert [e.secret for e in spool.peek(5)] == [build("a"), build("b")]


def test_garbage_file_is_refused(path: str) -> None:
    """A file that is not SQLite is refused with its name, and left untouched."""
    Path(path).write_bytes(b"not a database, but a precious file\n" * 100)
    with pytest.raises(SpoolError, match=f"cannot read the spool {path}"):
        Spool.open(path, 100)
    assert Path(path).read_bytes().startswith(b"not a database")


def test_unreadable_entry_is_refused(path: str) -> None:
    """A spool holding an entry that is not a build Secret is refused at open."""
    Spool.open(path, 100).put([build("a")])
    db = sqlite3.connect(path)
    db.execute("UPDATE builds SET secret = '{broken'")
    db.commit()
    db.close()
    with pytest.raises(SpoolError, match=f"the spool {path} holds an unreadable entry"):
        Spool.open(path, 100)


def test_directory_is_refused(tmp_path: Path) -> None:
    """A directory where the file should be is refused with its name."""
    with pytest.raises(SpoolError, match=f"cannot open the spool {tmp_path}"):
        Spool.open(str(tmp_path), 100)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    """A file in a directory that does not exist is refused with its name."""
    path = str(tmp_path / "nowhere" / "spool.sqlite")
    with pytest.raises(SpoolError, match=f"cannot open the spool {path}: No such file"):
        Spool.open(path, 100)


def test_newer_spool_is_refused(path: str) -> None:
    """A spool from a newer gateway (a higher schema version) is not touched."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(SpoolError, match="newer brigade-crgw"):
        Spool.open(path, 100)


def test_drain_creates_oldest_first_and_removes(path: str) -> None:
    """drain_once creates every waiting build in order and empties the spool."""
    spool = Spool.open(path, 100)
    store = acme_store()
    order: list[str] = []
    create = store.create_build
    store.create_build = lambda s: order.append(s["metadata"]["name"]) or create(s)  # type: ignore[method-assign]
    spool.put([build("a"), build("b")])
    spool.put([build("c")])
    result = drain_once(spool, store)
    names = [build(t)["metadata"]["name"] for t in "abc"]
    assert order == names and list(result.created) == names
    assert result.failure is None and spool.depth() == 0
    assert [store.secrets[n] for n in names] == [build(t) for t in "abc"]


def test_drain_after_a_senders_retry_makes_one_build(path: str) -> None:
    """A build the sender's retry already created is found (AlreadyExists),
    removed from the spool, and not made twice."""
    spool = Spool.open(path, 100)
    store = acme_store()
    spool.put([build("a")])
    assert store.create_build(build("a")) is True  # the retry, through the gateway
    result = drain_once(spool, store)
    assert result.existed == (build("a")["metadata"]["name"],) and not result.created
    assert spool.depth() == 0 and len(store.builds()) == 1


def test_drain_stops_when_kubernetes_is_down(path: str) -> None:
    """With Kubernetes unavailable nothing is removed and the failure is reported."""
    spool = Spool.open(path, 100)
    spool.put([build("a"), build("b")])
    result = drain_once(spool, acme_store(down=True))
    assert isinstance(result.failure, StoreUnavailable)
    assert spool.depth() == 2


def test_drain_stops_at_the_first_failure(path: str) -> None:
    """Kubernetes failing mid-way leaves the rest for the next time, in order."""
    spool = Spool.open(path, 100)
    store = acme_store()
    spool.put([build("a"), build("b"), build("c")])
    create = store.create_build

    def once_then_down(secret: Any) -> bool:
        created = create(secret)
        store.down = True
        return created

    store.create_build = once_then_down  # type: ignore[method-assign]
    result = drain_once(spool, store)
    assert len(result.created) == 1 and result.failure is not None
    assert [e.secret for e in spool.peek(5)] == [build("b"), build("c")]


def test_drain_respects_its_limit(path: str) -> None:
    """One drain_once creates at most ``limit`` builds."""
    spool = Spool.open(path, 100)
    spool.put([build(str(i)) for i in range(5)])
    assert len(drain_once(spool, acme_store(), limit=2).created) == 2
    assert spool.depth() == 3


def test_rejected_build_is_kept_out_of_the_queue(path: str) -> None:
    """A build Kubernetes refuses for good is not retried, does not block the
    ones behind it, and stays in the file, marked, with its reason."""
    spool = Spool.open(path, 100)
    store = acme_store()
    spool.put([build("a"), build("b")])
    create = store.create_build

    def refuse_a(secret: Any) -> bool:
        if secret == build("a"):
            raise StoreRejected("Kubernetes answered 422: too large")
        return create(secret)

    store.create_build = refuse_a  # type: ignore[method-assign]
    result = drain_once(spool, store)
    assert result.rejected == (
        (build("a")["metadata"]["name"], "Kubernetes answered 422: too large"),
    )
    assert result.created == (build("b")["metadata"]["name"],)
    assert spool.depth() == 0 and spool.rejected() == 1
    assert drain_once(spool, store) == type(result)()
    row = sqlite3.connect(path).execute("SELECT name, rejected FROM builds").fetchall()
    assert row == [(build("a")["metadata"]["name"], "Kubernetes answered 422: too large")]


def test_one_project_cannot_fill_the_spool(path: str) -> None:
    """With a per-project share, a project that holds its share gets
    SpoolFull naming it, while another project's builds still fit."""
    spool = Spool.open(path, 10, max_per_project=3)
    spool.put([build("a"), build("b")])
    spool.put([build("c")])
    with pytest.raises(SpoolFull, match=r"project brigade-\w+ holds 3 builds .*project_share"):
        spool.put([build("d")])
    spool.put([build("c")])  # a retry of a spooled delivery adds nothing, and fits
    other = build("e")
    other["metadata"]["labels"]["project"] = "brigade-other"
    other["metadata"]["name"] = "brigade-worker-other"
    spool.put([other])
    assert spool.depth() == 4


def test_listing_shows_why_each_build_waits(path: str) -> None:
    """``listing`` gives each build's name, project, time and last error:
    the reason it was spooled, then the drainer's last failure, or the
    reason Kubernetes refused it for good."""
    clock = Clock()
    spool = Spool.open(path, 100, clock)
    spool.put([build("a"), build("b")], "Kubernetes answered 503 to create secrets")
    spool.put([build("c")])
    assert drain_once(spool, acme_store(down=True)).failure is not None
    listed = spool.listing()
    assert [e.name for e in listed] == [build(t)["metadata"]["name"] for t in "abc"]
    assert {e.project for e in listed} == {build("a")["metadata"]["labels"]["project"]}
    assert all(e.queued == clock.now and not e.rejected for e in listed)
    # The drainer tried "a" and failed: its error is that failure now.
    assert listed[0].error != listed[1].error == "Kubernetes answered 503 to create secrets"
    assert listed[0].error and listed[2].error == ""
    spool.reject(spool.peek(1)[0], "too large")
    assert spool.listing()[0].rejected == "too large"


def test_find_and_drop(path: str) -> None:
    """``find`` returns a build and its Secret by name; ``drop`` deletes it
    once (False the second time), and it is never drained."""
    spool = Spool.open(path, 100)
    spool.put([build("a"), build("b")])
    name = build("a")["metadata"]["name"]
    found = spool.find(name)
    assert found is not None and found[0].name == name and found[1] == build("a")
    assert spool.find("brigade-worker-nothing") is None
    assert spool.drop(name) is True and spool.drop(name) is False
    store = acme_store()
    assert drain_once(spool, store).created == (build("b")["metadata"]["name"],)
    assert name not in store.secrets


def test_open_existing_never_creates(tmp_path: Path) -> None:
    """``open_existing`` refuses a missing file, naming it, and makes none."""
    path = tmp_path / "spool.sqlite"
    with pytest.raises(SpoolError, match=f"there is no spool file {path}"):
        Spool.open_existing(str(path), 100)
    assert not path.exists()
    Spool.open(str(path), 100).close()
    with Spool.open_existing(str(path), 100) as spool:
        spool.check_writable()
        assert spool.depth() == 0


def test_a_version_1_spool_is_brought_up_to_date(path: str) -> None:
    """A spool written before the project and error columns keeps its builds,
    their projects are read from the builds for the per-project share, and
    they list with no error."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE builds (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, "
        "queued REAL NOT NULL, secret TEXT NOT NULL, rejected TEXT)"
    )
    for tag in "ab":
        db.execute(
            "INSERT INTO builds (name, queued, secret) VALUES (?, 1, ?)",
            (build(tag)["metadata"]["name"], json.dumps(build(tag))),
        )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    spool = Spool.open(path, 10, max_per_project=2)
    assert [e.secret for e in spool.peek(5)] == [build("a"), build("b")]
    with pytest.raises(SpoolFull, match="holds 2 builds"):
        spool.put([build("c")])
    listed = spool.listing()
    assert [(e.name, e.error) for e in listed] == [(build(t)["metadata"]["name"], "") for t in "ab"]
    assert {e.project for e in listed} == {build("a")["metadata"]["labels"]["project"]}
