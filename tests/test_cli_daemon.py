"""The ``brigade-crgw`` command against the real API server and the real
daemon: tokens a webhook then uses, ``check`` on good and bad identities,
``send`` making builds, and ``spool`` reading a running gateway's spool."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from brigade_crgw.brigade import project_id
from brigade_crgw.registries import NAMES
from devtools import gateway as gateway_process
from devtools.outage import FORWARD, REFUSE, Proxy, proxied_kubeconfig
from devtools.plane import write_kubeconfig
from devtools.plane.identity import b64
from devtools.plane.processes import free_port
from devtools.projects import TOKEN, decoded, fresh
from devtools.waiting import until
from scripts.demo import demo_ini

from . import registry as R
from .conftest import Namespace
from .helpers import DOCKERHUB, builds, run_cli

pytestmark = pytest.mark.integration
_numbers = iter(range(1_000, 1_000_000))


def as_admin(namespace: Namespace) -> list[str]:
    """The operator's options: the admin's kubeconfig, the test's namespace."""
    return ["--kubeconfig", str(namespace.plane.admin_kubeconfig), "-n", namespace.name]


@pytest.fixture(scope="module")
def gateway(
    namespace: Namespace, project: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[gateway_process.Daemon]:
    """The daemon serving this module's namespace, with its restricted identity."""
    daemon = gateway_process.start(
        tmp_path_factory.mktemp("gateway"), namespace.name, namespace.gateway_kubeconfig
    )
    yield daemon
    daemon.stop()


def push(gateway: gateway_process.Daemon, token: str) -> int:
    """A fresh Docker Hub push with ``token`` in the URL: the answer's status."""
    return gateway.post(
        f"/events/webhook/acme/app?token={token}", fresh(DOCKERHUB, next(_numbers))
    ).status


def wait_for_status(gateway: gateway_process.Daemon, token: str, status: int) -> int:
    """Push until the answer is ``status`` (the gateway's project cache
    expiring); fails after 30 s."""
    until(lambda: push(gateway, token) == status, f"a push answered {status}", 30, 0.5)
    return status


def test_token_add_twice_then_revoke_the_first(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, gateway: gateway_process.Daemon
) -> None:
    """A token from ``token add --json`` triggers a build; a second keeps
    both valid; revoking the first makes it a 401 while the second works."""
    code, out, _ = run_cli(capsys, "token", "add", "acme/app", "--json", *as_admin(namespace))
    assert code == 0, out
    first = json.loads(out)
    assert first["project"] == "acme/app" and first["project_id"] == project_id("acme/app")
    assert len(first["token"]) >= 40
    assert wait_for_status(gateway, first["token"], 200) == 200

    code, out, _ = run_cli(
        capsys, "token", "add", project_id("acme/app"), "--json", *as_admin(namespace)
    )
    second = json.loads(out)["token"]
    assert wait_for_status(gateway, second, 200) == 200
    assert push(gateway, first["token"]) == 200 and push(gateway, TOKEN) == 200

    code, out, _ = run_cli(capsys, "token", "list", "acme/app", *as_admin(namespace))
    assert code == 0
    assert first["token"] not in out and second not in out and TOKEN not in out
    assert len(re.findall(r"^  [0-9a-f]{12}$", out, re.M)) == 3

    code, out, _ = run_cli(
        capsys, "token", "revoke", "acme/app", first["token"], *as_admin(namespace)
    )
    assert code == 0 and "2 token(s) left" in out, out
    assert first["token"] not in out
    assert wait_for_status(gateway, first["token"], 401) == 401
    assert push(gateway, second) == 200 and push(gateway, TOKEN) == 200


def test_token_revoke_by_fingerprint_and_unknown(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, project: str
) -> None:
    """A token is revoked by its fingerprint; an unknown one changes nothing
    and says so without echoing what was typed."""
    code, out, _ = run_cli(capsys, "token", "add", "acme/app", "--json", *as_admin(namespace))
    token = json.loads(out)["token"]
    code, out, _ = run_cli(capsys, "token", "list", "acme/app", "--json", *as_admin(namespace))
    before = json.loads(out)["tokens"]
    for typed in ("not-a-token-at-all", "short"):
        code, _, err = run_cli(capsys, "token", "revoke", "acme/app", typed, *as_admin(namespace))
        assert code == 1 and "no token or fingerprint (fingerprint " in err and typed not in err
    from brigade_crgw.cli.token import fingerprint

    code, out, _ = run_cli(
        capsys, "token", "revoke", "acme/app", fingerprint(token), *as_admin(namespace)
    )
    assert code == 0, out
    code, out, _ = run_cli(capsys, "token", "list", "acme/app", "--json", *as_admin(namespace))
    after = json.loads(out)["tokens"]
    assert after == [t for t in before if t["fingerprint"] != fingerprint(token)]
    assert len(after) == len(before) - 1


def test_token_for_a_missing_project(
    capsys: pytest.CaptureFixture[str], namespace: Namespace
) -> None:
    """A project that does not exist is one line naming it and the namespace."""
    code, out, err = run_cli(capsys, "token", "add", "acme/nothing", *as_admin(namespace))
    assert code == 1 and not out
    assert f"no project acme/nothing in namespace {namespace.name}" in err


def test_token_add_without_the_right_to_update(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, project: str
) -> None:
    """As an identity that may get but not update Secrets (the gateway's
    own), ``token add`` fails on one line naming the verb, the Secret and
    the namespace, and the project keeps its tokens."""
    before = namespace.plane.core.read_namespaced_secret(
        project_id("acme/app"), namespace.name
    ).data
    code, out, err = run_cli(
        capsys,
        "token",
        "add",
        "acme/app",
        "--kubeconfig",
        str(namespace.gateway_kubeconfig),
        "-n",
        namespace.name,
    )
    assert code == 1 and not out
    assert err.startswith(
        f"brigade-crgw token: your identity may not update Secret {project_id('acme/app')} "
        f"in namespace {namespace.name} (the API server answered 403: "
    ), err
    after = namespace.plane.core.read_namespaced_secret(project_id("acme/app"), namespace.name).data
    assert after == before


def test_token_add_keeps_a_change_made_meanwhile(
    capsys: pytest.CaptureFixture[str],
    namespace: Namespace,
    project: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another writer changing the Secret between the command's read and its
    write makes the API server refuse the write (409); the command reads
    again, and both changes are kept."""
    replace = client.CoreV1Api.replace_namespaced_secret
    writes: list[str] = []

    def after_another_writer(api: Any, name: str, ns: str, body: Any, **kwargs: Any) -> Any:
        if not writes:
            secret = namespace.plane.core.read_namespaced_secret(name, ns)
            tokens = decoded(namespace.plane.api.sanitize_for_serialization(secret))
            secret.data["crGatewayToken"] = base64.b64encode(
                f"{tokens['crGatewayToken']} meanwhile".encode()
            ).decode()
            replace(namespace.plane.core, name, ns, secret)
        writes.append(name)
        return replace(api, name, ns, body, **kwargs)

    monkeypatch.setattr(client.CoreV1Api, "replace_namespaced_secret", after_another_writer)
    code, out, err = run_cli(capsys, "token", "add", "acme/app", "--json", *as_admin(namespace))
    assert code == 0, err
    assert len(writes) == 2  # refused once, then written
    secret = namespace.plane.core.read_namespaced_secret(project_id("acme/app"), namespace.name)
    tokens = decoded(namespace.plane.api.sanitize_for_serialization(secret))["crGatewayToken"]
    assert {"meanwhile", json.loads(out)["token"]} <= set(tokens.split())


def test_namespace_from_brigade_namespace(
    capsys: pytest.CaptureFixture[str],
    namespace: Namespace,
    project: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --namespace, $BRIGADE_NAMESPACE chooses the namespace, over the context's."""
    monkeypatch.setenv("BRIGADE_NAMESPACE", namespace.name)
    kubeconfig = str(namespace.plane.admin_kubeconfig)
    code, out, _ = run_cli(capsys, "token", "list", "acme/app", "--kubeconfig", kubeconfig)
    assert code == 0 and out.startswith("acme/app ("), out


def test_kubeconfig_and_namespace_found_as_kubectl_finds_them(
    capsys: pytest.CaptureFixture[str],
    namespace: Namespace,
    project: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no options the kubeconfig is $KUBECONFIG's (the second of a list
    too) and the namespace its current context's; --context chooses
    another context, and --namespace wins over both."""
    doc = yaml.safe_load(namespace.plane.admin_kubeconfig.read_text())
    here = doc["contexts"][0]
    here["context"]["namespace"] = namespace.name
    elsewhere = {"name": "elsewhere", "context": {**here["context"], "namespace": "nowhere"}}
    doc["contexts"] = [here, elsewhere]
    doc["current-context"] = here["name"]
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(json.dumps(doc))
    monkeypatch.delenv("BRIGADE_NAMESPACE", raising=False)
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent.kubeconfig'}:{kubeconfig}")
    code, out, err = run_cli(capsys, "token", "list", "acme/app")
    assert code == 0 and out.startswith("acme/app ("), err
    code, _, err = run_cli(capsys, "token", "list", "acme/app", "--context", "elsewhere")
    assert code == 1 and "in namespace nowhere" in err, err
    code, out, _ = run_cli(
        capsys, "token", "list", "acme/app", "--context", "elsewhere", "-n", namespace.name
    )
    assert code == 0, out


# check


def test_check_passes_on_the_demo_configuration(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, tmp_path: Path
) -> None:
    """``check`` exits 0 on the ini ``make run`` writes, with its identity."""
    ini = demo_ini(tmp_path / "demo.ini", 7744, namespace.name, str(namespace.gateway_kubeconfig))
    code, out, _ = run_cli(capsys, "check", "--config", str(ini))
    assert code == 0, out
    assert "FAILED" not in out and "warning" not in out
    for check in (
        "ini",
        "kubeconfig",
        "API server",
        "may get secrets",
        "may create secrets",
        "spool",
    ):
        assert re.search(rf"^ok +{check}", out, re.M), (check, out)
    code, out, _ = run_cli(capsys, "check", "--config", str(ini), "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def _identity(namespace: Namespace, verbs: list[str], path: Path) -> Path:
    """A kubeconfig for a new ServiceAccount that may only ``verbs`` Secrets."""
    name = f"limited-{uuid.uuid4().hex[:6]}"
    api = namespace.plane.api
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace.name, {"metadata": {"name": name}})
    rbac.create_namespaced_role(
        namespace.name,
        {
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": verbs}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace.name,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace.name}],
        },
    )
    token = core.create_namespaced_service_account_token(
        name, namespace.name, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    ca = api.configuration.ssl_ca_cert
    write_kubeconfig(
        path,
        api.configuration.host,
        b64(Path(ca)) if ca else None,
        {"token": token},
        namespace.name,
    )
    return path


def _ini(path: Path, namespace: Namespace, kubeconfig: Path, **sections: dict[str, Any]) -> Path:
    values: dict[str, dict[str, Any]] = {
        "kubernetes": {"namespace": namespace.name, "kubeconfig": kubeconfig, "request_timeout": 5}
    }
    for section, more in sections.items():
        values.setdefault(section, {}).update(more)
    path.write_text(
        "".join(
            f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
            for s, keys in values.items()
        )
    )
    return path


def test_check_names_the_missing_permission(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, tmp_path: Path
) -> None:
    """An identity that may get but not create Secrets fails ``check``, on a
    line that names create, the namespace and the fix."""
    kubeconfig = _identity(namespace, ["get"], tmp_path / "get-only.kubeconfig")
    code, out, _ = run_cli(
        capsys, "check", "--config", str(_ini(tmp_path / "gw.ini", namespace, kubeconfig))
    )
    assert code == 1, out
    failed = [line for line in out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, out
    assert f"may not create secrets in namespace {namespace.name}" in failed[0]
    assert "fix: grant it create on secrets" in failed[0]
    assert re.search(r"^ok +may get secrets", out, re.M)


def test_check_warns_of_more_than_least_privilege(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, tmp_path: Path
) -> None:
    """An identity that may also list and delete Secrets passes ``check``
    with a warning for each."""
    kubeconfig = _identity(
        namespace, ["get", "create", "list", "delete"], tmp_path / "wide.kubeconfig"
    )
    code, out, _ = run_cli(
        capsys, "check", "--config", str(_ini(tmp_path / "gw.ini", namespace, kubeconfig))
    )
    assert code == 0, out
    warned = [line for line in out.splitlines() if line.startswith("warning")]
    assert [line.split(":")[0].split()[-2] for line in warned] == ["list", "delete"], out


def test_check_names_an_unreachable_api_server(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, tmp_path: Path
) -> None:
    """With nothing listening at the kubeconfig's server, ``check`` fails on
    one line naming that server, and skips what needs it."""
    doc = yaml.safe_load(namespace.gateway_kubeconfig.read_text())
    dead = f"https://127.0.0.1:{free_port()}"
    doc["clusters"][0]["cluster"]["server"] = dead
    kubeconfig = tmp_path / "dead.kubeconfig"
    kubeconfig.write_text(json.dumps(doc))
    code, out, _ = run_cli(
        capsys, "check", "--config", str(_ini(tmp_path / "gw.ini", namespace, kubeconfig))
    )
    assert code == 1, out
    failed = [line for line in out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and f"the API server at {dead} does not answer" in failed[0], out
    assert "may create" not in out


def test_check_spool_and_registries(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, tmp_path: Path
) -> None:
    """``check`` opens an existing spool and takes a write lock, and asks
    each registry host for /v2/: a real registry answers, a dead port fails."""
    from brigade_crgw.delivery.spool import Spool

    Spool.open(str(tmp_path / "spool.sqlite"), 10).close()
    registry = R.start_registry(tmp_path / "registry", "htpasswd")
    dead = f"127.0.0.1:{free_port()}"
    try:
        ini = _ini(
            tmp_path / "gw.ini",
            namespace,
            namespace.gateway_kubeconfig,
            spool={"path": tmp_path / "spool.sqlite"},
            registry={
                "hosts": f"{registry.address} {dead}",
                "endpoints": f"{registry.address}={registry.url} {dead}=http://{dead}",
                "timeout": 5,
            },
        )
        code, out, _ = run_cli(capsys, "check", "--config", str(ini))
    finally:
        registry.stop()
    assert code == 1, out
    assert re.search(r"^ok +spool: .* opens and takes a write; 0 waiting", out, re.M), out
    assert re.search(
        rf"^ok +registry {re.escape(registry.address)}: GET .* answered 401", out, re.M
    )
    failed = [line for line in out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and f"registry {dead}" in failed[0], out


# send


@pytest.mark.parametrize("name", NAMES)
def test_send_makes_a_build(
    capsys: pytest.CaptureFixture[str],
    namespace: Namespace,
    gateway: gateway_process.Daemon,
    name: str,
) -> None:
    """``send`` posts each registry's sample with the token where that
    registry puts it, through the running gateway: 200, and the build
    Secret it names exists with that registry as its provider."""
    url = f"http://127.0.0.1:{gateway.port}/events/webhook/acme/app"
    code, out, _ = run_cli(capsys, "send", name, url, "--token", TOKEN)
    assert code == 0, out
    assert out.startswith("200 OK\n")
    answer = json.loads(out.split("\n", 1)[1])
    assert answer["status"] == "Success" and answer["builds"], answer
    made = builds(namespace)
    for build in answer["builds"]:
        assert decoded(made[build])["event_provider"] == name


def test_distributions_setup_text_makes_a_build(
    capsys: pytest.CaptureFixture[str],
    namespace: Namespace,
    gateway: gateway_process.Daemon,
    tmp_path: Path,
) -> None:
    """The ``notifications:`` block that ``url --registry distribution``
    prints, put as it is into a real registry's configuration, makes that
    registry's push of an image a build."""
    base = f"http://127.0.0.1:{gateway.port}"
    code, out, _ = run_cli(
        capsys,
        "url",
        "acme/app",
        "--registry",
        "distribution",
        "--base",
        base,
        "--token",
        TOKEN,
        "--json",
    )
    assert code == 0, out
    block = yaml.safe_load(json.loads(out)["command"])
    registry = R.start_registry(tmp_path / "registry", "none", notifications=block["notifications"])
    try:
        tag = f"v{next(_numbers)}"
        R.push(R.write_layout(tmp_path / "layout", tag, {}), registry, "acme/app")
        made = until(
            lambda: [
                data
                for secret in builds(namespace).values()
                if (data := decoded(secret))["event_provider"] == "distribution"
                and f"acme/app:{tag}" in data["short_title"]
            ],
            "the registry's push as a build",
        )
    finally:
        registry.stop()
    assert len(made) == 1 and made[0]["event_type"] == "image_push", made


def test_send_without_the_token_is_refused(
    capsys: pytest.CaptureFixture[str], gateway: gateway_process.Daemon
) -> None:
    """Without --token the gateway answers 401, and ``send`` exits non-zero."""
    url = f"http://127.0.0.1:{gateway.port}/events/webhook/acme/app"
    code, out, _ = run_cli(capsys, "send", "acr", url)
    assert code == 1 and out.startswith("401 "), out


def test_send_twice_is_a_redelivery(
    capsys: pytest.CaptureFixture[str], gateway: gateway_process.Daemon
) -> None:
    """The same sample sent twice (Docker Hub's, which has an identity) is
    answered with the same build both times."""
    url = f"http://127.0.0.1:{gateway.port}/events/webhook/acme/app"
    answers = []
    for _ in range(2):
        code, out, _ = run_cli(capsys, "send", "dockerhub", url, "--token", TOKEN)
        assert code == 0, out
        answers.append(json.loads(out.split("\n", 1)[1])["builds"])
    assert answers[0] == answers[1] and len(answers[0]) == 1


# spool


def test_spool_list_show_drop_during_an_outage(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, project: str, tmp_path: Path
) -> None:
    """During an outage ``spool list`` shows the queued builds (name,
    project, age, the error) while the gateway runs; ``show`` shows one,
    ``drop`` removes one, and once Kubernetes is back only the others are made."""
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "via.kubeconfig"
    )
    daemon = gateway_process.start(
        tmp_path,
        namespace.name,
        kubeconfig,
        {"kubernetes": {"retry_seconds": 1}, "spool": {"path": tmp_path / "spool.sqlite"}},
    )
    ini = tmp_path / f"gateway-{daemon.port}.ini"
    try:
        base = next(_numbers) * 10
        assert (
            daemon.post(f"/events/webhook/acme/app?token={TOKEN}", fresh(DOCKERHUB, base)).status
            == 200
        )
        proxy.set(REFUSE)
        queued = []
        for n in range(1, 4):
            answer = daemon.post(
                f"/events/webhook/acme/app?token={TOKEN}", fresh(DOCKERHUB, base + n)
            )
            assert answer.status == 202, answer.body
            queued += answer.json()["builds"]
        code, out, _ = run_cli(capsys, "spool", "list", "--config", str(ini))
        assert code == 0, out
        text = out
        code, out, _ = run_cli(capsys, "spool", "list", "--config", str(ini), "--json")
        listed = json.loads(out)["builds"]
        assert [b["name"] for b in listed] == queued
        for build in listed:
            assert build["state"] == "waiting" and build["age_seconds"] >= 0
            assert build["project"] == project_id("acme/app")
            # Why it waits: the failure that sent it to the spool.
            assert build["error"], build
            line = next(line for line in text.splitlines() if line.startswith(build["name"]))
            assert build["project"] in line and line.endswith(build["error"]), line

        code, out, _ = run_cli(
            capsys, "spool", "show", queued[0].removeprefix("brigade-worker-"), "--config", str(ini)
        )
        assert code == 0 and "event_provider: dockerhub" in out, out
        code, out, _ = run_cli(capsys, "spool", "drop", queued[1], "--config", str(ini))
        assert code == 0, out
        code, _, err = run_cli(capsys, "spool", "drop", queued[1], "--config", str(ini))
        assert code == 1 and "no build" in err
        proxy.set(FORWARD)
        made = until(
            lambda: (found := set(builds(namespace))) >= {queued[0], queued[2]} and found,
            "the spooled builds that were not dropped",
            60,
        )
        assert {queued[0], queued[2]} <= made and queued[1] not in made
        code, out, _ = run_cli(capsys, "spool", "list", "--config", str(ini))
        assert code == 0 and "is empty" in out, out
    finally:
        proxy.set(FORWARD)
        daemon.stop()
        proxy.close()
