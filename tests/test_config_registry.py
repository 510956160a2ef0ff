"""The [registry] section and [gateway] annotate_payload."""

from __future__ import annotations

import pytest

from brigade_crgw.config import Config, ConfigError


def test_defaults_make_no_lookups() -> None:
    """By default no host is listed, so there are no endpoints and nothing is annotated."""
    config = Config.from_string("", {})
    assert config.hosts == () and config.registry_endpoints() == {}
    assert config.lookup_timeout == 3.0 and config.pull_secret == "" and not config.annotate_payload


def test_hosts_and_endpoints() -> None:
    """Hosts get their https endpoint (Docker Hub's API host for docker.io) unless
    endpoints maps them elsewhere."""
    config = Config.from_string(
        "[registry]\nhosts = docker.io ghcr.io registry.example.com:5000 index.docker.io\n"
        "endpoints = ghcr.io=http://127.0.0.1:5001/\ntimeout = 1.5\npull_secret = regcred\n"
        "[gateway]\nannotate_payload = true\n",
        {},
    )
    assert config.hosts == ("docker.io", "ghcr.io", "registry.example.com:5000")
    assert config.registry_endpoints() == {
        "docker.io": "https://registry-1.docker.io",
        "ghcr.io": "http://127.0.0.1:5001",
        "registry.example.com:5000": "https://registry.example.com:5000",
    }
    assert (
        config.lookup_timeout == 1.5 and config.pull_secret == "regcred" and config.annotate_payload
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("hosts = https://docker.io", "hosts"),
        ("hosts = docker.io\nendpoints = docker.io", "endpoints"),
        ("hosts = docker.io\nendpoints = docker.io=ftp://mirror", "endpoints"),
        ("hosts = docker.io\nendpoints = docker.io=https://u:p@mirror", "endpoints"),
        ("hosts = docker.io\nendpoints = ghcr.io=https://mirror", "ghcr.io"),
        ("timeout = 0", "timeout"),
        ("pull_secret = Not_A_Name", "pull_secret"),
        ("proxy = x", "proxy"),
    ],
)
def test_bad_values_named(text: str, names: str) -> None:
    """Each mistake is refused with a message naming what is wrong."""
    with pytest.raises(ConfigError, match=names):
        Config.from_string(f"[registry]\n{text}\n", {})
