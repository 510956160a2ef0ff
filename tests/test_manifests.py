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

import pytest
import yaml
from kubernetes import client

from brigade_crgw.config import _SCHEMA, Config
from devtools import ROOT, helm, image, kubectl
from devtools import gateway as gateway_process
from devtools.gateway import free_port
from devtools.plane import PlaneError
from devtools.projects import project_secret

from .conftest import Cluster, Namespace
from .helpers import BEARER, DOCKERHUB, docs_block

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
    under its section ([kubernetes] namespace is brigadeNamespace)."""
    for section, keys in _SCHEMA.items():
        for key in keys:
            if (section, key) == ("kubernetes", "namespace"):
                continue
            assert key in VALUES["config"].get(section, {}), (
                f"[{section}] {key} is missing from charts/brigade-crgw/values.yaml "
                f"(add it under config.{section})"
            )
    for section, keys in VALUES["config"].items():
        assert set(keys) <= set(_SCHEMA[section]), (section, set(keys) - set(_SCHEMA[section]))


def test_defaults_render_the_shipped_configuration(helm_binary: Path, tmp_path: Path) -> None:
    """With default values the rendered ini is the configuration of
    etc/brigade-crgw.ini, with the pod's ServiceAccount and namespace."""
    ini = ini_of(objects(render(helm_binary, tmp_path, "brigade")))
    environ = {"BRIGADE_NAMESPACE": "brigade"}
    shipped = Config.from_ini(str(ROOT / "etc" / "brigade-crgw.ini"), environ)
    assert Config.from_string(ini, environ) == shipped


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
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    binding = one(rendered, "RoleBinding")
    assert binding["subjects"][0]["name"] == "registry-gateway"
    assert one(rendered, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 2


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


# --- the chart's pod, run as a kubelet would run it ----------------------------------

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def pod_to_podman(
    pod: dict[str, Any],
    name: str,
    files: Path,
    config_maps: dict[str, dict[str, str]],
    service_account: dict[str, bytes],
    server: str,
) -> list[str]:
    """``podman run`` arguments that run ``pod`` (a stored Deployment's pod
    template, as JSON) the way a kubelet would: its user and groups, its
    container's security context, its volumes (ConfigMaps as read-only
    files, emptyDirs as directories the pod's fsGroup owns), the projected
    ServiceAccount token and the in-cluster environment.  A field this
    function does not know fails the test, so the chart cannot grow one
    that goes untried here."""
    spec = pod["spec"]
    known = {"serviceAccountName", "securityContext", "containers", "volumes"}
    known |= {"terminationGracePeriodSeconds", "restartPolicy", "dnsPolicy", "schedulerName"}
    known |= {"serviceAccount"}  # the API server's deprecated copy of serviceAccountName
    assert set(spec) <= known, set(spec) - known
    (container,) = spec["containers"]
    pod_security = spec["securityContext"]
    security = container["securityContext"]
    argv = ["--name", name, *image.RUN_OPTIONS]
    argv += ["--user", f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"]
    argv += ["--group-add", str(pod_security["fsGroup"])]
    assert pod_security["runAsNonRoot"] and pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }, security  # image.RUN_OPTIONS: --read-only, --cap-drop ALL, no-new-privileges
    host, port = server.removeprefix("https://").rsplit(":", 1)
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    for variable in container["env"]:
        env[variable["name"]] = variable["value"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    accounts = files / "serviceaccount"
    accounts.mkdir()
    for filename, content in service_account.items():
        (accounts / filename).write_bytes(content)
        (accounts / filename).chmod(0o644)
    argv += ["--volume", f"{accounts}:{SERVICE_ACCOUNT_DIR}:ro"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes.pop(mount["name"])
        where = files / mount["name"]
        where.mkdir()
        if "configMap" in volume:
            assert mount.get("readOnly") is True
            config_map = volume["configMap"]["name"]
            for filename, content in config_maps[config_map].items():
                (where / filename).write_text(content)
                (where / filename).chmod(0o644)
            argv += ["--volume", f"{where}:{mount['mountPath']}:ro"]
        else:
            # As the kubelet makes an emptyDir: world-writable, the fsGroup's.
            assert set(volume) == {"name", "emptyDir"}, volume
            os.chown(where, 0, pod_security["fsGroup"])
            where.chmod(0o777)
            argv += ["--volume", f"{where}:{mount['mountPath']}"]
    assert not volumes, f"volumes never mounted: {volumes}"
    argv += [container["image"], *container["args"]]
    return argv


@pytest.mark.integration
def test_the_charts_pod_runs(
    plane: Cluster, built: str, other_namespace: str, tools: dict[str, str], tmp_path: Path
) -> None:
    """The image runs as the installed chart's pod template says (non-root,
    read-only root, no capabilities, the ConfigMap's ini, the emptyDirs, the
    release's ServiceAccount token in-cluster): its readiness and liveness
    probes pass, a webhook makes a build with the chart's RBAC, and stopping
    it within the grace period exits 0."""
    ns = other_namespace
    port = free_port()
    repository, tag = built.rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag},
        "containerPort": port,
        "config": {"server": {"listen": f"tcp:{port}:interface=127.0.0.1"}},
    }
    env = {**os.environ, **tools}
    chart_values = values_file(tmp_path, values)
    run(["helm", "install", "gw", str(CHART), "-n", ns, "--values", str(chart_values)], env=env)
    container = f"brigade-crgw-pod-{uuid.uuid4().hex[:8]}"
    try:
        apps = client.AppsV1Api(plane.api)
        stored = apps.read_namespaced_deployment("gw-brigade-crgw", ns)
        pod = plane.api.sanitize_for_serialization(stored)["spec"]["template"]
        config_maps = {
            item.metadata.name: item.data
            for item in plane.core.list_namespaced_config_map(ns).items
            if item.data and "brigade-crgw.ini" in item.data
        }
        account = pod["spec"]["serviceAccountName"]
        token = plane.core.create_namespaced_service_account_token(
            account, ns, {"spec": {"expirationSeconds": 3600}}
        ).status.token
        files = tmp_path / "pod"
        files.mkdir()
        argv = pod_to_podman(
            pod,
            container,
            files,
            config_maps,
            {
                "token": token.encode(),
                "ca.crt": Path(plane.api.configuration.ssl_ca_cert).read_bytes(),
                "namespace": ns.encode(),
            },
            plane.api.configuration.host,
        )
        log_path = tmp_path / "pod.log"
        process = subprocess.Popen(
            ["podman", "run", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        gateway = gateway_process.Daemon(process, port, log_path)
        (spec,) = pod["spec"]["containers"]
        ready, live = (
            spec["readinessProbe"]["httpGet"]["path"],
            spec["livenessProbe"]["httpGet"]["path"],
        )
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, gateway.log()
            try:
                if gateway.request("GET", ready, timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"never ready:\n{gateway.log()}"
            time.sleep(0.3)
        assert gateway.request("GET", live).status == 200
        plane.core.create_namespaced_secret(ns, project_secret("acme/app"))
        answer = gateway.post("/events/webhook/acme/app", DOCKERHUB, BEARER)
        assert answer.status == 200, answer.body
        (build,) = answer.json()["builds"]
        assert plane.core.read_namespaced_secret(build, ns).type == "brigade.sh/build"
        grace = str(pod["spec"]["terminationGracePeriodSeconds"])
        subprocess.run(["podman", "stop", "--time", grace, container], check=True, timeout=60)
        assert process.wait(30) == 0, gateway.log()
        assert "Traceback" not in gateway.log() and "plugin cache" not in gateway.log()
    finally:
        subprocess.run(["podman", "rm", "--force", container], capture_output=True)
        run(["helm", "uninstall", "gw", "-n", ns], env=env)
