"""The gateway's configuration: a frozen value read from an ini file.

Every key is documented in ``etc/brigade-crgw.ini`` and docs/configuration.rst.  Unknown
sections and keys are errors that name themselves, so a typo never silently
falls back to a default.  Precedence is command line > environment > file >
default; this module handles the file and the environment, ``tap`` applies the
command line through :meth:`Config.replace`.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attr

from . import events
from .brigade import TOKEN_KEY, is_secret_name

ALWAYS = "always"
WHEN_CONFIGURED = "when-configured"

# A DNS-1123 label, which is what a Kubernetes namespace name must be.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A Secret data key.
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


# A Secret's data may not exceed 1 MiB in all; the payload shares it with the
# other build fields and the project's script.
MAX_BODY_LIMIT = 768 * 1024


class ConfigError(Exception):
    """The configuration is wrong; the message names the key and the problem."""


def _positive_int(key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a whole number") from None
    if value < 1:
        raise ConfigError(f"{key}: must be 1 or more, not {value}")
    return value


def _body_limit(key: str, text: str) -> int:
    value = _positive_int(key, text)
    if value > MAX_BODY_LIMIT:
        raise ConfigError(
            f"{key}: {value} is too large; a build Secret holds at most 1 MiB, "
            f"so the limit is {MAX_BODY_LIMIT}"
        )
    return value


def _positive_float(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{key}: must be a positive number of seconds, not {text!r}")
    return value


def _seconds(key: str, text: str) -> float:
    """Seconds, where 0 turns the feature off."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise ConfigError(f"{key}: must be from 0 to 86400 seconds, not {text!r}")
    return value


def _share(key: str, text: str) -> float:
    """A part of a whole, more than 0 and at most 1."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a number") from None
    if not 0 < value <= 1:
        raise ConfigError(f"{key}: must be more than 0 and at most 1, not {text!r}")
    return value


def _boolean(key: str, text: str) -> bool:
    words = {
        "true": True,
        "yes": True,
        "on": True,
        "1": True,
        "false": False,
        "no": False,
        "off": False,
        "0": False,
    }
    try:
        return words[text.strip().lower()]
    except KeyError:
        raise ConfigError(f"{key}: {text!r} is not true or false") from None


def _namespace(key: str, text: str) -> str:
    if not _NAMESPACE.match(text):
        raise ConfigError(f"{key}: {text!r} is not a valid Kubernetes namespace name")
    return text


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.replace(",", " ").split())


def _event_types(key: str, text: str) -> frozenset[str]:
    chosen = frozenset(_words(text))
    unknown = sorted(chosen - events.BUILDABLE_ACTIONS)
    if unknown or not chosen:
        raise ConfigError(
            f"{key}: {', '.join(unknown) or 'nothing'} is not an event type; "
            f"choose from {', '.join(sorted(events.BUILDABLE_ACTIONS))}"
        )
    return chosen


def _token_keys(key: str, text: str) -> tuple[str, ...]:
    keys = _words(text)
    bad = [k for k in keys if not _SECRET_KEY.match(k)]
    if bad or not keys:
        raise ConfigError(f"{key}: {' '.join(bad) or 'nothing'} is not a Secret data key")
    return keys


def _require(key: str, text: str) -> str:
    if text not in (ALWAYS, WHEN_CONFIGURED):
        raise ConfigError(f"{key}: {text!r} must be {ALWAYS} or {WHEN_CONFIGURED}")
    return text


def _text(key: str, text: str) -> str:
    return text


def _endpoint(key: str, text: str) -> str:
    if not text.strip():
        raise ConfigError(f"{key}: an endpoint string such as tcp:7744 is required")
    return text.strip()


# A registry host as [registry] hosts names it: a DNS name or IPv4/bracketed
# IPv6 address, perhaps with a port.
_HOST = re.compile(
    r"^(?:[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$"
)


def _hosts(key: str, text: str) -> tuple[str, ...]:
    hosts = tuple(events.canonical_host(h) for h in _words(text))
    bad = [h for h in hosts if not _HOST.match(h)]
    if bad:
        raise ConfigError(f"{key}: {' '.join(bad)} is not a registry host name")
    return tuple(dict.fromkeys(hosts))


def _endpoints(key: str, text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for word in _words(text):
        name, equals, url = word.partition("=")
        name = events.canonical_host(name)
        parts = urlsplit(url)
        if not equals or not _HOST.match(name):
            raise ConfigError(f"{key}: {word!r} is not host=URL")
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"{key}: {url!r} is not an http:// or https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"{key}: {url!r} may hold no query, fragment or credentials")
        pairs.append((name, url.rstrip("/")))
    return tuple(pairs)


def _secret_name(key: str, text: str) -> str:
    if text and not is_secret_name(text):
        raise ConfigError(f"{key}: {text!r} is not a Secret name")
    return text


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Config:
    """Everything the gateway can be told.  Defaults are production defaults."""

    # [server]
    listen: str = "tcp:7744"
    max_body_bytes: int = 256 * 1024
    max_in_flight: int = 64
    read_timeout: float = 30.0
    max_connections: int = 1000
    max_buffered_bytes: int = 16 * 1024 * 1024
    shutdown_delay: float = 0.0
    drain_seconds: float = 30.0
    # [kubernetes]
    namespace: str = "default"
    kubeconfig: str = ""
    context: str = ""
    request_timeout: float = 10.0
    retry_seconds: float = 8.0
    threads: int = 8
    project_cache_seconds: float = 5.0
    # [gateway]
    event_types: frozenset[str] = frozenset({events.IMAGE_PUSH})
    strict: bool = False
    max_builds_per_webhook: int = 20
    annotate_payload: bool = False
    # [auth]
    require: str = ALWAYS
    token_keys: tuple[str, ...] = (TOKEN_KEY,)
    # [registry]
    hosts: tuple[str, ...] = ()
    endpoints: tuple[tuple[str, str], ...] = ()
    lookup_timeout: float = 3.0
    pull_secret: str = ""
    # [spool]
    spool_path: str = ""
    spool_max_entries: int = 10000
    spool_project_share: float = 0.5

    @property
    def spool_max_per_project(self) -> int:
        """The most builds of one project the spool holds."""
        return max(1, int(self.spool_max_entries * self.spool_project_share))

    def __attrs_post_init__(self) -> None:
        unlisted = [name for name, _ in self.endpoints if name not in self.hosts]
        if unlisted:
            raise ConfigError(
                f"[registry] endpoints: {' '.join(unlisted)} is not in [registry] hosts"
            )

    def registry_endpoints(self) -> dict[str, str]:
        """Each host the gateway may look images up in, to its base URL."""
        given = dict(self.endpoints)
        return {host: given.get(host) or events.default_endpoint(host) for host in self.hosts}

    @classmethod
    def from_string(cls, text: str, environ: Mapping[str, str] | None = None) -> Config:
        """Parse ini text, then apply the environment over it.

        :raises ConfigError: for a syntax error, an unknown section or key, or a bad value.
        """
        parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
        try:
            parser.read_string(text)
        except configparser.Error as e:
            raise ConfigError(f"not a valid ini file: {e.message.splitlines()[0]}") from None
        values: dict[str, Any] = {}
        for section in parser.sections():
            keys = _SCHEMA.get(section)
            if keys is None:
                raise ConfigError(
                    f"unknown section [{section}]; known sections: "
                    + ", ".join(f"[{s}]" for s in _SCHEMA)
                )
            for key, raw in parser.items(section):
                if key not in keys:
                    raise ConfigError(
                        f"unknown key {key!r} in [{section}]; known keys: {', '.join(keys)}"
                    )
                values[field_name(section, key)] = keys[key](f"[{section}] {key}", raw.strip())
        environ = os.environ if environ is None else environ
        if environ.get("BRIGADE_NAMESPACE"):
            # Brigade v1 gateways read their namespace from here.
            values["namespace"] = _namespace("BRIGADE_NAMESPACE", environ["BRIGADE_NAMESPACE"])
        return cls(**values)

    @classmethod
    def from_ini(cls, path: str, environ: Mapping[str, str] | None = None) -> Config:
        """Read and parse the ini file at ``path``.

        :raises ConfigError: when the file cannot be read or holds a mistake.
        """
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise ConfigError(f"cannot read {path}: {reason}") from None
        try:
            return cls.from_string(text, environ)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def replace(self, **changes: str) -> Config:
        """Apply command-line overrides, validated like the file's values."""
        checked = {}
        for option, raw in changes.items():
            section, key = _OPTIONS[option]
            checked[field_name(section, key)] = _SCHEMA[section][key](f"--{option}", raw)
        return attr.evolve(self, **checked)


