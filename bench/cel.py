"""The two CEL libraries on PyPI, side by side, on this machine.

``crGatewayFilter`` (issue 19) needs a CEL library.  Two are on PyPI:
``cel-python`` (module ``celpy``, pure Python, a lark grammar) and
``common-expression-language`` (module ``cel``, Rust bindings).  For each
one installed this prints:

- what the import adds: wall time and resident memory (each in a fresh
  interpreter, so that one library's import does not count for the other);
- the time to compile each of the documented filters;
- the time per evaluation of each, against the ``brigade_crgw`` object that
  ``annotate_payload`` builds for a realistic push (a fresh activation each
  time, as each webhook makes its own);
- conformance: a table of expressions over that object, each with the
  answer the CEL specification gives (a value, or an error), and what the
  library said.

- with ``--worst``: how long the slowest expressions we could write take,
  under the guards ``crGatewayFilter`` applies (4 KiB, comprehensions not
  nested, no ``map``/``filter``) and without them: the library holds the
  GIL while it evaluates, so this is how long a filter can hold the gateway.

- with ``--per-webhook`` (and ``make bench``, after its table): what each
  documented filter costs a webhook in the gateway's own code
  (:func:`brigade_crgw.delivery.filters.select` on the bench's Docker Hub
  push, the compiled program from the cache), beside what a webhook costs
  the gateway in all (its CPU-ms per build, which ``make bench`` measures).

    make bench-cel                        # both libraries, in build/cel-bench
    python -m bench.cel [--library celpy|cel] [--rounds N] [--worst] [--json]
    PYTHONPATH=. .venv/bin/python -m bench.cel --per-webhook

It needs nothing of the gateway itself: the object is written out below
with the fields ``brigade_crgw.delivery.enrich.normalised`` gives it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

# The ``brigade_crgw`` object of a Distribution push whose lookup found a
# two-platform index, as annotate_payload writes it.
IMAGE: dict[str, Any] = {
    "registry": "distribution",
    "action": "push",
    "host": "acme.azurecr.io",
    "repository": "team/app",
    "tag": "v1.2.3",
    "digest": "sha256:" + "ab" * 32,
    "pusher": "ci-bot",
    "platforms": ["linux/amd64", "linux/arm64"],
    # the OCI labels the lookup reads, by short name (events.LABELS)
    "labels": {
        "revision": "0123456789abcdef0123456789abcdef01234567",
        "source": "https://github.com/acme/app",
        "version": "1.2.3",
        "created": "2026-01-01T00:00:00Z",
    },
    "lookup": "found",
}

REQUEST: dict[str, Any] = {
    "commit": "main",
    "headers": {
        "content-type": "application/json",
        "user-agent": "Docker-Distribution-Api-Version/2.0",
        "x-forwarded-for": "10.0.0.7",
    },
    "query": {"source": "ci"},
}

# The filters the documentation shows (issue 19, "Documented with examples").
FILTERS: dict[str, str] = {
    "semver": "image.tag.matches('^v?[0-9]+\\\\.[0-9]+\\\\.[0-9]+$')",
    "arm64": "'linux/arm64' in image.platforms",
    "source": (
        "has(image.labels.source) && image.labels.source.startsWith('https://github.com/acme/')"
    ),
    "not-bot": "image.pusher != 'mirror-bot'",
    "host": "image.host == 'acme.azurecr.io'",
}

ERROR = "error"
INVALID = "invalid"

# (expression, what the CEL specification answers): True/False/a value,
# ERROR for an evaluation error, INVALID for a compile error.
CONFORMANCE: list[tuple[str, object]] = [
    # string functions of the standard library
    ("image.tag.startsWith('v1.')", True),
    ("image.repository.endsWith('/app')", True),
    ("image.host.contains('azurecr')", True),
    ("size(image.tag) == 6", True),
    ("image.tag.size() == 6", True),
    ("size('\u00e9t\u00e9') == 3", True),
    ("image.tag + '-x' == 'v1.2.3-x'", True),
    # matches (RE2)
    (FILTERS["semver"], True),
    ("matches(image.tag, '^v[0-9]')", True),
    ("image.repository.matches('^team/')", True),
    ("image.tag.matches('[')", ERROR),
    ("image.tag.matches('(?i)^V1')", True),
    # exists / all / exists_one / filter / map
    ("image.platforms.exists(p, p.endsWith('/arm64'))", True),
    ("image.platforms.all(p, p.startsWith('linux/'))", True),
    ("image.platforms.exists_one(p, p == 'linux/amd64')", True),
    ("image.platforms.filter(p, p.endsWith('64')).size() == 2", True),
    ("image.platforms.map(p, p + '!') == ['linux/amd64!', 'linux/arm64!']", True),
    ("image.labels.exists(k, k.startsWith('rev'))", True),
    ("[].exists(x, x == 1)", False),
    # has()
    ("has(image.labels.source)", True),
    ("has(image.labels.nope)", False),
    ("has(image.tag)", True),
    ("has(request.headers.nope)", False),
    # in on lists and maps
    (FILTERS["arm64"], True),
    ("'linux/s390x' in image.platforms", False),
    ("'source' in image.labels", True),
    ("'nope' in image.labels", False),
    ("'user-agent' in request.headers", True),
    # map index, missing keys, errors and the logic that absorbs them
    ("image.labels['source'].startsWith('https://')", True),
    ("image.labels.nope == 'x'", ERROR),
    ("image.labels.nope == 'x' || true", True),
    ("false && image.labels.nope == 'x'", False),
    ("image.tag + 1", INVALID_OR_ERROR := "invalid-or-error"),
    ("image.tag == 1", False),
    ("size(image.platforms) == 2", True),
    ("image.pusher != 'mirror-bot' ? 1 : 2", 1),
    ("1 / 0", ERROR),
    ("image.tag ==", INVALID),
    ("image.tag.matches(", INVALID),
    ("nosuch.tag == 'x'", ERROR),
    # the documented examples, whole
    (FILTERS["source"], True),
    (FILTERS["not-bot"], True),
    (FILTERS["host"], True),
    ("request.commit == 'main' && request.query.source == 'ci'", True),
    # not core CEL: cel-go's strings extension, which Kubernetes and Flux enable
    ("image.platforms[1].split('/')[1] == 'arm64'", True),
    ("image.repository.lowerAscii() == 'team/app'", True),
]


class Library:
    """One library behind the three calls the filter needs."""

    name = ""
    module = ""

    def compile(self, text: str) -> Any:
        raise NotImplementedError

    def evaluate(self, program: Any, image: dict[str, Any], request: dict[str, Any]) -> Any:
        raise NotImplementedError


class RustCel(Library):
    name = "common-expression-language"
    module = "cel"

    def __init__(self) -> None:
        import cel

        self.cel = cel

    def compile(self, text: str) -> Any:
        return self.cel.compile(text)

    def evaluate(self, program: Any, image: dict[str, Any], request: dict[str, Any]) -> Any:
        return program.execute({"image": image, "request": request})


class PyCel(Library):
    name = "cel-python"
    module = "celpy"

    def __init__(self) -> None:
        import celpy  # type: ignore[import-not-found,unused-ignore]

        self.celpy = celpy
        self.env = celpy.Environment()

    def compile(self, text: str) -> Any:
        return self.env.program(self.env.compile(text))

    def evaluate(self, program: Any, image: dict[str, Any], request: dict[str, Any]) -> Any:
        activation = {
            "image": self.celpy.json_to_cel(image),
            "request": self.celpy.json_to_cel(request),
        }
        result = program.evaluate(activation)
        if isinstance(result, Exception):
            raise result
        return result


LIBRARIES: dict[str, type[Library]] = {"cel": RustCel, "celpy": PyCel}


def plain(value: Any) -> object:
    """A library's answer as a plain Python value (celpy wraps its own)."""
    if isinstance(value, bool) or type(value).__name__ == "BoolType":
        return bool(value)
    if isinstance(value, int):
        return int(value)
    return value


