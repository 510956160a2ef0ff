"""Credentials for a registry: read from a pull Secret, and asked for by a 401's challenge."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import urlsplit

import attr
from twisted.logger import Logger

from ..events import canonical_host

log = Logger()

# A challenge longer than this is not read (real ones are a few hundred bytes).
MAX_CHALLENGE = 8 * 1024
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_BLANK = " \t"


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
    """The scheme and parameters of a ``WWW-Authenticate`` header.

    One pass over the text, each character looked at a bounded number of
    times (a regular expression over a registry's header backtracked
    quadratically: 30 s for 480 KB), and only its first
    :data:`MAX_CHALLENGE` characters.  What is not ``name=value`` or
    ``name="quoted value"`` is skipped up to the next comma.
    """
    scheme, _, rest = header[:MAX_CHALLENGE].strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and (rest[i] in _BLANK or rest[i] == ","):
            i += 1
        start = i
        while i < n and rest[i] in _NAME_CHARS:
            i += 1
        name, j = rest[start:i], i
        while j < n and rest[j] in _BLANK:
            j += 1
        if not name or not name[0].isalpha() or j >= n or rest[j] != "=":
            comma = rest.find(",", max(i, start + 1))
            i = n if comma < 0 else comma
            continue
        i = j + 1
        while i < n and rest[i] in _BLANK:
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            i += 1
            value = "".join(chars)
        else:
            start = i
            while i < n and rest[i] not in _BLANK and rest[i] != ",":
                i += 1
            value = rest[start:i]
        params[name.lower()] = value
    return scheme.lower(), params
