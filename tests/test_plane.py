"""The local control plane, and the gateway identity it hands out."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from devtools import ROOT
from devtools.plane import Plane, PlaneError, build_go_binary

from .conftest import Namespace


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


@pytest.mark.integration
def test_gateway_identity_is_least_privilege(namespace: Namespace) -> None:
    """The gateway's token may get and create Secrets in its namespace; it is
    refused (403) delete, update, patch, list and watch there, and anything
    in another namespace."""
    core = client.CoreV1Api(config.new_client_from_config(str(namespace.gateway_kubeconfig)))
    ns = namespace.name
    secret = {"metadata": {"name": "least-privilege"}, "stringData": {"k": "v"}}
    assert _status(lambda: core.create_namespaced_secret(ns, secret)) == 200
    assert _status(lambda: core.read_namespaced_secret("least-privilege", ns)) == 200
    refused = {
        "delete": lambda: core.delete_namespaced_secret("least-privilege", ns),
        "update": lambda: core.replace_namespaced_secret("least-privilege", ns, secret),
        "patch": lambda: core.patch_namespaced_secret(
            "least-privilege", ns, {"stringData": {"k": "w"}}
        ),
        "list": lambda: core.list_namespaced_secret(ns),
        "watch": lambda: core.list_namespaced_secret(ns, watch=True, timeout_seconds=1),
        "get elsewhere": lambda: core.read_namespaced_secret("x", "kube-system"),
        "create elsewhere": lambda: core.create_namespaced_secret("kube-system", secret),
        "pods": lambda: core.list_namespaced_pod(ns),
    }
    assert {name: _status(call) for name, call in refused.items()} == dict.fromkeys(refused, 403)


@pytest.mark.integration
def test_up_reuse_status_down(tmp_path: Path) -> None:
    """A second plane in its own directory: up starts it and writes both
    kubeconfigs, a second up reuses it, the admin lists namespaces, and down
    leaves no process and no state behind."""
    plane = Plane(tmp_path / "plane")
    state = plane.up()
    try:
        assert plane.status() == state
        assert plane.up().pids == state.pids
        assert state.server.startswith("https://127.0.0.1:")
        assert state.etcd.startswith("http://127.0.0.1:")
        admin = client.CoreV1Api(plane.admin_api())
        names = {n.metadata.name for n in admin.list_namespace().items}
        assert {"default", "kube-system"} <= names
        gateway = client.CoreV1Api(config.new_client_from_config(str(plane.gateway_kubeconfig)))
        assert _status(lambda: gateway.list_namespace()) == 403
        for kubeconfig in (plane.admin_kubeconfig, plane.gateway_kubeconfig):
            text = kubeconfig.read_text()
            assert "certificate-authority-data" in text
            assert "insecure-skip-tls-verify" not in text
    finally:
        plane.down()
    for pid in state.pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (tmp_path / "plane").exists()
    assert plane.status() is None


def test_state_dir_is_chosen_when_the_plane_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$BRIGADE_CRGW_PLANE_DIR is read when a Plane is made without a
    directory, not when devtools.plane is imported; an explicit one wins."""
    monkeypatch.setenv("BRIGADE_CRGW_PLANE_DIR", str(tmp_path / "a"))
    assert Plane().state_dir == tmp_path / "a"
    assert Plane().env() == {"KUBECONFIG": str(tmp_path / "a" / "admin.kubeconfig")}
    monkeypatch.setenv("BRIGADE_CRGW_PLANE_DIR", str(tmp_path / "b"))
    assert Plane().state_dir == tmp_path / "b"
    assert Plane(tmp_path / "c").state_dir == tmp_path / "c"


def test_build_go_binary_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build_go_binary builds a module's main package with the real Go into
    <cache>/<name>-<version>/bin, and a second call finds it there without Go."""
    module = tmp_path / "src"
    (module / "cmd" / "hello").mkdir(parents=True)
    (module / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n")
    (module / "cmd" / "hello" / "main.go").write_text(
        'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello, plane") }\n'
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GOPROXY", "off")  # the module is local: no network
    args = ("example.com/hello", "v1.2.3", "example.com/hello/cmd/hello", "hello")
    binary = build_go_binary(*args, replaces=[f"example.com/hello => {module}"])
    assert binary == tmp_path / "cache" / "brigade-crgw" / "hello-v1.2.3" / "bin" / "hello"
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "hello, plane\n"
    built = binary.stat().st_mtime_ns
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))
    assert build_go_binary(*args) == binary
    assert binary.stat().st_mtime_ns == built
    with pytest.raises(PlaneError, match="Go toolchain"):
        build_go_binary(*args[:3], "other")


@pytest.mark.integration
def test_command_up_status_env_down(tmp_path: Path) -> None:
    """scripts/control-plane drives the plane in $BRIGADE_CRGW_PLANE_DIR:
    up starts it, status reports it (exit 0), env points kubectl at its
    admin kubeconfig, down stops it, and status then says so (exit 1)."""
    state_dir = tmp_path / "plane"
    env = dict(os.environ, BRIGADE_CRGW_PLANE_DIR=str(state_dir))

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "scripts" / "control-plane"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        up = command("up")
        assert up.returncode == 0, up.stderr
        assert f"admin:   {state_dir / 'admin.kubeconfig'}" in up.stderr
        status = command("status")
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("running: kube-apiserver https://127.0.0.1:")
        assert status.stdout.rstrip().endswith(f"state in {state_dir}")
        assert f"export KUBECONFIG={state_dir / 'admin.kubeconfig'}\n" in command("env").stdout
    finally:
        down = command("down")
    assert down.returncode == 0, down.stderr
    assert not state_dir.exists()
    after = command("status")
    assert (after.returncode, after.stdout) == (1, "not running\n")
    assert command("nonsense").returncode == 2
