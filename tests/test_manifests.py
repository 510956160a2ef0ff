"""The Helm chart (charts/brigade-crgw): the real ``helm`` lints and renders
it, the real API server accepts what it renders (a server-side dry run, and
``helm install``), with default and non-default values; its ini is a valid
configuration and its RBAC is etc/kubernetes/rbac.yaml's."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attr
import pytest
import yaml
from kubernetes import client

from brigade_crgw.config import _SCHEMA, Config
from devtools import ROOT, helm, kubectl
from devtools.plane import PlaneError

from .conftest import Cluster, Namespace
from .helpers import docs_block

CHART = ROOT / "charts" / "brigade-crgw"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())

# Values an operator might well choose, every kind of value changed.
CUSTOM = {
    "image": {"repository": "registry.example.com/brigade-crgw", "tag": "0.1.0-rc1"},
    "replicas": 3,
    "config": {
        "server": {"max_in_flight": 128, "read_timeout": 12.5},
        "kubernetes": {"request_timeout": 4, "threads": 16},
        "gateway": {"event_types": ["image_push", "chart_push"], "strict": True},
        "auth": {"require": "when-configured", "token_keys": ["crGatewayToken", "oldToken"]},
    },
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    "spool": {"volume": {"ephemeral": {"volumeClaimTemplate": {"spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}
    }}}}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "podDisruptionBudget": {"maxUnavailable": 2},
    "serviceAccount": {"name": "registry-gateway"},
    "shutdownDelaySeconds": 20,
}  # fmt: skip


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """The real helm, built from its Go module (cached)."""
    try:
        return helm.build()
    except PlaneError as e:
        pytest.fail(f"helm could not be built: {e}", pytrace=False)


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(
    helm_binary: Path, tmp_path: Path, namespace: str, values: dict[str, Any] | None = None
) -> str:
    """``helm template brigade-crgw`` of the chart, as YAML text."""
    extra = ["--values", str(values_file(tmp_path, values))] if values else []
    return run(
        [str(helm_binary), "template", "brigade-crgw", str(CHART), "--namespace", namespace, *extra]
    )


def objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Rendered objects by (kind, name)."""
    found = [d for d in yaml.safe_load_all(text) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in found}


