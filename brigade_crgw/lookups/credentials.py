"""Credentials for a registry: read from a pull Secret, and asked for by a 401's challenge."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from urllib.parse import urlsplit

import attr
from twisted.logger import Logger

from ..events import canonical_host

log = Logger()

_CHALLENGE_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


@attr.s(frozen=True, auto_attribs=True)
class Credential:
    """A user name and password (or token) for one registry."""

    username: str
    password: str = attr.ib(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def fingerprint(self) -> str:
        """Tells credentials apart in cache keys without holding them."""
        raw = f"{self.username}\0{self.password}".encode()
        return hashlib.sha256(raw).hexdigest()[:16]


def read_dockerconfigjson(raw: bytes | str) -> dict[str, Credential]:
    """The credentials in a ``kubernetes.io/dockerconfigjson`` Secret's
    ``.dockerconfigjson``, by canonical host.  Entries it cannot read are
    left out; a document it cannot read at all gives nothing."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return {}
    found: dict[str, Credential] = {}
    for key, entry in auths.items():
        if not isinstance(key, str) or not isinstance(entry, dict):
            continue
        # Keys are host names, or URLs such as https://index.docker.io/v1/.
        host = urlsplit(key if "://" in key else f"//{key}").netloc
        username, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                continue
            username, _, password = decoded.partition(":")
        if isinstance(username, str) and isinstance(password, str) and username and host:
            found[canonical_host(host)] = Credential(username, password)
    return found


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme and parameters of a ``WWW-Authenticate`` header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
    return scheme.lower(), params
