"""Text from a sender, made safe to show: in a log line, in a build title.

A payload chooses its repository and tag; nothing in them may start a new
log record (``\\r``, ``\\n``), move a terminal's cursor (ESC sequences) or
reverse the text shown (bidirectional overrides).  Such characters are
written as escapes instead, and names longer than a registry allows are cut
with the cut marked.
"""

from __future__ import annotations

import unicodedata

# The OCI distribution spec: a tag is at most 128 characters; Docker and
# most registries cap a repository name (with its namespace) at 255.
MAX_REPOSITORY = 255
MAX_TAG = 128
# Marks a cut, and counts in the length of what is kept.
CUT = "…"

# Control characters (Cc), format characters such as bidirectional
# overrides and zero-width joiners (Cf), line and paragraph separators
# (Zl, Zp), and lone surrogates (Cs).
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every control, format or separator character escaped
    (``\\r`` becomes the four characters ``\\x0d``); a backslash is doubled
    so that an escape cannot be forged."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_shown(char) for char in text)


def _shown(char: str) -> str:
    if char == "\\":
        return "\\\\"
    return _escape(char) if unicodedata.category(char) in _UNSAFE else char


def cut(text: str, limit: int) -> str:
    """``text``, or its first characters and :data:`CUT` when it is longer
    than ``limit``; the result is never longer than ``limit``."""
    if len(text) <= limit:
        return text
    return text[: limit - len(CUT)] + CUT


def repository(name: str) -> str:
    """A repository name, safe to show."""
    return printable(cut(name, MAX_REPOSITORY))


def tag(name: str) -> str:
    """A tag, safe to show."""
    return printable(cut(name, MAX_TAG))