def conformance(library: Library) -> list[dict[str, object]]:
    """Each conformance row: the expression, the expected and the got answer."""
    rows = []
    for text, expected in CONFORMANCE:
        try:
            program = library.compile(text)
        except Exception as error:
            got: object = INVALID
            detail = f"{type(error).__name__}: {error}".splitlines()[0][:120]
        else:
            try:
                got = plain(library.evaluate(program, IMAGE, REQUEST))
                detail = repr(got)
            except Exception as error:
                got = ERROR
                detail = f"{type(error).__name__}: {error}".splitlines()[0][:120]
        if expected == INVALID_OR_ERROR:
            ok = got in (INVALID, ERROR)
        else:
            ok = got == expected and type(got) is type(expected)
        rows.append(
            {"expression": text, "expected": expected, "got": got, "ok": ok, "detail": detail}
        )
    return rows


def per_call(fn: Callable[[], object], rounds: int) -> float:
    """The median CPU seconds of one call of ``fn`` (this thread's CPU time,
    which other work on a shared machine does not inflate), over ``rounds``
    batches."""
    clock = time.thread_time
    batch = 1
    while True:  # a batch long enough for the clock (about 20 ms)
        start = clock()
        for _ in range(batch):
            fn()
        if clock() - start > 0.02:
            break
        batch *= 2
    samples = []
    for _ in range(rounds):
        start = clock()
        for _ in range(batch):
            fn()
        samples.append((clock() - start) / batch)
    return statistics.median(samples)


