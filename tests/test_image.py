"""The OCI image from ``make image``, run read-only in podman as the chart
runs it, against the real API server; and the Dockerfile's agreement with it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import ROOT, image
from devtools import gateway as gateway_process
from devtools.outage import FORWARD, HANG, Proxy, proxied_kubeconfig
from devtools.projects import TOKEN, fresh

from .conftest import Namespace
from .helpers import BEARER, DOCKERHUB, builds, held_webhook


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (keyword, arguments), continuation
    lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        instructions.append((keyword, rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def test_dockerfile_parses_and_matches_the_image_layout() -> None:
    """Every Dockerfile instruction is a known one with well-formed
    arguments, and its entrypoint, command, user, environment, port and
    paths are those of `make image`."""
    known = {"FROM", "RUN", "COPY", "ENV", "USER", "WORKDIR", "EXPOSE", "STOPSIGNAL"}
    known |= {"ENTRYPOINT", "CMD"}
    instructions = dockerfile()
    assert {k for k, _ in instructions} <= known, instructions
    assert instructions[0][0] == "FROM"
    single = {k: v for k, v in instructions if k in ("ENTRYPOINT", "CMD", "USER", "EXPOSE")}
    assert tuple(json.loads(single["ENTRYPOINT"])) == image.ENTRYPOINT
    assert tuple(json.loads(single["CMD"])) == image.CMD
    assert single["USER"] == f"{image.USER_ID}:{image.USER_ID}"
    assert single["EXPOSE"] == f"{image.PORT}/tcp"
    env = dict(pair.split("=", 1) for k, v in instructions if k == "ENV" for pair in shlex.split(v))
    assert env == image.ENV
    for source, _, _destination in (v.rpartition(" ") for k, v in instructions if k == "COPY"):
        for path in source.split():
            assert (ROOT / path).exists(), f"COPY {path}: no such file"
    run = " ".join(v for k, v in instructions if k == "RUN")
    for needed in (
        f"python3 -m venv {image.VENV}",
        "python3-venv",
        f"install -d -o {image.USER_ID} -g {image.USER_ID} -m 0700 {image.STATE_DIR}",
        "kubernetes/aio",
        "dropin.cache",
    ):
        assert needed in run, needed
    copies = [v for k, v in instructions if k == "COPY"]
    assert f"etc/brigade-crgw.ini {image.CONFIG}" in copies


def podman(*args: str, check: bool = True) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def shell(name: str, script: str) -> str:
    """Run ``script`` in a read-only container of the image, as its user."""
    return podman("run", "--rm", *image.RUN_OPTIONS, "--entrypoint", "/bin/sh", name, "-c", script)


@pytest.mark.integration
def test_image_layout(built: str) -> None:
    """The image runs as 10001 with the shipped entrypoint, holds no systemd
    and no package manager, and its plugin cache is newer than every plugin
    file, so a read-only start never rewrites it."""
    config = json.loads(podman("image", "inspect", built))[0]["Config"]
    assert config["User"] == f"{image.USER_ID}:{image.USER_ID}"
    assert tuple(config["Entrypoint"]) == image.ENTRYPOINT
    assert tuple(config["Cmd"]) == image.CMD
    assert f"PATH={image.ENV['PATH']}" in config["Env"]
    plugins = f"{image.VENV}/lib/python3.11/site-packages/twisted/plugins"
    out = shell(
        built,
        f"id -u; for f in /usr/bin/systemctl /usr/bin/apt-get {image.VENV}/bin/pip; "
        'do test -e "$f" && echo "present: $f"; done; '
        f"stat -c '%Y %n' {plugins}/dropin.cache {plugins}/*.py; stat -c '%u %a' {image.STATE_DIR}",
    ).splitlines()
    assert out[0] == str(image.USER_ID)
    assert not [line for line in out if line.startswith("present:")], out
    stamps = [line.split(" ", 1) for line in out[1:-1]]
    cache = int(stamps[0][0])
    assert stamps[0][1].endswith("dropin.cache") and len(stamps) > 5
    assert all(int(stamp) < cache for stamp, _ in stamps[1:]), stamps
    assert out[-1] == f"{image.USER_ID} 700"


def start(
    name: str, tmp: Path, namespace: str, kubeconfig: Path, timeout: float = 60.0
) -> gateway_process.Daemon:
    """Run the image in the foreground (``podman run``, so that process's exit
    code is the container's) and wait for /healthz.

    The ini and kubeconfig are mounted read-only, owned by the image's user
    with mode 0400 as a Kubernetes Secret volume with fsGroup would give them;
    the spool is on a named volume, the root filesystem read-only.
    """
    port = gateway_process.free_port()
    mounts = tmp / f"mounts-{port}"
    mounts.mkdir()
    (mounts / "kubeconfig").write_bytes(kubeconfig.read_bytes())
    (mounts / "brigade-crgw.ini").write_text(
        f"[server]\nlisten = tcp:{port}:interface=127.0.0.1\nread_timeout = 5\n"
        f"[kubernetes]\nnamespace = {namespace}\nkubeconfig = /etc/brigade-crgw/kubeconfig\n"
        "request_timeout = 3\nthreads = 4\n"
        f"[spool]\npath = {image.STATE_DIR}/spool.sqlite\n"
    )
    for path in mounts.iterdir():
        os.chown(path, image.USER_ID, image.USER_ID)
        path.chmod(0o400)
    log_path = tmp / f"container-{port}.log"
    container = f"brigade-crgw-test-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(
        [
            "podman",
            "run",
            "--name",
            container,
            *image.RUN_OPTIONS,
            "--volume",
            f"{mounts}:/etc/brigade-crgw:ro",
            # A new named volume takes the image's directory and its owner.
            "--volume",
            f"{container}-spool:{image.STATE_DIR}",
            name,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    gateway = gateway_process.Daemon(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"the container exited with {process.returncode}:\n{gateway.log()}"
            )
        try:
            if gateway.request("GET", "/healthz", timeout=1).status == 200:
                return gateway
        except OSError:
            time.sleep(0.2)
    podman("rm", "--force", container, check=False)
    raise AssertionError(f"the container did not answer within {timeout}s:\n{gateway.log()}")


def container_name(gateway: gateway_process.Daemon) -> str:
    argv = gateway.process.args
    assert isinstance(argv, list)
    return str(argv[argv.index("--name") + 1])


@pytest.fixture
def container(
    built: str, namespace: Namespace, project: str, tmp_path: Path
) -> Iterator[tuple[gateway_process.Daemon, Proxy]]:
    """The image running read-only; its road to the API server goes through
    a breakable proxy."""
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "via-proxy.kubeconfig"
    )
    gateway = start(built, tmp_path, namespace.name, kubeconfig)
    yield gateway, proxy
    podman("rm", "--force", "--time", "0", container_name(gateway), check=False)
    gateway.process.wait(30)
    podman("volume", "rm", "--force", f"{container_name(gateway)}-spool", check=False)
    proxy.close()


@pytest.mark.integration
def test_read_only_container_makes_builds(
    container: tuple[gateway_process.Daemon, Proxy], namespace: Namespace
) -> None:
    """Read-only, as the chart runs it, the image answers /healthz and
    /readyz, turns a webhook into a build Secret that exists when the 200
    arrives, serves /metrics, and starts without trying to write its plugin
    cache."""
    gateway, _ = container
    assert gateway.request("GET", "/healthz").status == 200
    deadline = time.monotonic() + 15
    while gateway.request("GET", "/readyz").status != 200:
        assert time.monotonic() < deadline, gateway.log()
        time.sleep(0.3)
    before = builds(namespace)
    answer = gateway.post("/events/webhook/acme/app", fresh(DOCKERHUB, 3000), BEARER)
    assert answer.status == 200, answer.body
    assert set(builds(namespace)) - set(before) == set(answer.json()["builds"])
    assert gateway.request("GET", "/metrics").status == 200
    log = gateway.log()
    assert "plugin cache" not in log and "Traceback" not in log, log
    assert TOKEN not in log


@pytest.mark.integration
def test_podman_stop_drains_and_exits_0(
    container: tuple[gateway_process.Daemon, Proxy], namespace: Namespace
) -> None:
    """`podman stop` lets the webhook in flight finish with its build, and
    the container exits 0, as podman reports it."""
    gateway, proxy = container
    name = container_name(gateway)
    proxy.set(HANG)
    answer_of = held_webhook(gateway, proxy, 3001)
    stopping = subprocess.Popen(["podman", "stop", "--time", "40", name], stdout=subprocess.DEVNULL)
    gateway.wait_log("received SIGTERM")
    assert stopping.poll() is None, "the container stopped with a webhook in flight"
    proxy.set(FORWARD)
    answer = answer_of(30)
    assert stopping.wait(60) == 0
    assert answer.status == 200, answer.body
    assert set(answer.json()["builds"]) <= set(builds(namespace))
    assert gateway.process.wait(30) == 0, gateway.log()
    state = json.loads(podman("inspect", name))[0]["State"]
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state


@pytest.mark.integration
def test_the_command_inside_the_running_container(
    container: tuple[gateway_process.Daemon, Proxy],
) -> None:
    """``brigade-crgw`` is on the image's PATH: inside the running read-only
    container, as its user, ``check`` passes on the container's own ini (the
    gateway's identity, the spool the gateway has open), and ``spool list``
    reads that spool."""
    gateway, _ = container
    name = container_name(gateway)
    ini = "/etc/brigade-crgw/brigade-crgw.ini"
    checked = subprocess.run(
        ["podman", "exec", name, "brigade-crgw", "check", "--config", ini],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"^ok +may create secrets", checked.stdout, re.M), checked.stdout
    assert re.search(r"^ok +spool: .* opens and takes a write", checked.stdout, re.M)
    listed = podman("exec", name, "brigade-crgw", "spool", "list", "--config", ini)
    assert listed.endswith("is empty."), listed
