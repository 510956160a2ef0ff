"""The chart on a real node (``scripts/control-plane up --node``): the kubelet
runs its pods and probes them, kube-proxy routes its Service, the gateway
reads the API server through in-cluster configuration, and ``helm
uninstall`` takes it all away."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attr
import pytest
from kubernetes import client, config

from devtools import ROOT, helm, kubectl
from devtools.gateway import exchange
from devtools.plane import Plane, PlaneError
from devtools.plane.node import NODE_NAME, PAUSE_IMAGE
from devtools.projects import fresh, project_secret
from devtools.waiting import until

from .conftest import Cluster
from .helpers import BEARER, DOCKERHUB

pytestmark = [pytest.mark.integration, pytest.mark.node]

CHART = ROOT / "charts" / "brigade-crgw"
RELEASE = "gw"
FULLNAME = f"{RELEASE}-brigade-crgw"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"


@attr.s(frozen=True, auto_attribs=True)
class Release:
    """The chart installed with its defaults but the image, in ``namespace``."""

    namespace: str
    plane: Cluster
    env: dict[str, str]

    def run(self, *argv: str) -> str:
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{argv}: {result.stderr}"
        return result.stdout

    def pods(self) -> list[client.V1Pod]:
        return self.plane.core.list_namespaced_pod(self.namespace, label_selector=SELECTOR).items

    def service_url(self) -> tuple[str, int]:
        service = self.plane.core.read_namespaced_service(FULLNAME, self.namespace)
        return service.spec.cluster_ip, service.spec.ports[0].port


def answers(host: str, port: int) -> bool:
    """Whether ``GET /healthz`` at ``host:port`` is answered 200."""
    try:
        return exchange(port, "GET", "/healthz", timeout=5, host=host).status == 200
    except OSError:
        return False


def ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def serving(release: Release) -> set[str]:
    """The addresses the Service's EndpointSlices list as ready."""
    slices = client.DiscoveryV1Api(release.plane.api).list_namespaced_endpoint_slice(
        release.namespace, label_selector=f"kubernetes.io/service-name={FULLNAME}"
    )
    return {
        address
        for s in slices.items
        for e in s.endpoints or []
        if e.conditions.ready
        for address in e.addresses
    }


@pytest.fixture(scope="module")
def release(
    plane: Cluster, built: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """The chart's release on the node, both replicas Ready (``helm install --wait``)."""
    if plane.local is None:
        pytest.fail("the node tests need the local plane's node", pytrace=False)
    try:
        plane.local.node().load(built)
        binaries = {"helm": helm.build(), "kubectl": kubectl.kubectl()}
    except PlaneError as e:
        pytest.fail(f"the node is not usable: {e}", pytrace=False)
    bin_dir = tmp_path_factory.mktemp("bin")
    for name, path in binaries.items():
        (bin_dir / name).symlink_to(path)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(plane.local.admin_kubeconfig),
        "HOME": str(tmp_path_factory.mktemp("home")),
    }
    namespace = f"crgw-node-{uuid.uuid4().hex[:8]}"
    plane.core.create_namespace({"metadata": {"name": namespace}})
    plane.core.create_namespaced_secret(namespace, project_secret("acme/app"))
    repository, tag = built.rsplit(":", 1)
    values = tmp_path_factory.mktemp("values") / "values.json"
    values.write_text(json.dumps({"image": {"repository": repository, "tag": tag}}))
    found = Release(namespace, plane, env)
    found.run("helm", "install", RELEASE, str(CHART), "-n", namespace, "--values", str(values),
              "--wait", "--timeout", "5m")  # fmt: skip
    # Ready pods are not yet a routed Service: kube-proxy writes the new
    # Service's rules on its next sync.
    until(lambda: answers(*found.service_url()), "the Service routed by kube-proxy", 60)
    try:
        yield found
    finally:
        subprocess.run(
            ["helm", "uninstall", RELEASE, "-n", namespace], env=env, capture_output=True
        )
        plane.core.delete_namespace(namespace)