def import_cost(module: str) -> dict[str, float]:
    """The wall time and resident memory a fresh interpreter's import adds."""
    probe = (
        "import time, json\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1]) * 1024\n"
        "before = rss(); start = time.perf_counter()\n"
        f"import {module}\n"
        "took = time.perf_counter() - start\n"
        "print(json.dumps({'seconds': took, 'rss_bytes': rss() - before}))\n"
    )
    samples = [
        json.loads(subprocess.check_output([sys.executable, "-c", probe], text=True))
        for _ in range(5)
    ]
    return {
        "seconds": statistics.median(s["seconds"] for s in samples),
        "rss_bytes": statistics.median(s["rss_bytes"] for s in samples),
    }


def rss_after_use(name: str) -> int:
    """The resident memory a fresh interpreter adds by importing the library,
    compiling the five filters and evaluating each 1000 times."""
    probe = (
        "import json, sys\n"
        "sys.path[:0] = " + repr(sys.path) + "\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1]) * 1024\n"
        "import bench.cel as b\n"
        "before = rss()\n"
        f"lib = b.LIBRARIES[{name!r}]()\n"
        "programs = [lib.compile(t) for t in b.FILTERS.values()]\n"
        "for _ in range(1000):\n"
        "    for p in programs:\n"
        "        lib.evaluate(p, b.IMAGE, b.REQUEST)\n"
        "print(rss() - before)\n"
    )
    return int(subprocess.check_output([sys.executable, "-c", probe], text=True))


def measure(name: str, rounds: int) -> dict[str, object]:
    """Every figure for one library."""
    cls = LIBRARIES[name]
    try:
        library = cls()
    except ImportError as error:
        return {"library": cls.name, "missing": str(error)}
    compile_s, evaluate_s = {}, {}
    for key, text in FILTERS.items():
        compile_s[key] = per_call(partial(library.compile, text), rounds)
        program = library.compile(text)
        evaluate_s[key] = per_call(partial(library.evaluate, program, IMAGE, REQUEST), rounds)
    rows = conformance(library)
    return {
        "library": cls.name,
        "version": version(cls.name),
        "import": import_cost(cls.module),
        "rss_after_use_bytes": rss_after_use(name),
        "compile_seconds": compile_s,
        "evaluate_seconds": evaluate_s,
        "conformance": rows,
        "conformant": sum(1 for r in rows if r["ok"]),
    }


