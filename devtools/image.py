"""``make image``: the gateway's OCI image, built here without pulling anything.

The steps, each done with Debian's own tools:

1. a minimal Debian rootfs (python3 and venv, no systemd, no apt) made by
   ``mmdebstrap`` and cached as a tarball under
   ``~/.cache/brigade-crgw/image-rootfs-<suite>-<hash>.tar``;
2. the project and its dependencies as wheels, downloaded (or built) on this
   machine, then installed inside the rootfs into a venv at ``VENV`` with
   ``pip install --no-index --find-links``: nothing reaches the network from
   inside;
3. Twisted's plugin cache written at build time, with every plugin file's
   mtime set whole seconds older than the cache: image layers keep
   whole-second mtimes and Twisted takes an equal mtime as stale, so without
   this a read-only container would try to rewrite the cache on every start;
4. a non-root user, the shipped ini at ``CONFIG``, and
   ``buildah from scratch`` + ``buildah add`` + ``buildah config`` +
   ``buildah commit``.

The Dockerfile produces the same layout from ``debian:bookworm-slim`` for
people with Docker.  Building needs root (the venv is made with ``chroot``).
``python -m devtools.image`` builds the image and prints its name and size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from devtools import ROOT
from devtools.debian import (
    SUITE,
    DebianError,
    Recipe,
    digest,
    locked,
    project_wheel,
    run,
    say,
    wheels,
)
from devtools.plane.build import cache_root

MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
# Debian's python3 is the interpreter; python3-venv brings ensurepip, which
# puts pip in the venv.  ca-certificates lets the gateway trust an API
# server whose certificate a public CA signed.
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Documentation and translations are dead weight in an image.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
# Merged /usr the way debootstrap makes it: without this, bookworm's
# init-system-helpers pulls in usrmerge, and with it all of perl.
HOOK_DIRS = ("/usr/share/mmdebstrap/hooks/merged-usr",)
# The layout, shared with the Dockerfile (tests/test_image.py checks both).
NAME = "localhost/brigade-crgw"
VENV = "/opt/brigade-crgw"
CONFIG = "/etc/brigade-crgw/brigade-crgw.ini"
USER_ID = 10001
PORT = 7744
ENTRYPOINT = (f"{VENV}/bin/twistd", "--nodaemon", "--pidfile=", "--logfile=-", "brigade-crgw")
CMD = ("--config", CONFIG)
ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED": "1",
}
# The kubernetes client ships an asyncio copy of itself (about 70 MB) that
# nothing imports; the gateway uses the synchronous one.
UNUSED = ("lib/python3*/site-packages/kubernetes/aio",)
# The spool's directory ([spool] path in the shipped ini), the user's own;
# read-only deployments mount a volume here.
STATE_DIR = "/var/lib/brigade-crgw"
# Where the wheels are put inside the rootfs while it is built.
WHEELS = "/tmp/wheels"  # noqa: S108 (the new rootfs's /tmp, empty and private)
# How much older than the plugin cache the plugin files are made.
PLUGIN_AGE_SECONDS = 60
# The label holding the hash of the sources an image was built from, so a
# test can tell whether the image in storage is this tree's.
SOURCE_LABEL = "io.github.brigade-crgw.source"
# How docs/installation.rst and the chart run the image, as ``podman run`` options:
# read-only, no capabilities, the limits runc needs spelled out, the host's
# network (to reach a loopback API server in the tests).
RUN_OPTIONS = (
    "--runtime",
    "runc",
    "--read-only",
    "--network",
    "host",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=1024:1024",
)


RECIPE = Recipe(
    variant="essential",
    packages=PACKAGES,
    dpkg_options=DPKG_OPTIONS,
    mirrors=MIRRORS,
    options=(
        "--aptopt=APT::Install-Recommends false",
        *(f"--hook-dir={hook}" for hook in HOOK_DIRS),
        "--format=tar",
    ),
)


def _say(message: str) -> None:
    say("image", message)


def version() -> str:
    out = subprocess.run(
        [sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 else "0.0.0"


def reference() -> str:
    return f"{NAME}:{version()}"


def rootfs_tarball() -> Path:
    """Where the rootfs for these packages and options is cached."""
    recipe = [SUITE, MIRRORS, PACKAGES, DPKG_OPTIONS, HOOK_DIRS, platform.machine()]
    return cache_root() / f"image-rootfs-{SUITE}-{digest(recipe)}.tar"


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run("image", command, **kwargs)


def rootfs() -> Path:
    """The cached Debian rootfs tarball, made with mmdebstrap when missing."""
    tarball = rootfs_tarball()
    if tarball.exists():
        return tarball
    with locked(tarball.name):  # two test runs at once make it once
        if not tarball.exists():
            started = time.monotonic()
            _say(f"making the Debian {SUITE} rootfs (first run only, minutes)")
            RECIPE.mmdebstrap("image", tarball)
            _say(f"rootfs made in {time.monotonic() - started:.0f}s, cached at {tarball}")
    return tarball


def sources_digest() -> str:
    """A hash of everything that goes into the image from this tree."""
    digest = hashlib.sha256()
    files = [ROOT / "setup.py", ROOT / "etc" / "brigade-crgw.ini", Path(__file__)]
    for top in ("brigade_crgw", "twisted"):
        files += sorted((ROOT / top).rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _chroot(root: Path, *command: str) -> None:
    _run(["chroot", str(root), *command], env={"PATH": ENV["PATH"], "LC_ALL": "C.UTF-8"})


def plugin_cache(root: Path) -> Path:
    """Write Twisted's plugin cache inside ``root`` and make it stay valid."""
    _chroot(
        root,
        f"{VENV}/bin/python",
        "-c",
        "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))",
    )
    found = list(root.glob(f"{VENV.lstrip('/')}/lib/python3*/site-packages/twisted/plugins"))
    if len(found) != 1 or not (found[0] / "dropin.cache").exists():
        raise DebianError("Twisted did not write its plugin cache in the venv")
    plugins = found[0]
    cached = int(time.time())
    os.utime(plugins / "dropin.cache", (cached, cached))
    for path in plugins.glob("*.py"):
        os.utime(path, (cached - PLUGIN_AGE_SECONDS, cached - PLUGIN_AGE_SECONDS))
    return plugins / "dropin.cache"