def test_two_replicas_ready_by_the_kubelets_probes(release: Release) -> None:
    """The kubelet runs both replicas on the node, their /readyz probe makes
    them Ready, and the Service's endpoints are exactly those two pods."""
    pods = release.pods()
    assert len(pods) == 2, [p.metadata.name for p in pods]
    for pod in pods:
        assert pod.spec.node_name == NODE_NAME
        assert ready(pod), pod.status
        (status,) = pod.status.container_statuses
        assert status.ready and status.restart_count == 0, status
        probe = pod.spec.containers[0].readiness_probe.http_get
        assert (probe.path, probe.port) == ("/readyz", "http")
        # fsGroup on the emptyDir the spool lives in, as the kubelet applies
        # it (the directory is the group's, setgid), seen from the host.
        assert pod.spec.security_context.fs_group == 10001
        assert release.plane.local is not None
        volumes = release.plane.local.state_dir / "node" / "kubelet" / "pods" / pod.metadata.uid
        spool = (volumes / "volumes" / "kubernetes.io~empty-dir" / "spool").stat()
        assert spool.st_gid == 10001 and spool.st_mode & stat.S_ISGID, oct(spool.st_mode)
    assert serving(release) == {p.status.pod_ip for p in pods}


def test_a_failing_readiness_probe_keeps_a_pod_out(release: Release) -> None:
    """A readiness probe that gets 404 keeps its (running) pod unready and
    out of the Service, while the ready replicas stay: the kubelet's probe
    decides, not the container's start."""
    apps = client.AppsV1Api(release.plane.api)
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "gateway", "readinessProbe": {"httpGet": {"path": "/no-such-path"}}}
    ]}}}}  # fmt: skip
    apps.patch_namespaced_deployment(FULLNAME, release.namespace, patch)
    try:

        def unhealthy() -> list[client.CoreV1Event]:
            events = release.plane.core.list_namespaced_event(release.namespace).items
            return [e for e in events if e.reason == "Unhealthy" and "statuscode: 404" in e.message]

        (event, *_) = until(unhealthy, "a readiness probe failing with 404", 120)
        probed = release.plane.core.read_namespaced_pod(
            event.involved_object.name, release.namespace
        )
        assert probed.status.phase == "Running" and not ready(probed)
        assert sum(ready(p) for p in release.pods()) == 2
        assert probed.status.pod_ip not in serving(release)
        assert len(serving(release)) == 2
    finally:
        release.run("kubectl", "rollout", "undo", f"deployment/{FULLNAME}", "-n", release.namespace)
        release.run("kubectl", "rollout", "status", f"deployment/{FULLNAME}", "-n",
                    release.namespace, "--timeout", "3m")  # fmt: skip
        until(
            lambda: len(release.pods()) == 2 and all(ready(p) for p in release.pods()),
            "the release back to two ready pods",
            120,
        )


def test_webhooks_through_the_service_make_builds(release: Release) -> None:
    """Webhooks sent to the Service's ClusterIP (kube-proxy's rules, reached
    from the host through the node's routes) make builds with the pods'
    projected ServiceAccount tokens, both replicas answer some, and neither
    logs a traceback."""
    host, port = release.service_url()
    builds = []
    for n in range(20):
        answer = exchange(
            port,
            "POST",
            "/events/webhook/acme/app",
            fresh(DOCKERHUB, n),
            {"Content-Type": "application/json", **BEARER},
            host=host,
        )
        assert answer.status == 200, answer.body
        builds += answer.json()["builds"]
    assert len(builds) == 20
    for build in builds:
        secret = release.plane.core.read_namespaced_secret(build, release.namespace)
        assert secret.type == "brigade.sh/build"
    logs = [
        release.plane.core.read_namespaced_pod_log(p.metadata.name, release.namespace)
        for p in release.pods()
    ]
    served = [log.count('"POST /events/webhook/acme/app') for log in logs]
    assert sum(served) == 20 and all(served), served
    # The read-only root: no traceback, no attempt to rewrite the plugin cache.
    assert not any("Traceback" in log or "plugin cache" in log for log in logs), logs


def test_the_service_account_may_get_and_create_secrets_only(release: Release) -> None:
    """The release's ServiceAccount, impersonated, is allowed exactly get and
    create on Secrets, besides the self-reviews every authenticated user may
    make (a SelfSubjectRulesReview), and neither list nor delete."""
    account = f"system:serviceaccount:{release.namespace}:{FULLNAME}"
    assert release.plane.local is not None
    api = config.new_client_from_config(str(release.plane.local.admin_kubeconfig))
    api.set_default_header("Impersonate-User", account)
    authorization = client.AuthorizationV1Api(api)
    review = authorization.create_self_subject_rules_review(
        {"spec": {"namespace": release.namespace}}
    )
    everyone = {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}
    own = [
        (sorted(r.verbs), r.api_groups, sorted(r.resources or []), r.resource_names)
        for r in review.status.resource_rules
        if not set(r.resources or []) <= everyone
    ]
    assert own == [(["create", "get"], [""], ["secrets"], None)], own
    for verb, allowed in (("get", True), ("create", True), ("list", False), ("delete", False)):
        answer = authorization.create_self_subject_access_review(
            {"spec": {"resourceAttributes": {
                "namespace": release.namespace, "verb": verb, "resource": "secrets"
            }}}
        )  # fmt: skip
        assert answer.status.allowed is allowed, (verb, answer.status)
    api.close()