def worst_cases() -> dict[str, tuple[str, dict[str, Any]]]:
    """Slow expressions of at most 4 KiB, with the variables they run on."""
    literal = "[" + ",".join(["0"] * 1000) + "]"
    many = {"image": dict(IMAGE, platforms=[f"linux/arch{i}" for i in range(1000)])}
    chain = "(" + "+".join(["p"] * 250) + ").size() > 0"
    short_chain = "(" + "+".join(["p"] * 17) + ").size() > 0"
    long_sum = "+".join(["request.headers.x"] * 17)
    return {
        # within the guards
        "all over 1000, 2 KiB body": (
            f"{literal}.all(a, {'a' + '+a' * 990} >= 0)",
            {},
        ),
        "all over 1000, literal in body": (f"{literal}.all(a, {literal}.size() > 0)", {}),
        "exists_one over 1000 platforms, in": (
            "image.platforms.exists_one(p, p in image.platforms)",
            many,
        ),
        "16 + of a 1000 literal": (f"[{literal}].all(p, {short_chain})", {}),
        "16 + of 1000-character header values, 1000 times": (
            f"{literal}.all(a, ({long_sum}).size() > 0)",
            {"request": {"headers": {"x": "y" * 1000}}},
        ),
        # outside them
        "250 + of 1000 platforms": (f"[image.platforms].all(p, {chain})", many),
        "map over 1000 literal": (f"{literal}.map(a, 0).size() > 0", {}),
        "nested all 600 x 600": (
            "["
            + ",".join(["0"] * 600)
            + "].all(a, ["
            + ",".join(["0"] * 600)
            + "].all(b, a+b >= 0))",
            {},
        ),
        "map over 300 platforms of the list": (
            "image.platforms.map(p, image.platforms).size() > 0",
            {"image": dict(IMAGE, platforms=[f"linux/arch{i}" for i in range(300)])},
        ),
    }


def worst(name: str) -> dict[str, object]:
    """Seconds per slow expression (one evaluation each)."""
    library = LIBRARIES[name]()
    seconds: dict[str, object] = {}
    for key, (text, variables) in worst_cases().items():
        assert len(text.encode()) <= 4096, (key, len(text))
        try:
            program = library.compile(text)
            start = time.perf_counter()
            library.evaluate(
                program, variables.get("image", IMAGE), variables.get("request", REQUEST)
            )
            seconds[key] = time.perf_counter() - start
        except Exception as error:
            seconds[key] = f"{type(error).__name__}: {str(error)[:60]}"
    return seconds


def per_webhook(rounds: int = 7) -> dict[str, float]:
    """Seconds a webhook spends in each documented filter, in the gateway's
    own code: the cached program, the request variable, the image and the
    verdict (with its reason, when false) of the bench's 1 KiB Docker Hub push."""
    from bench import measure
    from brigade_crgw import registries
    from brigade_crgw.delivery import filters

    body = measure.sample_push(1024)
    headers = {"content-type": "application/json", "host": "127.0.0.1:7744", "user-agent": "wrk"}
    events = registries.decode(body, headers, None).events
    cache = filters.Filters()
    project = measure.PROJECT

    def one(text: str) -> None:
        rule = cache.of(project, text)
        assert rule is not None
        request = filters.request_variable("", headers, {})
        filters.select(rule, project, events, None, request)

    return {key: per_call(partial(one, text), rounds) for key, text in FILTERS.items()}


def gateway_memory() -> str:
    """What the gateway's filters add to a fresh interpreter's RSS: loading
    the library and compiling the five filters, then 280000 evaluations
    (errors among them), then 3000 distinct expressions through the cache."""
    probe = (
        "import sys\n"
        "sys.path[:0] = " + repr(sys.path) + "\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1]) / 1024\n"
        "from brigade_crgw.delivery import filters\n"
        "import bench.cel as b\n"
        "before = rss()\n"
        "texts = [*b.FILTERS.values(), \"image.labels.nope == 'x'\", 'image.tag']\n"
        "programs = [filters.compile_filter(t) for t in texts]\n"
        "loaded = rss() - before\n"
        "for _ in range(40000):\n"
        "    for p in programs:\n"
        "        p.judge(b.IMAGE, b.REQUEST)\n"
        "evaluated = rss() - before\n"
        "cache = filters.Filters()\n"
        "for i in range(3000):\n"
        "    try:\n"
        "        cache.of('p', f'image.tag == {i}' + (' ==' if i % 2 else ''))\n"
        "    except filters.InvalidFilter:\n"
        "        pass\n"
        "print(f'RSS added: +{loaded:.1f} MiB loading the library and compiling the filters,'\n"
        "      f' +{evaluated:.1f} MiB after 280000 evaluations,'\n"
        "      f' +{rss() - before:.1f} MiB after 3000 distinct expressions'\n"
        "      f' through the cache (which keeps {len(cache)})')\n"
    )
    return subprocess.check_output([sys.executable, "-c", probe], text=True).strip()


