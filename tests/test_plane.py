"""The local control plane, and the gateway identity it hands out."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .conftest import Namespace, load_controlplane

pytestmark = pytest.mark.integration


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


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


def test_up_reuse_status_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second plane in its own directory: up starts it and writes both
    kubeconfigs, a second up reuses it, the admin lists namespaces, and down
    leaves no process and no state behind."""
    monkeypatch.setenv("BRIGADE_CRGW_PLANE_DIR", str(tmp_path / "plane"))
    plane = load_controlplane()
    state = plane.up()
    try:
        pids = dict(state["pids"])
        assert plane.running() is not None
        assert plane.up()["pids"] == pids
        admin = client.CoreV1Api(config.new_client_from_config(str(plane.admin_kubeconfig())))
        names = {n.metadata.name for n in admin.list_namespace().items}
        assert {"default", "kube-system"} <= names
        gateway = client.CoreV1Api(config.new_client_from_config(str(plane.gateway_kubeconfig())))
        assert _status(lambda: gateway.list_namespace()) == 403
        for kubeconfig in (plane.admin_kubeconfig(), plane.gateway_kubeconfig()):
            text = kubeconfig.read_text()
            assert "certificate-authority-data" in text
            assert "insecure-skip-tls-verify" not in text
    finally:
        plane.down()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (tmp_path / "plane").exists()
    assert plane.running() is None
