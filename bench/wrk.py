"""wrk, the load generator: finding it, the Lua scripts the bench gives it,
and reading its report.

Everything here but :func:`ensure_wrk` and :func:`run` is pure, so that
``tests/test_bench.py`` can check it without a cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence

import attr


class BenchError(Exception):
    """Something the bench needs is missing or failed; the message says what."""


@attr.s(frozen=True, auto_attribs=True)
class WrkResult:
    """What one wrk run reports (``wrk --latency``)."""

    requests: int
    seconds: float
    # wrk's "Non-2xx or 3xx responses": answers with a status of 400 or more.
    non_2xx: int
    # connect, read, write and timeout errors, as wrk counts them.
    socket_errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def ok(self) -> int:
        """Answers below 400 (the bench's servers send no 1xx or 3xx)."""
        return self.requests - self.non_2xx

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.M)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s*(\d+)\s*$", re.M)
_SOCKET = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.M
)


def parse(text: str) -> WrkResult:
    """Read the report ``wrk --latency`` prints.

    :raises BenchError: when the report lacks the totals or the percentiles
        (wrk failed, or was run without ``--latency``).
    """
    total = _TOTAL.search(text)
    percentiles = {m[1]: float(m[2]) * _UNITS_MS[m[3]] for m in _PERCENTILE.finditer(text)}
    if total is None or set(percentiles) != {"50", "90", "99"}:
        raise BenchError(f"not a `wrk --latency` report:\n{text.strip()}")
    non_2xx = _NON_2XX.search(text)
    socket = _SOCKET.search(text)
    errors = dict(
        zip(
            ("connect", "read", "write", "timeout"),
            (int(n) for n in socket.groups()) if socket else (0, 0, 0, 0),
            strict=True,
        )
    )
    return WrkResult(
        requests=int(total[1]),
        seconds=float(total[2]) * _UNITS_MS[total[3]] / 1000.0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=errors,
        p50_ms=percentiles["50"],
        p90_ms=percentiles["90"],
        p99_ms=percentiles["99"],
    )


def _lua_string(text: str) -> str:
    """``text`` (printable ASCII, as JSON and tokens are) as a Lua string literal."""
    if not (text.isascii() and text.isprintable()):
        raise BenchError("a Lua string here must be printable ASCII")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def direct_script(token: str, body: bytes) -> str:
    """A wrk script that POSTs the same ``body`` (a Secret with
    ``metadata.generateName``) on every request, as the bearer of ``token``."""
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer " .. {_lua_string(token)}\n'
        f"wrk.body = {_lua_string(body.decode('ascii'))}\n"
    )


# The markers a push template holds where the script puts per-request values.
PUSHED_AT = "@@PUSHED_AT@@"
TAG = "@@TAG@@"
PADDING = "@@PADDING@@"


def push_template(doc: dict[str, object], size: int, run: str) -> tuple[list[str], int]:
    """Split a Docker Hub push into the pieces between its varying parts.

    ``doc`` must hold :data:`PUSHED_AT` (as ``push_data.pushed_at``),
    :data:`TAG` and :data:`PADDING` as string values; the pushed_at marker
    loses its quotes (it becomes a number).  The padding is sized so that
    the body is ``size`` bytes (or as small as it goes) in a wrk run named
    ``run`` (see :func:`push_script`).

    :returns: the four literal pieces around pushed_at, tag and padding (in
        that order in the body) and the padding's length.
    """
    text = json.dumps(doc, separators=(",", ":"))
    text = text.replace(f'"{PUSHED_AT}"', PUSHED_AT)
    positions = sorted((text.index(marker), marker) for marker in (PUSHED_AT, TAG, PADDING))
    if [marker for _, marker in positions] != [PUSHED_AT, TAG, PADDING]:
        raise BenchError("a push template needs pushed_at, then the tag, then the padding")
    pieces, start = [], 0
    for position, marker in positions:
        pieces.append(text[start:position])
        start = position + len(marker)
    pieces.append(text[start:])
    fixed = sum(len(p) for p in pieces) + len(push_pushed_at(0)) + len(push_tag(run, 1, 1))
    return pieces, max(size - fixed, 0)


# The per-request values, as the Lua below formats them; fixed widths keep
# every body of a run the same size.
def push_pushed_at(n: int) -> str:
    return str(1_700_000_000 + n)


def push_tag(run: str, thread: int, n: int) -> str:
    return f"{run}-{thread:03d}-{n:09d}"


def push_script(path_and_query: str, pieces: Sequence[str], padding: int, run: str) -> str:
    """A wrk script whose every request is a distinct Docker Hub push.

    A repeated push would be a redelivery and rightly make no build, so each
    request gets its own ``pushed_at`` (a counter) and tag (the run, the wrk
    thread and the counter).

    :param path_and_query: the webhook URL's path and query (the token).
    :param pieces: from :func:`push_template`.
    :param run: a short word, distinct per wrk run (the tag's prefix).
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", run):
        raise BenchError(f"a run name must be a short tag-safe word, not {run!r}")
    p = [_lua_string(piece) for piece in pieces]
    return f"""-- Written by bench/wrk.py: each request is a distinct Docker Hub push.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local padding = string.rep("x", {padding})
local path = {_lua_string(path_and_query)}
local headers = {{["Content-Type"] = "application/json"}}
local n = 0

function request()
  n = n + 1
  local tag = string.format("%s-%03d-%09d", {_lua_string(run)}, thread_number, n)
  local body = {p[0]} .. tostring(1700000000 + n) .. {p[1]} .. tag .. {p[2]}
    .. padding .. {p[3]}
  return wrk.format("POST", path, headers, body)
end
"""


def ensure_wrk() -> str:
    """The path of ``wrk``, installed from Debian first when missing and root.

    :raises BenchError: when wrk is missing and cannot be installed here.
    """
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(
            "wrk (the load generator) is not installed; install it "
            "(Debian/Ubuntu: `sudo apt-get install -y wrk`) and run the bench again"
        )
    print("bench: installing wrk (apt-get install -y wrk)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run(argv, env=env).returncode != 0:
            raise BenchError(f"`{' '.join(argv)}` failed; install wrk and run the bench again")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk, but it is not on PATH")
    return found


def run(
    wrk: str,
    url: str,
    script: str,
    concurrency: int,
    seconds: float,
    cpus: str | None = None,
    threads: int = 2,
) -> WrkResult:
    """Run wrk against ``url`` with ``script`` and read its report.

    :param cpus: a ``taskset -c`` list to pin wrk to, or None.
    """
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as lua:
        lua.write(script)
        lua.flush()
        argv = [
            wrk,
            f"--threads={max(1, min(threads, concurrency))}",
            f"--connections={concurrency}",
            f"--duration={seconds:g}s",
            "--timeout=30s",
            "--latency",
            f"--script={lua.name}",
            url,
        ]
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse(done.stdout)