def per_webhook_note(cpu_ms_per_build: float | None, rounds: int = 7) -> str:
    """One paragraph: each filter's cost per webhook, and the typical one's
    share of ``cpu_ms_per_build`` (None: not measured here)."""
    costs = per_webhook(rounds)
    typical = statistics.median(costs.values())
    each = ", ".join(f"{key} {seconds * 1e6:.0f} µs" for key, seconds in costs.items())
    text = (
        f"crGatewayFilter per webhook (the gateway's code, {RustCel.name} "
        f"{version(RustCel.name)}): {each}; typical (median) {typical * 1e6:.0f} µs"
    )
    if cpu_ms_per_build:
        share = typical * 1e3 / cpu_ms_per_build
        text += f", {share:.1%} of the {cpu_ms_per_build:.2f} CPU-ms per build measured"
    return text + f" (load average {load()})."


def version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as of

    try:
        return of(distribution)
    except PackageNotFoundError:
        return "?"


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def show(result: dict[str, object]) -> None:
    """One library's figures, as text."""
    print(f"== {result['library']} {result.get('version', '')} (load average {load()})")
    if "missing" in result:
        print(f"   not installed: {result['missing']}")
        return
    imp: Any = result["import"]
    print(
        f"   import: {imp['seconds'] * 1e3:.0f} ms, "
        f"+{imp['rss_bytes'] / 2**20:.1f} MiB RSS; "
        f"then five filters compiled and run 1000 times: "
        f"+{int(result['rss_after_use_bytes']) / 2**20:.1f} MiB more"  # type: ignore[call-overload]
    )
    comp: Any = result["compile_seconds"]
    ev: Any = result["evaluate_seconds"]
    print(f"   {'filter':<10} {'compile µs':>12} {'evaluate µs':>12}")
    for key in FILTERS:
        print(f"   {key:<10} {comp[key] * 1e6:>12.1f} {ev[key] * 1e6:>12.1f}")
    for key, took in dict(result.get("worst_seconds") or {}).items():  # type: ignore[call-overload]
        shown = f"{took:.3f} s" if isinstance(took, float) else took
        print(f"   worst: {key}: {shown}")
    rows: Any = result["conformance"]
    print(f"   conformance: {result['conformant']}/{len(rows)}")
    for row in rows:
        if not row["ok"]:
            print(
                f"     FAIL {row['expression']!r}: expected {row['expected']!r}, "
                f"got {row['got']!r} ({row['detail']})"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cel", description=__doc__.split("\n")[0])
    parser.add_argument("--library", choices=sorted(LIBRARIES), action="append")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--worst", action="store_true", help="time the slowest filters too")
    parser.add_argument(
        "--per-webhook",
        action="store_true",
        help="only the cost per webhook in the gateway's code (needs the gateway's venv)",
    )
    args = parser.parse_args(argv)
    if args.per_webhook:
        print(per_webhook_note(None, args.rounds))
        print(gateway_memory())
        return 0
    results = [measure(name, args.rounds) for name in args.library or sorted(LIBRARIES)]
    if args.worst:  # the chosen library's: cel-python's take minutes
        for result in results:
            if result["library"] == RustCel.name and "missing" not in result:
                result["worst_seconds"] = worst("cel")
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        for result in results:
            show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
