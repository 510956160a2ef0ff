"""The command line: the twistd plugin, its options and its refusals."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from twisted.python import usage

from brigade_crgw.tap import EXIT_CONFIG, Options
from devtools import ROOT
from devtools.gateway import TWISTD


def _twistd(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TWISTD), "--nodaemon", "--pidfile=", "brigade-crgw", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("[server]\nlisten = tcp:7744\nport = 1\n", "unknown key 'port' in [server]"),
        ("[nope]\n", "unknown section [nope]"),
        ("[server]\nlisten = carrier-pigeon:7\n", "is not an endpoint"),
        ("[kubernetes]\nthreads = many\n", "'many' is not a whole number"),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, ini: str, message: str) -> None:
    """A bad ini ends twistd with exit status 78 (which the systemd unit does
    not restart on) and one line naming the problem: no traceback, no usage."""
    config = tmp_path / "bad.ini"
    config.write_text(ini)
    result = _twistd("--config", str(config))
    assert result.returncode == EXIT_CONFIG == 78
    assert result.stdout == ""
    assert result.stderr.startswith("brigade-crgw: ")
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    """A missing config file is named."""
    result = _twistd("--config", str(tmp_path / "absent.ini"))
    assert result.returncode != 0
    assert "absent.ini" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_unusable_kubeconfig(tmp_path: Path) -> None:
    """A kubeconfig that cannot be loaded is refused at start, by name."""
    result = _twistd("--kubeconfig", str(tmp_path / "no.kubeconfig"))
    assert result.returncode != 0
    assert "no.kubeconfig" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_overrides_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Command line beats environment beats file."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        '{"apiVersion": "v1", "kind": "Config", "current-context": "c",'
        ' "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:9"}}],'
        ' "users": [{"name": "u", "user": {"token": "t"}}],'
        ' "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}'
    )
    ini = tmp_path / "gw.ini"
    ini.write_text(f"[kubernetes]\nnamespace = from-file\nkubeconfig = {kubeconfig}\n")
    monkeypatch.setenv("BRIGADE_NAMESPACE", "from-env")
    options = Options()
    options.parseOptions(["--config", str(ini)])
    assert options["parsed"].namespace == "from-env"
    options = Options()
    options.parseOptions(["--config", str(ini), "--namespace", "from-cli", "--listen", "tcp:0"])
    assert options["parsed"].namespace == "from-cli"
    assert options["parsed"].listen == "tcp:0"
    with pytest.raises(usage.UsageError, match="--namespace"):
        Options().parseOptions(["--config", str(ini), "--namespace", "Bad_NS"])


def test_installed_plugin_is_found(tmp_path: Path) -> None:
    """The installed package (not this tree) makes `twistd brigade-crgw` exist."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(TWISTD), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert "brigade-crgw" in result.stdout