def one(rendered: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [d for (k, _), d in rendered.items() if k == kind]
    assert len(matching) == 1, (kind, list(rendered))
    return matching[0]


def ini_of(rendered: dict[tuple[str, str], dict[str, Any]]) -> str:
    return str(one(rendered, "ConfigMap")["data"]["brigade-crgw.ini"])


def test_values_hold_every_ini_key() -> None:
    """values.yaml's config has a line for every key of the gateway's ini,
    under its section ([kubernetes] namespace is brigadeNamespace, [server]
    shutdown_delay is shutdownDelaySeconds)."""
    for section, keys in _SCHEMA.items():
        for key in keys:
            if (section, key) in (("kubernetes", "namespace"), ("server", "shutdown_delay")):
                continue
            assert key in VALUES["config"].get(section, {}), (
                f"[{section}] {key} is missing from charts/brigade-crgw/values.yaml "
                f"(add it under config.{section})"
            )
    for section, keys in VALUES["config"].items():
        assert set(keys) <= set(_SCHEMA[section]), (section, set(keys) - set(_SCHEMA[section]))


def test_defaults_render_the_shipped_configuration(helm_binary: Path, tmp_path: Path) -> None:
    """With default values the rendered ini is the configuration of
    etc/brigade-crgw.ini, with the pod's ServiceAccount and namespace, and
    the chart's shutdown delay (10 s; the grace period follows it)."""
    rendered = objects(render(helm_binary, tmp_path, "brigade"))
    ini = ini_of(rendered)
    environ = {"BRIGADE_NAMESPACE": "brigade"}
    shipped = Config.from_ini(str(ROOT / "etc" / "brigade-crgw.ini"), environ)
    assert Config.from_string(ini, environ) == attr.evolve(shipped, shutdown_delay=10.0)
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 50


def test_default_objects(helm_binary: Path, tmp_path: Path) -> None:
    """Default values give the least-privilege RBAC, probes on /healthz and
    /readyz, a PodDisruptionBudget, a locked-down non-root pod with a
    read-only root, /tmp and the spool on emptyDirs, and no ServiceMonitor."""
    rendered = objects(render(helm_binary, tmp_path, "brigade"))
    assert sorted(k for k, _ in rendered) == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    assert one(rendered, "Role")["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}
    ]
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "localhost/brigade-crgw:0.1.0"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"name": "BRIGADE_NAMESPACE", "value": "brigade"} in container["env"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {
        "config": "/etc/brigade-crgw",
        "spool": "/var/lib/brigade-crgw",
        "tmp": "/tmp",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["spool"] == {"name": "spool", "emptyDir": {}}
    assert "emptyDir" in volumes["tmp"]
    assert one(rendered, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_custom_values(helm_binary: Path, tmp_path: Path) -> None:
    """Non-default values reach the objects: image, replicas, resources,
    every kind of ini value, the spool's volume, the ServiceAccount's name,
    the PodDisruptionBudget and a ServiceMonitor."""
    rendered = objects(render(helm_binary, tmp_path, "gateways", CUSTOM))
    deployment = one(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "registry-gateway"
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/brigade-crgw:0.1.0-rc1"
    assert container["resources"] == CUSTOM["resources"]
    spool = next(v for v in pod["volumes"] if v["name"] == "spool")
    assert "ephemeral" in spool and "emptyDir" not in spool
    config = Config.from_string(ini_of(rendered), {"BRIGADE_NAMESPACE": "gateways"})
    assert (config.max_in_flight, config.read_timeout) == (128, 12.5)
    assert (config.request_timeout, config.threads) == (4, 16)
    assert config.event_types == {"image_push", "chart_push"} and config.strict is True
    assert config.require == "when-configured"
    assert config.token_keys == ("crGatewayToken", "oldToken")
    assert config.shutdown_delay == 20 and pod["terminationGracePeriodSeconds"] == 60
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    binding = one(rendered, "RoleBinding")
    assert binding["subjects"][0]["name"] == "registry-gateway"
    assert one(rendered, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 2


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"shutdownDelaySeconds": 20, "terminationGracePeriodSeconds": 40}, "at least"),
        ({"config": {"server": {"shutdown_delay": 5}}}, "set shutdownDelaySeconds"),
    ],
)
def test_grace_period_must_cover_the_delay(
    helm_binary: Path, tmp_path: Path, values: dict[str, Any], says: str
) -> None:
    """A grace period shorter than the shutdown delay and the drain, or a
    shutdown delay set in config instead of shutdownDelaySeconds, is refused
    when rendering, naming the value."""
    result = subprocess.run(
        [
            str(helm_binary),
            "template",
            "x",
            str(CHART),
            "--values",
            str(values_file(tmp_path, values)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and says in result.stderr, result.stderr


def test_brigade_in_another_namespace(helm_binary: Path, tmp_path: Path) -> None:
    """With brigadeNamespace set, the Role and RoleBinding go there, bound to
    the ServiceAccount in the release's namespace, and the pods serve it."""
    rendered = objects(render(helm_binary, tmp_path, "gateways", {"brigadeNamespace": "brigade"}))
    assert one(rendered, "Role")["metadata"]["namespace"] == "brigade"
    binding = one(rendered, "RoleBinding")
    assert binding["metadata"]["namespace"] == "brigade"
    assert binding["subjects"][0]["namespace"] == "gateways"
    assert one(rendered, "Deployment")["metadata"]["namespace"] == "gateways"
    (container,) = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "BRIGADE_NAMESPACE", "value": "brigade"} in container["env"]


def test_listen_must_match_the_port(helm_binary: Path, tmp_path: Path) -> None:
    """A listen endpoint on another port than containerPort is refused at
    render time, naming both, rather than leaving the probes to fail."""
    values = values_file(tmp_path, {"config": {"server": {"listen": "tcp:8080"}}})
    result = subprocess.run(
        [str(helm_binary), "template", "x", str(CHART), "--values", str(values)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "config.server.listen (tcp:8080) must listen on containerPort (7744)" in result.stderr


@pytest.mark.parametrize("values", [None, CUSTOM], ids=["default", "custom"])
def test_helm_lint(helm_binary: Path, tmp_path: Path, values: dict[str, Any] | None) -> None:
    """`helm lint --strict` passes with default and non-default values."""
    extra = ["--values", str(values_file(tmp_path, values))] if values else []
    run([str(helm_binary), "lint", "--strict", str(CHART), *extra])


def test_rbac_file_agrees_with_the_chart(helm_binary: Path, tmp_path: Path) -> None:
    """etc/kubernetes/rbac.yaml (the control plane and the systemd path use
    it) grants exactly the chart's rules to the same names."""
    rendered = objects(render(helm_binary, tmp_path, "default"))
    shipped = {
        d["kind"]: d for d in yaml.safe_load_all((ROOT / "etc/kubernetes/rbac.yaml").read_text())
    }
    assert set(shipped) == {"ServiceAccount", "Role", "RoleBinding"}
    assert shipped["Role"]["rules"] == one(rendered, "Role")["rules"]
    for kind in shipped:
        assert shipped[kind]["metadata"]["name"] == one(rendered, kind)["metadata"]["name"]
    assert shipped["RoleBinding"]["roleRef"] == one(rendered, "RoleBinding")["roleRef"]
    assert shipped["RoleBinding"]["subjects"] == one(rendered, "RoleBinding")["subjects"]


# --- against the real API server -----------------------------------------------------

# Our own minimal ServiceMonitor definition, so that the API server knows
# the kind; the Prometheus Operator's full schema is not needed for a dry run.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def service_monitors(plane: Cluster) -> None:
    """The ServiceMonitor kind, known to the API server."""
    extensions = client.ApiextensionsV1Api(plane.api)
    try:
        extensions.create_custom_resource_definition(SERVICE_MONITOR_CRD)
    except client.ApiException as e:
        if e.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = extensions.read_custom_resource_definition(SERVICE_MONITOR_CRD["metadata"]["name"])
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            return
        time.sleep(0.2)
    pytest.fail("the ServiceMonitor CRD was not established within 30 s")


@pytest.fixture(scope="module")
def tools(
    plane: Cluster, helm_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment an operator has: helm and kubectl on PATH, and an
    admin's kubeconfig."""
    if plane.local is None:
        kubeconfig = os.environ["BRIGADE_CRGW_TEST_KUBECONFIG"]
    else:
        kubeconfig = str(plane.local.admin_kubeconfig)
    try:
        kubectl_binary = kubectl.kubectl()
    except PlaneError as e:
        pytest.fail(f"kubectl could not be built: {e}", pytrace=False)
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "helm").symlink_to(helm_binary)
    (bin_dir / "kubectl").symlink_to(kubectl_binary)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": kubeconfig,
        "HOME": str(tmp_path_factory.mktemp("home")),
    }


@pytest.fixture
def other_namespace(plane: Cluster) -> Iterator[str]:
    """A second fresh namespace, to hold Brigade apart from the gateway."""
    name = f"crgw-brigade-{uuid.uuid4().hex[:8]}"
    plane.core.create_namespace({"metadata": {"name": name}})
    yield name
    plane.core.delete_namespace(name)


@pytest.mark.integration
@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
def test_api_server_accepts_the_chart(
    namespace: Namespace,
    other_namespace: str,
    tools: dict[str, str],
    service_monitors: None,
    tmp_path: Path,
    custom: bool,
) -> None:
    """`helm template … | kubectl apply --dry-run=server -f -` is accepted by
    the real API server, with default values and with non-default ones
    (a ServiceMonitor, Brigade in another namespace).  The release's
    namespace is a fresh one, so every object is new to the API server."""
    values = {**CUSTOM, "brigadeNamespace": namespace.name} if custom else {}
    path = values_file(tmp_path, values)
    script = (
        f"helm template brigade-crgw {CHART} --namespace {other_namespace} --values {path}"
        " | kubectl apply --dry-run=server -f -"
    )
    out = run(["bash", "-euo", "pipefail", "-c", script], env={**os.environ, **tools})
    kinds = {"configmap", "deployment.apps", "service", "serviceaccount"}
    kinds |= {"role.rbac.authorization.k8s.io", "rolebinding.rbac.authorization.k8s.io"}
    kinds |= {"poddisruptionbudget.policy"}
    if custom:
        kinds |= {"servicemonitor.monitoring.coreos.com"}
    assert {line.split("/")[0] for line in out.splitlines()} == kinds, out
    assert all(line.endswith("(server dry run)") for line in out.splitlines()), out


@pytest.mark.integration
def test_docs_helm_path(
    plane: Cluster, other_namespace: str, tools: dict[str, str], tmp_path: Path
) -> None:
    """The Helm steps of docs/installation.rst, run as written against the real API server:
    the release's objects exist as the chart says, and the gateway's
    ServiceAccount may get and create Secrets there and nothing more."""
    (tmp_path / "brigade-crgw").symlink_to(ROOT)
    ns = other_namespace
    env = {**os.environ, **tools, "NS": ns}
    for step in ("values", "install"):
        run(
            ["bash", "-euo", "pipefail", "-c", docs_block("installation", "helm-test", step)],
            env=env,
            cwd=tmp_path,
        )
    try:
        apps = client.AppsV1Api(plane.api)
        deployment = apps.read_namespaced_deployment("brigade-crgw", ns)
        assert deployment.spec.template.spec.service_account_name == "brigade-crgw"
        (container,) = deployment.spec.template.spec.containers
        assert container.image == "registry.example.com/brigade-crgw:0.1.0"
        ini = plane.core.read_namespaced_config_map("brigade-crgw", ns)
        Config.from_string(ini.data["brigade-crgw.ini"], {"BRIGADE_NAMESPACE": ns})
        account = f"system:serviceaccount:{ns}:brigade-crgw"
        for verb, allowed in (("get", True), ("create", True), ("list", False), ("delete", False)):
            review = client.AuthorizationV1Api(plane.api).create_subject_access_review(
                {
                    "spec": {
                        "user": account,
                        "resourceAttributes": {
                            "namespace": ns,
                            "verb": verb,
                            "resource": "secrets",
                        },
                    }
                }
            )
            assert review.status.allowed is allowed, (verb, review.status)
    finally:
        run(["helm", "uninstall", "brigade-crgw", "--namespace", ns], env=env)
