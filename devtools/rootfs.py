"""A Debian root filesystem with systemd and Python, and the project's wheels.

The systemd tests boot the rootfs with ``systemd-nspawn --boot`` and install
the project inside it the way docs/installation.rst tells an operator to:
a venv, then ``pip install --no-index --find-links`` from wheels made on the
host (:func:`devtools.debian.wheels`, the image's too).  Both are slow to
make and change rarely, so both are cached under ``~/.cache/brigade-crgw``
in a directory named by a hash of what goes into it: the Debian suite,
mirror and packages for the rootfs; the project's requirements and the
Python version for the wheels.

Command line: ``python -m devtools.rootfs [build | wheels | path]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from devtools.debian import SUITE, DebianError, Recipe, digest, locked, say, wheels
from devtools.plane.build import cache_root

MIRROR = "http://deb.debian.org/debian"
# Debian packages only: systemd as PID 1, and the Python docs/installation.rst installs into.
PACKAGES = ("systemd", "systemd-sysv", "python3", "python3-venv")
VARIANT = "minbase"
# Documentation is dead weight in a rootfs that only boots for tests.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/locale/*",
)
# Change this when the way the rootfs is made changes without its inputs doing so.
RECIPE_VERSION = 1
RECIPE = Recipe(
    variant=VARIANT,
    packages=PACKAGES,
    dpkg_options=DPKG_OPTIONS,
    mirrors=(MIRROR,),
    options=("--mode=root",),
)


def rootfs_path() -> Path:
    """Where the rootfs for the current recipe lives (built or not)."""
    key = digest(
        {
            "suite": SUITE,
            "mirror": MIRROR,
            "packages": sorted(PACKAGES),
            "variant": VARIANT,
            "dpkg": DPKG_OPTIONS,
            "recipe": RECIPE_VERSION,
        },
        sort_keys=True,
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
    with locked(path.name):
        if not (path / "etc" / "os-release").exists():
            RECIPE.mmdebstrap("rootfs", path)
            # The host's hostname means nothing inside.
            (path / "etc" / "hostname").write_text("brigade-crgw-test\n")
    return path


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "build"
    try:
        if command == "build":
            print(rootfs())
            print(wheels("rootfs"))
        elif command == "wheels":
            print(wheels("rootfs"))
        elif command == "path":
            print(rootfs_path())
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except DebianError as e:
        say("rootfs", str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
