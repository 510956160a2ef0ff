"""The ini file, the environment and command-line overrides."""

from __future__ import annotations

from pathlib import Path

import attr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from brigade_crgw.config import Config, ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_ini_is_the_defaults() -> None:
    """etc/brigade-crgw.ini documents exactly the built-in defaults, except
    that it turns the spool on."""
    shipped = Config.from_ini(str(ROOT / "etc" / "brigade-crgw.ini"), {})
    assert shipped == attr.evolve(Config(), spool_path="/var/lib/brigade-crgw/spool.sqlite")


def test_values_are_read() -> None:
    """Every section's keys are parsed into typed values."""
    config = Config.from_string(
        "[server]\nlisten = tcp:8080\nmax_body_bytes = 1000\n"
        "[kubernetes]\nnamespace = brigade\nrequest_timeout = 2.5\nthreads = 3\n"
        "[gateway]\nevent_types = image_push, chart_push\nstrict = yes\n"
        "[auth]\nrequire = when-configured\ntoken_keys = crGatewayToken genericGatewaySecret\n",
        {},
    )
    assert config.listen == "tcp:8080"
    assert config.max_body_bytes == 1000
    assert (config.namespace, config.request_timeout, config.threads) == ("brigade", 2.5, 3)
    assert config.event_types == {"image_push", "chart_push"}
    assert config.strict is True
    assert config.require == "when-configured"
    assert config.token_keys == ("crGatewayToken", "genericGatewaySecret")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sever]\nlisten = tcp:1\n", "unknown section [sever]"),
        ("[server]\nlisen = tcp:1\n", "unknown key 'lisen' in [server]"),
        (
            "[server]\nmax_body_bytes = lots\n",
            "[server] max_body_bytes: 'lots' is not a whole number",
        ),
        ("[server]\nmax_body_bytes = 2000000\n", "too large"),
        ("[server]\nmax_in_flight = 0\n", "must be 1 or more"),
        ("[server]\nlisten =\n", "endpoint string"),
        ("[kubernetes]\nnamespace = Not_Valid\n", "not a valid Kubernetes namespace"),
        ("[kubernetes]\nrequest_timeout = -1\n", "positive number of seconds"),
        ("[kubernetes]\nrequest_timeout = nan\n", "positive number of seconds"),
        ("[gateway]\nevent_types = image_pull\n", "image_pull is not an event type"),
        ("[gateway]\nstrict = maybe\n", "not true or false"),
        ("[auth]\nrequire = sometimes\n", "must be always or when-configured"),
        ("[auth]\ntoken_keys = a/b\n", "not a Secret data key"),
        ("listen = tcp:1\n", "not a valid ini file"),
        ("[kubernetes]\nretry_seconds = -1\n", "must be from 0 to 86400 seconds"),
        ("[kubernetes]\nretry_seconds = inf\n", "must be from 0 to 86400 seconds"),
        ("[kubernetes]\nretry_seconds = soon\n", "'soon' is not a number of seconds"),
        ("[spool]\nmax_entries = 0\n", "[spool] max_entries: must be 1 or more"),
        ("[spool]\nsize = 1\n", "unknown key 'size' in [spool]"),
    ],
)
def test_mistakes_are_named(text: str, message: str) -> None:
    """Each kind of mistake is refused with a message naming it."""
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Config.from_string(text, {})


def test_environment_over_file() -> None:
    """BRIGADE_NAMESPACE overrides the file, as in Brigade v1."""
    config = Config.from_string("[kubernetes]\nnamespace = a\n", {"BRIGADE_NAMESPACE": "b"})
    assert config.namespace == "b"
    with pytest.raises(ConfigError, match="BRIGADE_NAMESPACE"):
        Config.from_string("", {"BRIGADE_NAMESPACE": "B!"})


def test_command_line_over_environment() -> None:
    """replace() applies overrides with the same checks as the file."""
    config = Config.from_string("", {"BRIGADE_NAMESPACE": "b"}).replace(namespace="c")
    assert config.namespace == "c"
    with pytest.raises(ConfigError, match="--namespace"):
        config.replace(namespace="C C")


def test_retry_and_spool_keys() -> None:
    """[kubernetes] retry_seconds (0 allowed) and [spool] become their fields;
    --spool overrides the path, and an empty --spool turns the spool off."""
    config = Config.from_string(
        "[kubernetes]\nretry_seconds = 0\n[spool]\npath = /tmp/s.sqlite\nmax_entries = 5\n", {}
    )
    assert (config.retry_seconds, config.spool_path, config.spool_max_entries) == (
        0.0,
        "/tmp/s.sqlite",
        5,
    )
    assert config.replace(spool="/x/y.sqlite").spool_path == "/x/y.sqlite"
    assert config.replace(spool="").spool_path == ""
    assert Config().spool_path == "" and Config().retry_seconds == 8.0


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is named in the error."""
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.ini"):
        Config.from_ini(str(tmp_path / "nope.ini"), {})


@given(st.text())
def test_any_text_parses_or_is_refused(text: str) -> None:
    """No ini text makes the parser raise anything but ConfigError."""
    try:
        Config.from_string(text, {})
    except ConfigError:
        pass
