"""The real HAProxy (Debian's ``haproxy``) in front of gateway replicas, with
the documented configuration, ``etc/haproxy.cfg``.

Only what a loopback run needs is changed: the ``bind`` and ``server``
lines, and, when asked, the health checks' interval and the retry rule; a
stats socket is added so a run can see which replicas HAProxy takes as up.

    PYTHONPATH=. .venv/bin/python -m devtools.haproxy   # the path of the binary
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import attr

from devtools import ROOT
from devtools.plane.processes import free_port

RECIPE = ROOT / "etc" / "haproxy.cfg"


def binary() -> str:
    """The haproxy executable (scripts/provision installs Debian's)."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None
    )
    if found is None:
        raise RuntimeError("haproxy is not installed (scripts/provision installs it)")
    return found


def configure(
    recipe: str,
    port: int,
    servers: Sequence[tuple[str, int]],
    stats: Path,
    check_interval: str | None = None,
    retry_on: str | None = None,
) -> str:
    """``recipe`` listening on 127.0.0.1:``port`` in front of ``servers``
    (name, loopback port), with a stats socket at ``stats``.

    :param check_interval: replaces the health checks' ``inter`` (e.g. ``250ms``).
    :param retry_on: replaces the ``retry-on`` rule (e.g. ``none``).
    """
    lines = []
    for line in recipe.splitlines():
        stripped = line.strip()
        if stripped.startswith("server "):
            continue  # the recipe's example servers
        if stripped.startswith("bind "):
            line = f"    bind 127.0.0.1:{port}"
        elif stripped.startswith("default-server ") and check_interval is not None:
            line = re.sub(r"\binter \S+", f"inter {check_interval}", line)
        elif stripped.startswith("retry-on ") and retry_on is not None:
            line = f"    retry-on {retry_on}"
        elif stripped == "global":
            lines.append(line)
            line = f"    stats socket {stats} mode 600 level admin"
        lines.append(line)
    lines += [f"    server {name} 127.0.0.1:{p}" for name, p in servers]
    return "\n".join(lines) + "\n"


@attr.s(auto_attribs=True)
class Balancer:
    """A running HAProxy."""

    process: subprocess.Popen[bytes]
    port: int
    config: Path
    stats: Path
    log_path: Path

    def command(self, line: str) -> str:
        """One command on the stats socket, and its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, str]:
        """Each server's state as HAProxy sees it (``UP``, ``DOWN``, ...)."""
        text = self.command("show stat")
        header, *rows = [r for r in text.splitlines() if r]
        names = header.lstrip("# ").split(",")
        found = {}
        for row in rows:
            fields = dict(zip(names, row.split(","), strict=False))
            if fields.get("svname") not in ("FRONTEND", "BACKEND"):
                found[fields["svname"]] = fields["status"]
        return found

    def wait_for(self, wanted: dict[str, str], timeout: float = 30.0) -> None:
        """Wait until every server named in ``wanted`` has that state
        (``UP``, ``DOWN``; not ``UP 1/2``, which is on its way down)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if all(states.get(k) == v for k, v in wanted.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy sees {states}, not {wanted}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)  # soft stop: finish what is in flight
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    tmp: Path,
    servers: Sequence[tuple[str, int]],
    check_interval: str | None = None,
    retry_on: str | None = None,
    timeout: float = 15.0,
) -> Balancer:
    """HAProxy with the recipe on a free loopback port, once it listens."""
    port = free_port()
    stats = tmp / f"haproxy-{port}.sock"
    config = tmp / f"haproxy-{port}.cfg"
    config.write_text(configure(RECIPE.read_text(), port, servers, stats, check_interval, retry_on))
    log_path = tmp / f"haproxy-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary(), "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    balancer = Balancer(process, port, config, stats, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            if stats.exists():
                return balancer
        except OSError:
            pass
        if time.monotonic() > deadline:
            balancer.stop()
            raise RuntimeError(f"haproxy did not listen within {timeout}s")
        time.sleep(0.05)


if __name__ == "__main__":
    print(binary())
    sys.exit(0)
