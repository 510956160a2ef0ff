"""The bench's results: one :class:`Row` per layout, body and concurrency,
the markdown table, the targets, and the plot.  Pure, but for the plot's
matplotlib."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attr

from .wrk import WrkResult


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Run:
    """One measured wrk run, and the build Secrets counted in the
    namespace over it."""

    wrk: WrkResult
    secrets: int


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class GatewayRun(Run):
    """A run against a fresh gateway, and what the kernel says of the
    gateway process."""

    # User + system CPU time over the measured run.
    cpu_ms: float
    # VmHWM over its whole life.
    rss_mib: float
    # TCP connections it opened to the API server over its life (warm-up
    # and run); None when they could not be counted.
    connections: int | None

    @property
    def cpu_share(self) -> float:
        """CPU time over the run's wall time (1.0 = one core)."""
        seconds = self.wrk.seconds
        return self.cpu_ms / (seconds * 1000.0) if seconds else 0.0

    @property
    def cpu_ms_per_build(self) -> float:
        return self.cpu_ms / self.secrets if self.secrets else 0.0


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Row:
    """The API server and the gateway at one layout, body size and
    concurrency: the API server creating the build Secret itself, then the
    gateway (with ``pool`` threads) making it from a push."""

    layout: str
    body: str
    concurrency: int
    direct: Run
    gateway: GatewayRun
    pool: int

    @property
    def ratio(self) -> float:
        """The gateway's builds/s over the API server's."""
        direct = self.direct.wrk.ok_per_second
        return self.gateway.wrk.ok_per_second / direct if direct else 0.0


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _latencies(result: WrkResult) -> str:
    return " / ".join(_ms(v) for v in (result.p50_ms, result.p90_ms, result.p99_ms))


def _answers(run: Run) -> str:
    """2xx answers and Secrets counted: equal, or the difference (requests
    still in flight when wrk stopped may have made their build)."""
    if run.secrets == run.wrk.ok:
        return f"{run.wrk.ok}"
    return f"{run.wrk.ok} ({run.secrets})"


def _errors(result: WrkResult) -> str:
    socket = sum(result.socket_errors.values())
    return f"{result.non_2xx}" + (f" (+{socket} socket)" if socket else "")


HEADER = (
    "| layout | body | c "
    "| API server builds/s | gateway builds/s | ratio "
    "| API server p50 / p90 / p99 ms | gateway p50 / p90 / p99 ms "
    "| non-2xx API server / gateway "
    "| 2xx (Secrets, when not equal) API server / gateway "
    "| gateway peak RSS MiB | gateway CPU-ms / build (share of a core) "
    "| connections opened (pool) |"
)


def table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table."""
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for r in rows:
        direct, gateway = r.direct.wrk, r.gateway.wrk
        connections = "-" if r.gateway.connections is None else str(r.gateway.connections)
        lines.append(
            f"| {r.layout} | {r.body} | {r.concurrency} "
            f"| {direct.ok_per_second:.0f} | {gateway.ok_per_second:.0f} "
            f"| {f'{r.ratio:.0%}' if direct.ok else 'n/a'} "
            f"| {_latencies(direct)} | {_latencies(gateway)} "
            f"| {_errors(direct)} / {_errors(gateway)} "
            f"| {_answers(r.direct)} / {_answers(r.gateway)} "
            f"| {r.gateway.rss_mib:.1f} "
            f"| {r.gateway.cpu_ms_per_build:.2f} ({r.gateway.cpu_share:.0%}) "
            f"| {connections} ({r.pool}) |"
        )
    return "\n".join(lines) + "\n"


@attr.s(frozen=True, auto_attribs=True)
class Target:
    name: str
    met: bool
    measured: str


RSS_TARGET_MIB = 80.0


def targets(row: Row) -> list[Target]:
    """Issue 8's targets, checked on a row (they are set for pinned, c=32, 1 KiB)."""
    direct, gateway, connections = row.direct.wrk, row.gateway.wrk, row.gateway.connections
    return [
        Target(
            "builds/s ≥ 85 % of the API server's",
            row.ratio >= 0.85,
            f"{gateway.ok_per_second:.0f} of {direct.ok_per_second:.0f} ({row.ratio:.0%})",
        ),
        Target(
            "p99 ≤ 1.5 x the API server's",
            gateway.p99_ms <= 1.5 * direct.p99_ms,
            f"{_ms(gateway.p99_ms)} ms against {_ms(direct.p99_ms)} ms "
            f"({gateway.p99_ms / direct.p99_ms if direct.p99_ms else 0:.1f} x)",
        ),
        Target(
            "no non-2xx answers",
            gateway.non_2xx == 0 and not any(gateway.socket_errors.values()),
            _errors(gateway),
        ),
        Target(
            f"peak RSS ≤ {RSS_TARGET_MIB:.0f} MiB",
            row.gateway.rss_mib <= RSS_TARGET_MIB,
            f"{row.gateway.rss_mib:.1f} MiB",
        ),
        Target(
            "connections opened ≤ the pool size",
            connections is not None and connections <= row.pool,
            f"{'not counted' if connections is None else connections} (pool {row.pool})",
        ),
    ]