def test_uninstall_leaves_nothing(release: Release) -> None:
    """`helm uninstall` removes every object of the release and its pods
    stop; only the builds (Brigade's) and the namespace's own objects stay."""
    release.run("helm", "uninstall", RELEASE, "-n", release.namespace, "--wait")
    ns = release.namespace
    core, apps = release.plane.core, client.AppsV1Api(release.plane.api)
    until(lambda: not release.pods(), "the release's pods to go", 120)
    leftovers: dict[str, Any] = {
        "deployments": apps.list_namespaced_deployment(ns).items,
        "replicasets": apps.list_namespaced_replica_set(ns).items,
        "services": core.list_namespaced_service(ns).items,
        "configmaps": [
            c for c in core.list_namespaced_config_map(ns).items
            if c.metadata.name != "kube-root-ca.crt"
        ],
        "serviceaccounts": [
            a for a in core.list_namespaced_service_account(ns).items
            if a.metadata.name != "default"
        ],
        "roles": client.RbacAuthorizationV1Api(release.plane.api).list_namespaced_role(ns).items,
        "rolebindings": client.RbacAuthorizationV1Api(
            release.plane.api
        ).list_namespaced_role_binding(ns).items,
        "pdbs": client.PolicyV1Api(release.plane.api).list_namespaced_pod_disruption_budget(
            ns
        ).items,
        "secrets": [
            s for s in core.list_namespaced_secret(ns).items
            if s.type not in ("brigade.sh/build", "brigade.sh/project")
        ],
    }  # fmt: skip
    assert not any(leftovers.values()), {
        k: [o.metadata.name for o in v] for k, v in leftovers.items()
    }
    # No EndpointSlice outlives its Service (the controller-manager removes it).
    until(
        lambda: (
            not client.DiscoveryV1Api(release.plane.api).list_namespaced_endpoint_slice(ns).items
        ),
        "the Service's EndpointSlices to go",
        60,
    )


def _running_under(directory: Path) -> list[str]:
    """The command lines that name ``directory`` (every process of a plane
    and its node does, the containers' shims included)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if entry.name.isdigit() and str(directory) in cmdline:
            found.append(cmdline)
    return found


def test_down_leaves_nothing_behind(tmp_path: Path) -> None:
    """A second plane with a node, running a pod on its bridge: `down` leaves
    no process (the pod's included), mount, network namespace, bridge, veth,
    route or iptables rule of it on the machine."""
    plane = Plane(tmp_path / "plane")
    try:
        state = plane.up(node=True)
        node = plane.node()
        assert state.node is not None
        api = plane.admin_api()
        core = client.CoreV1Api(api)
        pod = {"metadata": {"name": "sleeper"}, "spec": {"containers": [
            {"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}
        ]}}  # fmt: skip
        core.create_namespaced_pod("default", pod)
        until(
            lambda: core.read_namespaced_pod("sleeper", "default").status.phase == "Running",
            "the pod running",
            120,
        )
        pod_ip = core.read_namespaced_pod("sleeper", "default").status.pod_ip
        assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(node.network.pod_cidr)
        tasks = node.ctr("tasks", "list").stdout.splitlines()[1:]
        container_pids = [int(line.split()[1]) for line in tasks]
        assert len(container_pids) == 2, tasks  # the pod's sandbox and its container
        in_netns = node.network.in_netns
        assert (
            "crgw0"
            in subprocess.run(
                in_netns(["ip", "-o", "link"]), capture_output=True, text=True, check=True
            ).stdout
        )
        rules = subprocess.run(
            in_netns(["iptables-save"]), capture_output=True, text=True, check=True
        ).stdout
        assert "KUBE-SERVICES" in rules and node.network.kubernetes_service_ip in rules
        api.close()
    finally:
        plane.down()
    assert not _running_under(tmp_path)
    for pid in container_pids:
        assert not Path(f"/proc/{pid}").exists(), pid
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert node.network.netns not in netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert node.network.host_veth not in links
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert node.network.pod_cidr not in routes and node.network.service_cidr not in routes
    host_rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert node.network.pod_cidr not in host_rules
