"""A Debian machine booted with systemd as PID 1, in ``systemd-nspawn``.

The root is the cached rootfs of ``devtools.rootfs`` under a tmpfs overlay
(``--volatile=overlay``), so nothing a test does reaches the cache.  The
machine shares the host's network: the gateway inside reaches the local
kube-apiserver on loopback, and the tests reach the gateway the same way.
Commands run inside through ``nsenter`` into the machine's namespaces
(``--register=no`` leaves machinectl out of it).
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import attr

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MachineError(Exception):
    """The machine could not boot or a command in it failed."""


def _die_with_parent() -> None:
    # If pytest is killed, nspawn gets SIGTERM and shuts the machine down.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces and parentheses; the ppid follows the last ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _comm(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


@attr.s(auto_attribs=True)
class Machine:
    name: str
    process: subprocess.Popen[bytes]
    leader: int
    console: Path

    def run(
        self,
        script: str,
        cwd: str = "/",
        stdin: bytes = b"",
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a bash script inside (``set -euo pipefail``) as root."""
        result = subprocess.run(
            [
                "nsenter",
                f"--target={self.leader}",
                "--all",
                "--",
                "/bin/bash",
                "-euo",
                "pipefail",
                "-c",
                # nsenter --wd= would name a directory of the host's.
                f"cd {cwd}\n{script}",
            ],
            input=stdin.decode(),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "SYSTEMD_PAGER": ""},
        )
        if check and result.returncode != 0:
            raise MachineError(
                f"in {self.name}, exit {result.returncode}: {script}\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def write(self, path: str, text: str, mode: str = "0600") -> None:
        """Write a file inside, root-owned with ``mode``."""
        self.run(f"install -D -m {mode} /dev/stdin {path}", stdin=text.encode())

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` of some properties of ``unit``."""
        out = self.run(f"systemctl show --property={','.join(properties)} {unit}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, since: str = "") -> str:
        """The journal of ``unit`` (message text only), optionally since a cursor."""
        after = f"--after-cursor='{since}'" if since else ""
        return self.run(f"journalctl --no-pager -o cat -u {unit} {after}").stdout

    def cursor(self) -> str:
        """The journal's current cursor, to read only what comes after it."""
        out = self.run("journalctl --no-pager -n 0 --show-cursor").stdout
        return out.strip().rsplit("cursor: ", 1)[-1]

    def shutdown(self) -> None:
        """Power off (SIGTERM to nspawn), and kill it if that takes too long."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def boot(rootfs: Path, console: Path, binds: dict[Path, str], timeout: float = 60) -> Machine:
    """Boot ``rootfs`` under a tmpfs overlay with a machine name of its own,
    binding host directories read-only at the given places; returns once
    systemd reports the boot finished."""
    nspawn = shutil.which("systemd-nspawn")
    if not nspawn:
        raise MachineError("systemd-nspawn is needed (Debian package systemd-container)")
    name = f"crgw-{uuid.uuid4().hex[:10]}"
    command = [
        nspawn,
        f"--directory={rootfs}",
        "--volatile=overlay",
        "--boot",
        # Without machined and with no unit of our own for nspawn to create,
        # both are needed here.
        "--register=no",
        "--keep-unit",
        f"--machine={name}",
        "--console=read-only",
        *(f"--bind-ro={host}:{inside}" for host, inside in binds.items()),
    ]
    with console.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    machine = Machine(name, process, 0, console)
    try:
        deadline = time.monotonic() + timeout
        while not machine.leader:
            if process.poll() is not None or time.monotonic() > deadline:
                raise MachineError(f"{name} did not start:\n{console.read_text()[-3000:]}")
            machine.leader = next(
                (pid for pid in _children(process.pid) if _comm(pid) == "systemd"), 0
            )
            time.sleep(0.05)
        while True:
            state = machine.run("systemctl is-system-running --wait || true", timeout=timeout)
            if state.stdout.strip() in ("running", "degraded"):
                break
            # nsenter can come in before systemd has its namespaces set up.
            if time.monotonic() > deadline:
                raise MachineError(f"{name} did not finish booting: {state.stdout}")
            time.sleep(0.1)
    except BaseException:
        machine.shutdown()
        raise
    return machine


def wait_for(predicate: Callable[[], bool], timeout: float = 30, interval: float = 0.2) -> None:
    """Poll ``predicate()`` until true; MachineError when it never is."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise MachineError(f"timed out waiting for {getattr(predicate, '__name__', '?')}")
        time.sleep(interval)
