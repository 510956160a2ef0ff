"""The ``brigade-crgw`` command's parts that need no API server: every verb's
help, ``url`` for every registry, the samples ``send`` posts, and the
credentials it presents (the inverse of what the gateway checks)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from brigade_crgw.cli import VERBS, parser
from brigade_crgw.delivery.auth import METHODS, Presented, matches, present
from brigade_crgw.registries import NAMES, REGISTRIES, decode
from devtools import ROOT

from .helpers import run_cli

BASE = "https://gw.example.com"
URL = f"{BASE}/events/webhook/acme/app"


def _paths(command: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every verb and action of the command line, by what one types."""
    found = [list(path)]
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _paths(sub, (*path, name))
    return found


@pytest.mark.parametrize("path", _paths(parser()), ids=lambda p: " ".join(p) or "top")
def test_help_everywhere(capsys: pytest.CaptureFixture[str], path: list[str]) -> None:
    """Every verb and action answers --help with its usage, and exits 0."""
    code, out, _ = run_cli(capsys, *path, "--help")
    assert code == 0
    assert out.startswith(f"usage: brigade-crgw {' '.join(path)}".rstrip())


@pytest.mark.parametrize("name", NAMES)
def test_url_for_every_registry(capsys: pytest.CaptureFixture[str], name: str) -> None:
    """``url`` prints each registry's form with the URL and the token written
    in where that registry takes it, and no placeholder of its own left."""
    code, out, _ = run_cli(
        capsys, "url", "acme/app", "--registry", name, "--base", BASE, "--token", "t0k"
    )
    assert code == 0, out
    setup = next(r for r in REGISTRIES if r.name == name).setup
    assert out.startswith(f"{setup.title} ({name})")
    if setup.auth == "query-token":
        assert f"{URL}?token=t0k" in out
    else:
        assert URL in out and "t0k" in out and "token=t0k" not in out.split("Token:")[0]
    for placeholder in ("<url>", "<token-url>", "<token>"):
        assert placeholder not in out


def test_url_json_and_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    """``url --json`` is one object; without --token, ``<token>`` stays for the operator."""
    code, out, _ = run_cli(
        capsys, "url", "acme/app", "--registry", "acr", "--base", BASE + "/", "--json"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["registry"] == "acr" and doc["url"] == URL
    assert '--uri "https://gw.example.com/events/webhook/acme/app"' in doc["command"]
    assert "Authorization=Bearer <token>" in doc["command"]


def test_url_refuses_an_unknown_registry(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown registry name is a usage error that lists the known ones."""
    code, _, err = run_cli(capsys, "url", "acme/app", "--registry", "nope", "--base", BASE)
    assert code == 2 and "dockerhub" in err


@pytest.mark.parametrize("method", METHODS)
def test_present_is_what_the_gateway_accepts(method: str) -> None:
    """What ``send`` presents for each method is proved by the gateway's own
    check as that method, and a wrong token is not."""
    body = b'{"x": 1}'
    headers, query = present(method, "right-token", body)
    presented = Presented({k.lower(): v for k, v in headers.items()}, query, body)
    assert matches([b"right-token"], presented) == method
    assert matches([b"wrong-token"], presented) is None


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.name)
def test_every_registry_has_a_setup_and_a_sample_push(registry: object) -> None:
    """Each registry's setup says how the token travels, in a way the gateway
    checks, and its shipped sample decodes as that registry's image push."""
    setup = registry.setup  # type: ignore[attr-defined]
    assert setup.auth in METHODS
    delivery = decode(setup.sample_body(), setup.headers)
    assert delivery.registry == registry.name  # type: ignore[attr-defined]
    assert "image_push" in [event.action for event in delivery.events]


def test_the_command_imports_no_reactor_nor_kubernetes() -> None:
    """Importing the command and running ``url`` loads neither Twisted's
    reactor nor the Kubernetes client."""
    code = (
        "import sys\n"
        "from brigade_crgw.cli import main\n"
        "main(['url', 'acme/app', '--registry', 'harbor', '--base', 'http://gw'])\n"
        "heavy = [m for m in ('twisted.internet.reactor', 'kubernetes') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Harbor (harbor)" in done.stdout


def test_installed_command() -> None:
    """``pip install .`` puts a ``brigade-crgw`` executable beside python."""
    command = Path(sys.executable).parent / "brigade-crgw"
    done = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for verb in VERBS:
        assert verb.name in done.stdout


def test_check_names_a_bad_ini_listen_and_kubeconfig(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``check`` fails on one line for an ini with an unknown key; for a bad
    listen string and a missing kubeconfig, one line each, naming them."""
    ini = tmp_path / "gw.ini"
    ini.write_text("[server]\nlisten = tcp:7744\nlisen = tcp:1\n")
    code, out, _ = run_cli(capsys, "check", "--config", str(ini))
    assert code == 1
    assert out.splitlines() == [
        f"FAILED   ini: {ini}: unknown key 'lisen' in [server]; known keys: "
        + out.split("known keys: ")[1].split(";")[0]
        + "; fix: correct the ini (etc/brigade-crgw.ini documents every key)"
    ]
    missing = tmp_path / "missing.kubeconfig"
    ini.write_text(f"[server]\nlisten = tcp:port\n[kubernetes]\nkubeconfig = {missing}\n")
    code, out, _ = run_cli(capsys, "check", "--config", str(ini), "--json")
    assert code == 1
    failed = {c["check"]: c for c in json.loads(out)["checks"] if c["status"] == "FAILED"}
    assert set(failed) == {"listen", "kubeconfig"}, out
    assert "'tcp:port' is not an endpoint" in failed["listen"]["message"]
    assert str(missing) in failed["kubeconfig"]["message"] and failed["kubeconfig"]["fix"]
