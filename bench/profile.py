"""The headline of a py-spy profile: where the gateway's active time goes.

``py-spy record --format raw`` writes one line per distinct stack,
``frame;frame;…;leaf count``, each frame ``function (file:line)``.  Without
``--idle`` only samples of a thread that was running are kept, so shares
are shares of the gateway's CPU time.
"""

from __future__ import annotations

import re
from collections import Counter

import attr

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


@attr.s(frozen=True, auto_attribs=True)
class Profile:
    samples: int
    # (function, share of samples where it was the running frame)
    self_time: list[tuple[str, float]]
    # (area, share of samples with any frame in it): a package, or a few
    # operations worth naming (TLS handshakes).
    areas: list[tuple[str, float]]


def _where(file: str) -> str:
    """A frame's module in short: the package for installed code, the
    module for the standard library, the path inside this project."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in file:
            return file.split(marker, 1)[1]
    match = re.search(r"/lib/python3\.\d+/(.*)$", file)
    if match:
        return match[1]
    match = re.search(r"(brigade_crgw/.*)$", file)
    # py-spy already shortens most paths to the package or module.
    return match[1] if match else file


def _area(where: str) -> str:
    top = where.lstrip("/").split("/", 1)[0]
    if top.endswith(".py"):
        top = top[:-3]
    return top


def frames(line: str) -> tuple[list[tuple[str, str]], int] | None:
    """One raw line's frames (function, short module) and its count."""
    stack, _, count = line.rstrip().rpartition(" ")
    if not stack or not count.isdigit():
        return None
    out = []
    for frame in stack.split(";"):
        # --threads and --subprocesses add roots that are not code.
        if frame.startswith(("thread (", "process ")):
            continue
        match = _FRAME.match(frame)
        if match:
            out.append((match["function"], _where(match["file"])))
        else:
            out.append((frame, ""))
    return out, int(count)


def summarise(raw: str, top: int = 8) -> Profile:
    """The functions that ran most and the areas that took most samples."""
    total = 0
    leaves: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for line in raw.splitlines():
        parsed = frames(line)
        if parsed is None:
            continue
        stack, count = parsed
        total += count
        if stack:
            function, where = stack[-1]
            leaves[f"{function} ({where})" if where else function] += count
        seen = {_area(w) for _, w in stack if w}
        if any(f == "do_handshake" for f, _ in stack):
            seen.add("TLS handshakes (ssl do_handshake)")
        for area in seen:
            areas[area] += count
    if not total:
        return Profile(0, [], [])
    return Profile(
        total,
        [(name, n / total) for name, n in leaves.most_common(top)],
        [(name, n / total) for name, n in areas.most_common(top + 4)],
    )


def markdown(profile: Profile) -> str:
    """The headline as two short markdown lists."""
    if not profile.samples:
        return "py-spy recorded no active samples.\n"
    lines = [f"{profile.samples} active samples.", "", "Running frame (self time):", ""]
    lines += [f"- {share:.0%} `{name}`" for name, share in profile.self_time]
    lines += ["", "Samples with any frame in (inclusive; they overlap):", ""]
    lines += [f"- {share:.0%} {name}" for name, share in profile.areas]
    return "\n".join(lines) + "\n"
