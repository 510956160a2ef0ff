"""A Debian root filesystem with systemd and Python, and the project's wheels.

The systemd tests boot the rootfs with ``systemd-nspawn --boot`` and install
the project inside it the way the README tells an operator to: a venv, then
``pip install --no-index --find-links`` from wheels made on the host.  Both
are slow to make and change rarely, so both are cached under
``~/.cache/brigade-crgw`` in a directory named by a hash of what goes into
it: the Debian suite, mirror and packages for the rootfs; the project's
requirements and the Python version for the wheels.

Command line: ``python -m devtools.rootfs [build | wheels | path]``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Debian packages only: systemd as PID 1, and the Python the README installs into.
PACKAGES = ("systemd", "systemd-sysv", "python3", "python3-venv")
VARIANT = "minbase"
# Documentation is dead weight in a rootfs that only boots for tests.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/locale/*",
)
# Change this when the way the rootfs is made changes without its inputs doing so.
RECIPE = 1


class RootfsError(Exception):
    """A tool is missing or a build failed; the message says which."""


def say(message: str) -> None:
    print(f"rootfs: {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "brigade-crgw"


def _digest(inputs: object) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time per cache entry (several worktrees share the cache)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def rootfs_path() -> Path:
    """Where the rootfs for the current recipe lives (built or not)."""
    key = _digest(
        {
            "suite": SUITE,
            "mirror": MIRROR,
            "packages": sorted(PACKAGES),
            "variant": VARIANT,
            "dpkg": DPKG_OPTIONS,
            "recipe": RECIPE,
        }
    )
    return cache_root() / f"rootfs-{SUITE}-{key}"


def rootfs() -> Path:
    """The cached rootfs directory, built with mmdebstrap on first use.

    It is the lower layer of every container booted from it
    (``systemd-nspawn --volatile=overlay``), so it is never written after
    the build.
    """
    path = rootfs_path()
    if (path / "etc" / "os-release").exists():
        return path
    mmdebstrap = shutil.which("mmdebstrap")
    if not mmdebstrap:
        raise RootfsError("mmdebstrap is needed (Debian package mmdebstrap)")
    with _locked(path.name):
        if (path / "etc" / "os-release").exists():
            return path
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            mmdebstrap,
            f"--variant={VARIANT}",
            "--mode=root",
            "--include=" + ",".join(PACKAGES),
            *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
            SUITE,
            str(partial),
            MIRROR,
        ]
        say("$ " + " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RootfsError(f"mmdebstrap failed ({result.returncode}): {result.stderr[-2000:]}")
        # The host's hostname and resolver mean nothing inside.
        (partial / "etc" / "hostname").write_text("brigade-crgw-test\n")
        partial.rename(path)
    return path


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    say("$ " + " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RootfsError(f"pip {args[0]} failed: {result.stderr[-2000:]}")


def wheels(project: Path = ROOT) -> Path:
    """A cached directory of wheels for the project's dependencies (and the
    tools to build the project's own wheel), for ``pip --no-index
    --find-links`` on this machine and in the rootfs.

    The rootfs has the host's Python minor version (both Debian bookworm),
    so the same wheels install in both.  The key is the packaging files
    that declare the requirements.
    """
    declared = {
        name: (project / name).read_text()
        for name in ("setup.py", "setup.cfg", "pyproject.toml")
        if (project / name).exists()
    }
    version = f"cp{sys.version_info.major}{sys.version_info.minor}"
    path = cache_root() / f"wheels-{version}-{_digest({'declared': declared, 'recipe': RECIPE})}"
    if (path / ".complete").exists():
        return path
    with _locked(path.name):
        if (path / ".complete").exists():
            return path
        shutil.rmtree(path, ignore_errors=True)
        _pip(
            "download",
            "--quiet",
            "--prefer-binary",
            "--dest",
            str(path),
            str(project),
            "setuptools",
            "wheel",
        )
        not_wheels = [p.name for p in path.iterdir() if p.suffix != ".whl"]
        if not_wheels:
            raise RootfsError(f"no wheel for: {', '.join(not_wheels)}")
        (path / ".complete").write_text("")
    return path


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "build"
    try:
        if command == "build":
            print(rootfs())
            print(wheels())
        elif command == "wheels":
            print(wheels())
        elif command == "path":
            print(rootfs_path())
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except RootfsError as e:
        say(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
