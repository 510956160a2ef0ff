"""The ``brigade-crgw`` command against the real API server and the real
daemon: tokens a webhook then uses, ``check`` on good and bad identities,
``send`` making builds, and ``spool`` reading a running gateway's spool."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from brigade_crgw.brigade import project_id
from brigade_crgw.cli import main
from brigade_crgw.registries import NAMES
from devtools import gateway as gateway_process
from devtools.projects import TOKEN, decoded, fresh

from .conftest import Namespace
from .helpers import DOCKERHUB, builds

pytestmark = pytest.mark.integration
_numbers = iter(range(1_000, 1_000_000))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command run in this process: its exit code, stdout and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


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
    expiring), or 30 s: the last status."""
    deadline = time.monotonic() + 30
    while (answer := push(gateway, token)) != status and time.monotonic() < deadline:
        time.sleep(0.5)
    return answer


def test_token_add_twice_then_revoke_the_first(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, gateway: gateway_process.Daemon
) -> None:
    """A token from ``token add --json`` triggers a build; a second keeps
    both valid; revoking the first makes it a 401 while the second works."""
    code, out, _ = run(capsys, "token", "add", "acme/app", "--json", *as_admin(namespace))
    assert code == 0, out
    first = json.loads(out)
    assert first["project"] == "acme/app" and first["project_id"] == project_id("acme/app")
    assert len(first["token"]) >= 40
    assert wait_for_status(gateway, first["token"], 200) == 200

    code, out, _ = run(
        capsys, "token", "add", project_id("acme/app"), "--json", *as_admin(namespace)
    )
    second = json.loads(out)["token"]
    assert wait_for_status(gateway, second, 200) == 200
    assert push(gateway, first["token"]) == 200 and push(gateway, TOKEN) == 200

    code, out, _ = run(capsys, "token", "list", "acme/app", *as_admin(namespace))
    assert code == 0
    assert first["token"] not in out and second not in out and TOKEN not in out
    assert len(re.findall(r"^  [0-9a-f]{12}$", out, re.M)) == 3

    code, out, _ = run(capsys, "token", "revoke", "acme/app", first["token"], *as_admin(namespace))
    assert code == 0 and "2 token(s) left" in out, out
    assert first["token"] not in out
    assert wait_for_status(gateway, first["token"], 401) == 401
    assert push(gateway, second) == 200 and push(gateway, TOKEN) == 200


def test_token_revoke_by_fingerprint_and_unknown(
    capsys: pytest.CaptureFixture[str], namespace: Namespace, project: str
) -> None:
    """A token is revoked by its fingerprint; an unknown one changes nothing
    and says so without echoing what was typed."""
    code, out, _ = run(capsys, "token", "add", "acme/app", "--json", *as_admin(namespace))
    token = json.loads(out)["token"]
    code, out, _ = run(capsys, "token", "list", "acme/app", "--json", *as_admin(namespace))
    before = json.loads(out)["tokens"]
    code, _, err = run(
        capsys, "token", "revoke", "acme/app", "not-a-token-at-all", *as_admin(namespace)
    )
    assert code == 1 and "no token or fingerprint" in err and "not-a-token-at-all" not in err
    from brigade_crgw.cli.token import fingerprint

    code, out, _ = run(
        capsys, "token", "revoke", "acme/app", fingerprint(token), *as_admin(namespace)
    )
    assert code == 0, out
    code, out, _ = run(capsys, "token", "list", "acme/app", "--json", *as_admin(namespace))
    after = json.loads(out)["tokens"]
    assert after == [t for t in before if t["fingerprint"] != fingerprint(token)]
    assert len(after) == len(before) - 1


def test_token_for_a_missing_project(
    capsys: pytest.CaptureFixture[str], namespace: Namespace
) -> None:
    """A project that does not exist is one line naming it and the namespace."""
    code, out, err = run(capsys, "token", "add", "acme/nothing", *as_admin(namespace))
    assert code == 1 and not out
    assert f"no project acme/nothing in namespace {namespace.name}" in err


def test_namespace_from_brigade_namespace(
    capsys: pytest.CaptureFixture[str],
    namespace: Namespace,
    project: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --namespace, $BRIGADE_NAMESPACE chooses the namespace, over the context's."""
    monkeypatch.setenv("BRIGADE_NAMESPACE", namespace.name)
    kubeconfig = str(namespace.plane.admin_kubeconfig)
    code, out, _ = run(capsys, "token", "list", "acme/app", "--kubeconfig", kubeconfig)
    assert code == 0 and out.startswith("acme/app ("), out


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
    code, out, _ = run(capsys, "send", name, url, "--token", TOKEN)
    assert code == 0, out
    assert out.startswith("200 OK\n")
    answer = json.loads(out.split("\n", 1)[1])
    assert answer["status"] == "Success" and answer["builds"], answer
    made = builds(namespace)
    for build in answer["builds"]:
        assert decoded(made[build])["event_provider"] == name


def test_send_without_the_token_is_refused(
    capsys: pytest.CaptureFixture[str], gateway: gateway_process.Daemon
) -> None:
    """Without --token the gateway answers 401, and ``send`` exits non-zero."""
    url = f"http://127.0.0.1:{gateway.port}/events/webhook/acme/app"
    code, out, _ = run(capsys, "send", "acr", url)
    assert code == 1 and out.startswith("401 "), out


def test_send_twice_is_a_redelivery(
    capsys: pytest.CaptureFixture[str], gateway: gateway_process.Daemon
) -> None:
    """The same sample sent twice (Docker Hub's, which has an identity) is
    answered with the same build both times."""
    url = f"http://127.0.0.1:{gateway.port}/events/webhook/acme/app"
    answers = []
    for _ in range(2):
        code, out, _ = run(capsys, "send", "dockerhub", url, "--token", TOKEN)
        assert code == 0, out
        answers.append(json.loads(out.split("\n", 1)[1])["builds"])
    assert answers[0] == answers[1] and len(answers[0]) == 1
