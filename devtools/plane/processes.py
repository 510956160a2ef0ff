"""Processes of the plane: started in their own session with a log file,
watched by process ID, stopped by process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(directory: Path, name: str, argv: list[str]) -> int:
    """Start ``argv`` in ``directory``, logging to ``<name>.log``; its process ID."""
    with (directory / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=directory,
            start_new_session=True,
        )
    return proc.pid


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie of ours."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still answers kill(0); reap it.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        # Not ours (started by an earlier command): a zombie that init has
        # not reaped yet has exited all the same.
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return done == 0


def stop(pids: Iterable[int], grace: float = 10.0) -> None:
    """SIGTERM each process group; SIGKILL what still runs after ``grace`` seconds."""
    pids = list(pids)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)


def log_tail(directory: Path, name: str, lines: int = 15) -> str:
    """The last ``lines`` of ``<name>.log``, or nothing."""
    try:
        text = (directory / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