def targets_table(row: Row) -> str:
    lines = ["| target | measured | met |", "|---|---|---|"]
    for t in targets(row):
        lines.append(f"| {t.name} | {t.measured} | {'yes' if t.met else '**no**'} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], path: Path) -> None:
    """builds/s and p99 against concurrency, the gateway beside the API
    server, one column per layout, one colour per body size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = list(dict.fromkeys(r.layout for r in rows))
    bodies = list(dict.fromkeys(r.body for r in rows))
    colours = dict(zip(bodies, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=False))
    figure, axes = plt.subplots(
        2, len(layouts), figsize=(6 * len(layouts), 8), squeeze=False, sharex=True
    )
    for column, layout in enumerate(layouts):
        rate, p99 = axes[0][column], axes[1][column]
        for body in bodies:
            chosen = sorted(
                (r for r in rows if r.layout == layout and r.body == body),
                key=lambda r: r.concurrency,
            )
            if not chosen:
                continue
            xs = [r.concurrency for r in chosen]
            colour = colours.get(body)
            for axis, direct, gateway in (
                (
                    rate,
                    [r.direct.wrk.ok_per_second for r in chosen],
                    [r.gateway.wrk.ok_per_second for r in chosen],
                ),
                (
                    p99,
                    [r.direct.wrk.p99_ms for r in chosen],
                    [r.gateway.wrk.p99_ms for r in chosen],
                ),
            ):
                axis.plot(xs, direct, "--o", color=colour, label=f"API server, {body}")
                axis.plot(xs, gateway, "-s", color=colour, label=f"gateway, {body}")
        rate.set_title(f"{layout} CPUs")
        rate.set_ylabel("builds/s")
        p99.set_ylabel("p99 latency (ms)")
        p99.set_yscale("log")
        p99.set_xlabel("concurrent connections (wrk)")
        levels = sorted({r.concurrency for r in rows})
        rate.set_yscale("log")
        for axis in (rate, p99):
            axis.set_xscale("log", base=2)
            axis.set_xticks(levels, [str(c) for c in levels])
            axis.grid(True, which="both", alpha=0.3)
        rate.legend(fontsize="small")
    figure.suptitle("brigade-crgw beside the API server: distinct Docker Hub pushes")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def find(rows: Sequence[Row], layout: str, body: str, concurrency: int) -> Row | None:
    for row in rows:
        if (row.layout, row.body, row.concurrency) == (layout, body, concurrency):
            return row
    return None


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Method:
    """How the rows were measured, as the document explains it."""

    pool: int
    shipped_max_body: int
    raised_max_body: int
    duration: float
    warm_up: float
    # Whether the connections to the API server were counted (root, nftables).
    counted: bool
    # An experiment's changes to the shipped ini, as ``[section] key = value``.
    overrides: Sequence[str] = ()


def document(
    machine: dict[str, str], rows: Sequence[Row], method: Method, profile: str | None
) -> str:
    """``docs/benchmark.md``, a page of the docs site: the machine, the
    method, the table, the targets, the plot and the profile's headline."""
    pool, duration, warm_up = method.pool, method.duration, method.warm_up
    shipped_max_body, raised_max_body = method.shipped_max_body, method.raised_max_body
    overrides = method.overrides
    parts = [
        "# Performance: the gateway beside the API server",
        "",
        "Written by `make bench` (`bench/run.py`); rerun it on your own machine.",
        "These are one run's figures on a shared machine, not guarantees, and no",
        "test asserts a timing.",
        "",
        "## The machine",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        "The load average counts every process on the machine: when it is well",
        "above the number of CPUs, other work shared them and the figures are noisy.",
        "",
        "## What is measured",
        "",
        "Each row is two runs of [wrk](https://github.com/wg/wrk) against the same",
        "local kube-apiserver and etcd (`scripts/control-plane`), one after the other:",
        "",
        "- **API server**: wrk POSTs, over https, the build Secret the gateway would",
        "  write for such a push, with `metadata.generateName`, as the gateway's own",
        "  least-privilege identity (the ServiceAccount token of its kubeconfig).",
        "  This is the API server's own rate of creating that Secret.",
        "- **gateway**: a fresh `twistd -n brigade-crgw` with the shipped",
        "  `etc/brigade-crgw.ini` (only the port, namespace, kubeconfig and the spool",
        "  file's directory changed;",
        f"  `[kubernetes] threads = {pool}`), and wrk POSTing Docker Hub pushes to",
        "  `/events/webhook/bench/app?token=…`.  A Lua script makes every request a",
        "  distinct push (its own `pushed_at` and tag): a repeated push is a",
        "  redelivery and rightly makes no build.",
        "",
        f"Each run has a {warm_up:g}-second warm-up, then {duration:g} measured seconds.",
        "Bodies are about 1 KiB, 64 KiB and 512 KiB (the push padded with one extra",
        f"field).  The gateway's `max_body_bytes` is {shipped_max_body} by default, so for",
        f"bodies above that (the 512k rows) the bench sets it to {raised_max_body}.",
        "At c=128 the shipped `max_in_flight = 64` answers the excess with 503:",
        "that is the gateway's overload answer, and shows as non-2xx.",
        "",
        "Layouts: **shared**, every process free to use every CPU; **pinned**, the",
        "gateway alone on CPU 0 (`taskset -c 0`), and kube-apiserver, etcd and wrk",
        "on CPU 1 (the running plane's threads moved with `taskset -a -p -c 1 PID`,",
        "and moved back after).  On a 2-core machine the pinned layout is the fair",
        "comparison: the gateway cannot take the API server's CPU, or the reverse.",
        "",
        "Columns:",
        "",
        "- **builds/s**: 2xx answers per measured second.  Every 2xx means a build",
        "  Secret exists, and the bench checks it: it counts the Secrets in the",
        "  namespace before and after (`limit=1` and `remainingItemCount`, once the",
        "  count stops moving).  When the two differ, the cell shows",
        "  `2xx (Secrets)`: requests still in flight when wrk stopped made builds",
        "  without wrk reading their answer.",
        "- **ratio**: the gateway's builds/s over the API server's, same row (n/a",
        "  when no direct request finished within the run: 128 connections each",
        "  sending 512 KiB can take longer than the run on one loaded core).",
        "- **p50 / p90 / p99**: wrk's latency distribution (`--latency`).",
        "- **non-2xx**: answers with status 400 or above (wrk's count), plus socket",
        "  errors if any.",
        "- **peak RSS**: the gateway's `VmHWM` (`/proc/PID/status`) at the end of the",
        "  run, over its whole life (start-up, warm-up and run).",
        "- **CPU-ms / build**: the gateway's user + system time over the measured",
        "  run (`/proc/PID/stat`), over the builds it made; in brackets, that time",
        "  over the run's wall time (100 % = one core busy all along).",
        "- **connections opened**: TCP connections the gateway opened to the API",
        "  server over its whole life, counted by the kernel, not by the gateway: the",
        "  gateway runs with a group ID of its own (`setpriv --regid`), and an",
        "  nftables rule on the output hook counts SYN packets (without ACK) from",
        "  sockets of that group to 127.0.0.1 on the API server's port.  The",
        "  target is at most the pool size (in brackets), which means that steady",
        "  state opens none.",
    ]
    if overrides:
        parts += [
            "",
            "**An experiment**: this run changed the shipped ini with "
            + ", ".join(f"`{o}`" for o in overrides)
            + ".",
        ]
    if not method.counted:
        parts += ["", "Connections were **not counted** in this run (no root, or no nftables)."]
    parts += ["", "## Results", "", table(rows), "![the plot](performance.png)", ""]
    target_row = find(rows, "pinned", "1k", 32)
    if target_row is not None:
        parts += [
            "## Targets (pinned, c=32, 1 KiB)",
            "",
            targets_table(target_row),
        ]
    if profile is not None:
        parts += [
            "## Where the gateway's time goes",
            "",
            "Two py-spy samplers (`record --threads --nonblocking`, 100 Hz) on a",
            "gateway under the pinned c=32 1 KiB load, in a separate run of its own",
            "(the profilers cost time, so that run is not in the table).  The first,",
            "without `--idle`, keeps samples of threads that were running or ready to",
            "run: on a busy machine a thread woken from a socket read may wait for a",
            "CPU in that frame, so read-like frames include some of that wait.  The",
            "second (`--gil`) keeps only the thread holding the GIL: where the",
            "gateway's Python code spends its time (C code that releases the GIL,",
            "such as TLS, is not in it).",
            "",
            profile,
        ]
    return "\n".join(parts)
