"""Debian for the image and the systemd tests: one mmdebstrap, one set of wheels.

Both the gateway's image (:mod:`devtools.image`) and the rootfs the systemd
tests boot (:mod:`devtools.rootfs`) start from a Debian bookworm tree made
by ``mmdebstrap``, and both install the project into bookworm's Python from
wheels made on this machine, with ``pip install --no-index --find-links``.
What differs is only the recipe (variant, packages, dpkg options, whether a
directory or a tarball), so this module runs mmdebstrap for either and
makes the one cached set of wheels both use.  Everything it makes is cached
under ``~/.cache/brigade-crgw`` (several worktrees share it: one builder at
a time per entry).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import attr

from devtools import ROOT
from devtools.plane.build import cache_root

SUITE = "bookworm"
# Debian bookworm's python3: the interpreter of the image and of the rootfs.
PYTHON = "3.11"
# Change this when the way the wheels are made changes without their inputs doing so.
WHEELS_RECIPE = 2


class DebianError(Exception):
    """A tool is missing or a step failed; the message says which."""


def say(tool: str, message: str) -> None:
    """A progress line on stderr, prefixed with the tool speaking."""
    print(f"{tool}: {message}", file=sys.stderr, flush=True)


def run(tool: str, command: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``command``, said first; its stderr is in the error when it fails."""
    say(tool, "$ " + " ".join(command))
    result = subprocess.run(list(command), text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        detail = f": {result.stderr.strip()[-2000:]}" if isinstance(result.stderr, str) else ""
        raise DebianError(f"{command[0]} failed with exit code {result.returncode}{detail}")
    return result


def digest(inputs: object, sort_keys: bool = False) -> str:
    """A short hash naming a cache entry by what goes into it."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=sort_keys).encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """One builder at a time for the cache entry ``name``."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Recipe:
    """What mmdebstrap is asked for."""

    variant: str
    packages: tuple[str, ...]
    dpkg_options: tuple[str, ...]
    mirrors: tuple[str, ...]
    # More mmdebstrap options: --mode, --format, --aptopt, --hook-dir.
    options: tuple[str, ...] = ()

    def mmdebstrap(self, tool: str, target: Path) -> None:
        """Make the tree (a directory or a tarball, as ``options`` say) at
        ``target``: written beside it first, so a failed run leaves nothing
        that looks made."""
        program = shutil.which("mmdebstrap")
        if program is None:
            raise DebianError("mmdebstrap is not installed (apt-get install mmdebstrap)")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.unlink(missing_ok=True)
        command = [
            program,
            "--quiet",
            f"--variant={self.variant}",
            "--include=" + ",".join(self.packages),
            *(f"--dpkgopt={option}" for option in self.dpkg_options),
            *self.options,
            SUITE,
            str(partial),
            *self.mirrors,
        ]
        try:
            run(tool, command, capture_output=True)
        except DebianError:
            shutil.rmtree(partial, ignore_errors=True)
            partial.unlink(missing_ok=True)
            raise
        partial.rename(target)


def _pip(tool: str, *args: str) -> None:
    run(tool, [sys.executable, "-m", "pip", "--disable-pip-version-check", *args])


def project_wheel(tool: str, into: Path) -> Path:
    """The project's own wheel, built from a copy of the working tree (the
    build leaves nothing, no build/ or *.egg-info, in the tree)."""
    with tempfile.TemporaryDirectory(prefix="brigade-crgw-src-") as tmp:
        source = Path(tmp) / "src"
        shutil.copytree(
            ROOT,
            source,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", ".control-plane", "build", "*.egg-info", "__pycache__", ".*cache"
            ),
        )
        _pip(tool, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(into), str(source))
    (wheel,) = into.glob("brigade_crgw-*.whl")
    return wheel


def _binary_for_bookworm() -> list[str]:
    """pip's options for binary wheels for bookworm's CPython on this
    machine's architecture, whichever Python runs pip."""
    machine = platform.machine()
    tags = (
        f"manylinux_2_28_{machine}",
        f"manylinux_2_17_{machine}",
        f"manylinux2014_{machine}",
        f"manylinux_2_5_{machine}",
        f"manylinux1_{machine}",
        "any",
    )
    abi = "cp" + PYTHON.replace(".", "")
    return [
        "--only-binary=:all:",
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        *("--abi", abi, "--abi", "abi3", "--abi", "none"),
        *(arg for tag in tags for arg in ("--platform", tag)),
    ]


def wheels(tool: str = "wheels") -> Path:
    """A cached directory of wheels of everything the project needs (not
    the project itself), and of the tools that build it (setuptools,
    wheel), for bookworm's Python: ``pip install --no-index --find-links``
    installs the project from them in the image, in the rootfs and on this
    machine.  Its name is a hash of the packaging files that declare the
    requirements."""
    declared = {
        name: (ROOT / name).read_text()
        for name in ("setup.py", "setup.cfg", "pyproject.toml")
        if (ROOT / name).exists()
    }
    key = digest({"declared": declared, "python": PYTHON, "recipe": WHEELS_RECIPE}, True)
    path = cache_root() / f"wheels-cp{PYTHON.replace('.', '')}-{key}"
    if (path / ".complete").exists():
        return path
    with locked(path.name):
        if (path / ".complete").exists():
            return path
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        with tempfile.TemporaryDirectory(prefix="brigade-crgw-wheel-") as tmp:
            own = project_wheel(tool, Path(tmp))
            _pip(
                tool,
                "download",
                "--quiet",
                "--dest",
                str(path),
                *_binary_for_bookworm(),
                str(own),
                "setuptools",
                "wheel",
            )
        for stale in path.glob("brigade_crgw-*.whl"):
            stale.unlink()
        (path / ".complete").write_text("")
    return path