def assemble(root: Path, wheel_dir: Path) -> None:
    """Turn the extracted rootfs at ``root`` into the image's filesystem."""
    shutil.copytree(wheel_dir, root / WHEELS.lstrip("/"))
    _chroot(root, "/usr/bin/python3", "-m", "venv", VENV)
    _chroot(
        root,
        f"{VENV}/bin/pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-index",
        "--find-links",
        WHEELS,
        "brigade-crgw",
    )
    # pip has done its work; the running gateway never installs anything.
    _chroot(root, f"{VENV}/bin/pip", "uninstall", "--quiet", "--yes", "pip", "setuptools")
    shutil.rmtree(root / WHEELS.lstrip("/"))
    for unused in UNUSED:
        for path in root.glob(f"{VENV.lstrip('/')}/{unused}"):
            shutil.rmtree(path)
    plugin_cache(root)
    with (root / "etc" / "passwd").open("a") as f:
        f.write(f"brigade-crgw:x:{USER_ID}:{USER_ID}:brigade-crgw:/nonexistent:/usr/sbin/nologin\n")
    with (root / "etc" / "group").open("a") as f:
        f.write(f"brigade-crgw:x:{USER_ID}:\n")
    state = root / STATE_DIR.lstrip("/")
    state.mkdir(parents=True, exist_ok=True)
    os.chown(state, USER_ID, USER_ID)
    state.chmod(0o700)
    config = root / CONFIG.lstrip("/")
    config.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "etc" / "brigade-crgw.ini", config)
    config.chmod(0o644)


def _buildah(*args: str) -> str:
    return str(_run(["buildah", *args], capture_output=True).stdout).strip()


def commit(root: Path, layer: Path, name: str, source: str) -> None:
    """``buildah from scratch``, the filesystem as one layer, config, commit."""
    with tarfile.open(layer, "w") as tar:
        # Numeric owners; mtimes go in as they are (whole seconds).
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name)
    container = _buildah("from", "scratch")
    try:
        _buildah("add", container, str(layer), "/")
        _buildah(
            "config",
            "--entrypoint",
            json.dumps(list(ENTRYPOINT)),
            "--cmd",
            json.dumps(list(CMD)),
            "--user",
            f"{USER_ID}:{USER_ID}",
            "--workingdir",
            "/",
            "--port",
            f"{PORT}/tcp",
            "--stop-signal",
            "SIGTERM",
            *(arg for key, value in ENV.items() for arg in ("--env", f"{key}={value}")),
            "--label",
            f"{SOURCE_LABEL}={source}",
            "--label",
            f"org.opencontainers.image.version={version()}",
            "--label",
            "org.opencontainers.image.title=brigade-crgw",
            container,
        )
        _buildah("commit", "--quiet", "--format", "oci", container, name)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)


def inspect(name: str) -> dict[str, object] | None:
    """podman's view of the image ``name``, or None when it is not stored."""
    result = subprocess.run(["podman", "image", "inspect", name], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)[0]


def current(name: str) -> bool:
    """Whether the stored image ``name`` was built from this tree's sources."""
    found = inspect(name)
    labels = (found or {}).get("Labels") or {}
    return isinstance(labels, dict) and labels.get(SOURCE_LABEL) == sources_digest()


def build(name: str | None = None, force: bool = False) -> str:
    """Build the image unless the stored one is this tree's; its name."""
    name = name or reference()
    if not force and current(name):
        _say(f"{name} is up to date")
        return name
    for tool in ("buildah", "chroot"):
        if shutil.which(tool) is None:
            raise DebianError(f"{tool} is not installed")
    if os.geteuid() != 0:
        raise DebianError("building the image needs root (chroot and buildah's storage)")
    started = time.monotonic()
    tarball = rootfs()
    source = sources_digest()
    with tempfile.TemporaryDirectory(prefix="brigade-crgw-image-") as tmp:
        work = Path(tmp)
        wheel_dir = work / "wheels"
        shutil.copytree(wheels("image"), wheel_dir)
        project_wheel("image", wheel_dir)
        root = work / "root"
        root.mkdir()
        _run(["tar", "-xf", str(tarball), "-C", str(root), "--numeric-owner"])
        assemble(root, wheel_dir)
        commit(root, work / "layer.tar", name, source)
    _say(f"built {name} in {time.monotonic() - started:.0f}s, {size(name) / 1e6:.0f} MB")
    return name


def size(name: str) -> int:
    found = inspect(name)
    return int(found["Size"]) if found else 0  # type: ignore[call-overload]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.image", description=__doc__)
    parser.add_argument("--name", help=f"the image name (default {NAME}:<version>)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--rootfs", action="store_true", help="only make the cached rootfs")
    args = parser.parse_args(argv)
    try:
        if args.rootfs:
            print(rootfs())
        else:
            print(build(args.name, args.force))
    except DebianError as e:
        _say(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
