"""``make bench``: the gateway beside the API server it writes to.

For each CPU layout, body size and concurrency, the same API server is
driven twice by wrk, over loopback, one run after the other:

(a) *direct*: wrk POSTs the build Secret the gateway would write for such a
    push to ``/api/v1/namespaces/<ns>/secrets`` over https, with
    ``metadata.generateName``, as the gateway's own least-privilege identity
    (the token of its kubeconfig) -- the API server's own create rate;
(b) *gateway*: a fresh ``twistd -n brigade-crgw`` with the shipped
    ``etc/brigade-crgw.ini`` (only the port, namespace and kubeconfig
    changed, and ``max_body_bytes`` for bodies above it), wrk POSTing
    Docker Hub pushes that are each distinct (a repeated push is a
    redelivery and rightly makes no build).

Each run has a 1-second warm-up, then ``--duration`` measured seconds.  It
prints the table and writes it, with the machine, the method and a plot,
to ``docs/benchmark.md`` and ``docs/performance.png`` (a filtered run
writes to ``.bench/`` unless ``--out`` says otherwise).

    make bench [BENCH_ARGS="--quick --profile"]
    PYTHONPATH=. .venv/bin/python -m bench.run [--quick] [--layout pinned]
        [--concurrency 1,32] [--body 1k,64k] [--duration 5] [--profile] [--plane]
        [--set kubernetes.threads=32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import cel, processes, report, wrk
from bench.measure import (
    BODIES,
    CONCURRENCY,
    MAX_BODY_CEILING,
    WARM_UP_SECONDS,
    Bench,
    Gateways,
    Layout,
    namespace_on,
)
from bench.processes import SynCounter, say
from bench.wrk import BenchError
from devtools import ROOT
from devtools.plane import KUBERNETES_VERSION

LAYOUTS = ("pinned", "shared")


def _list(value: str, allowed: list[str]) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
    return chosen


def _setting(text: str) -> tuple[tuple[str, str], str]:
    name, equals, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not (equals and dot and section and key):
        raise argparse.ArgumentTypeError("write SECTION.KEY=VALUE, e.g. kubernetes.threads=32")
    return (section, key), value.strip()


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="only the pinned layout, c=32, 1 KiB bodies"
    )
    parser.add_argument(
        "--layout",
        type=lambda v: _list(v, list(LAYOUTS)),
        default=None,
        help="pinned and/or shared (comma-separated)",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda v: [int(c) for c in _list(v, [str(c) for c in CONCURRENCY])],
        default=None,
        help="any of 1,8,32,128",
    )
    parser.add_argument(
        "--body", type=lambda v: _list(v, list(BODIES)), default=None, help="any of 1k,64k,512k"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the gateway (py-spy) under the pinned c=32 1 KiB load",
    )
    parser.add_argument(
        "--plane", action="store_true", help="also time a warm `control-plane up` from stopped"
    )
    parser.add_argument(
        "--set",
        action="append",
        type=_setting,
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="an experiment: change the gateway's ini (e.g. kubernetes.threads=32); "
        "the output says so",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where benchmark.md and performance.png go"
        " (default: docs/ for the full matrix, else .bench/)",
    )
    args = parser.parse_args(argv)
    filtered = args.quick or any((args.layout, args.concurrency, args.body, args.set))
    if args.quick:
        args.layout, args.concurrency, args.body = ["pinned"], [32], ["1k"]
    args.layout = args.layout or list(LAYOUTS)
    args.concurrency = args.concurrency or list(CONCURRENCY)
    args.body = args.body or list(BODIES)
    if args.out is None:
        args.out = ROOT / (".bench" if filtered else "docs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    # SIGTERM unwinds like Ctrl-C: the plane's CPUs are given back, the
    # counter removed and the gateway stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _main(args)
    except BenchError as e:
        say(f"error: {e}")
        return 1


def layouts(names: list[str]) -> list[Layout]:
    """The chosen layouts this machine can have: pinned needs two CPUs."""
    usable = sorted(os.sched_getaffinity(0))
    chosen = []
    for name in names:
        if name == "shared":
            chosen.append(Layout(name))
        elif len(usable) >= 2:
            chosen.append(Layout(name, gateway_cpu=usable[0], load_cpu=usable[1]))
        else:
            say("fewer than two CPUs: no pinned layout")
    return chosen


def _main(args: argparse.Namespace) -> int:
    wrk_path = wrk.ensure_wrk()
    about = processes.machine(wrk_path)
    say(f"machine: {about}")
    plane, state = processes.plane_up(args.plane)
    about["API server"] = f"kube-apiserver {KUBERNETES_VERSION}, etcd (the local plane)"
    tmp = Path(tempfile.mkdtemp(prefix="brigade-crgw-bench-"))
    counter = SynCounter.create(processes.api_port(state))
    started = time.monotonic()
    try:
        with namespace_on(plane, state, tmp) as namespace:
            bench = Bench(
                wrk_path=wrk_path,
                duration=args.duration,
                namespace=namespace,
                gateways=Gateways.create(tmp, args.set, counter),
            )
            rows, profile = measure(bench, layouts(args.layout), args)
    except BaseException:
        say(f"the gateways' logs are kept in {tmp}")
        raise
    finally:
        if counter is not None:
            counter.close()
    shutil.rmtree(tmp, ignore_errors=True)
    about["load average at end"] = processes.load_average()
    about["the bench took"] = f"{(time.monotonic() - started) / 60:.1f} minutes"
    method = report.Method(
        pool=bench.gateways.pool,
        shipped_max_body=bench.gateways.shipped_max_body,
        raised_max_body=MAX_BODY_CEILING,
        duration=args.duration,
        warm_up=WARM_UP_SECONDS,
        counted=counter is not None,
        overrides=bench.gateways.described(),
    )
    write(args.out, report.document(about, rows, method, profile), rows)
    if profile is not None:
        print(profile)
    return 0


def measure(
    bench: Bench, chosen: list[Layout], args: argparse.Namespace
) -> tuple[list[report.Row], str | None]:
    """Every row asked for, printed as it comes; and the profile when asked."""
    rows: list[report.Row] = []
    profile = None
    pids = bench.namespace.state.pids
    for layout in chosen:
        with _placed(pids, layout):
            for body in args.body:
                for concurrency in args.concurrency:
                    say(f"{layout.name}, {body}, c={concurrency} ...")
                    row = bench.row(layout, body, concurrency)
                    rows.append(row)
                    print(report.table([row]).splitlines()[-1], flush=True)
            if args.profile and layout.name == "pinned":
                profile = bench.profile(layout)
    if args.profile and profile is None:
        pinned = layouts(["pinned"])
        if pinned:
            with _placed(pids, pinned[0]):
                profile = bench.profile(pinned[0])
    return rows, profile


@contextmanager
def _placed(pids: dict[str, int], layout: Layout) -> Iterator[None]:
    """The plane's processes on the layout's load CPU, if it has one."""
    if layout.load_cpu is None:
        yield
    else:
        with processes.pinned(pids, layout.load_cpu):
            yield


def write(out: Path, document: str, rows: list[report.Row]) -> None:
    """The table and the targets on stdout; the document and the plot in ``out``."""
    print()
    print(report.table(rows))
    target_row = report.find(rows, "pinned", "1k", 32)
    if target_row is not None:
        print(report.targets_table(target_row))
    # What a typical crGatewayFilter adds, against the CPU-ms per build of
    # the target row (else the first).
    compared = target_row or (rows[0] if rows else None)
    note = cel.per_webhook_note(compared.gateway.cpu_ms_per_build if compared else None)
    print(note)
    document = document.rstrip("\n") + "\n\n" + note + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.md").write_text(document)
    try:
        report.plot(rows, out / "performance.png")
    except ImportError:
        say("matplotlib is missing (`pip install '.[bench]'`): no plot")
    say(f"wrote {out / 'benchmark.md'} and performance.png")


if __name__ == "__main__":
    sys.exit(main())