_SCHEMA: dict[str, dict[str, Callable[[str, str], Any]]] = {
    "server": {
        "listen": _endpoint,
        "max_body_bytes": _body_limit,
        "max_in_flight": _positive_int,
        "read_timeout": _positive_float,
        "max_connections": _positive_int,
        "max_buffered_bytes": _positive_int,
        "shutdown_delay": _seconds,
        "drain_seconds": _positive_float,
    },
    "kubernetes": {
        "namespace": _namespace,
        "kubeconfig": _text,
        "context": _text,
        "request_timeout": _positive_float,
        "retry_seconds": _seconds,
        "threads": _positive_int,
        "project_cache_seconds": _seconds,
    },
    "gateway": {
        "event_types": _event_types,
        "strict": _boolean,
        "max_builds_per_webhook": _positive_int,
        "annotate_payload": _boolean,
    },
    "auth": {"require": _require, "token_keys": _token_keys},
    "registry": {
        "hosts": _hosts,
        "endpoints": _endpoints,
        "timeout": _positive_float,
        "pull_secret": _secret_name,
    },
    "spool": {"path": _text, "max_entries": _positive_int, "project_share": _share},
}
# Command-line overrides: option -> (section, key).
_OPTIONS = {
    "listen": ("server", "listen"),
    "namespace": ("kubernetes", "namespace"),
    "kubeconfig": ("kubernetes", "kubeconfig"),
    "spool": ("spool", "path"),
}


def field_name(section: str, key: str) -> str:
    """The :class:`Config` attribute of an ini key: the key itself, except in
    sections whose keys would be ambiguous alone (``[spool] path`` is
    ``spool_path``, ``[registry] timeout`` is ``lookup_timeout``)."""
    if section == "spool":
        return f"spool_{key}"
    return "lookup_timeout" if (section, key) == ("registry", "timeout") else key
