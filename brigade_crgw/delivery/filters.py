"""``crGatewayFilter``: a project's CEL expression that a push must satisfy.

The expression sees two variables:

- ``image``: the ``brigade_crgw`` object that ``[gateway] annotate_payload``
  adds to the payload (:func:`~brigade_crgw.delivery.enrich.normalised`);
- ``request``: ``commit`` (the URL's commit-ish), ``headers`` (lower-cased
  names to their first value, credentials left out) and ``query`` (the query
  string's first values, ``token`` left out).

It is compiled once per distinct text (a bounded cache shared by the
process) with the Rust CEL of ``common-expression-language`` (why: the docs'
page on filters, and ``bench/cel.py``), and judged once per image.  An
expression that does not compile is :class:`InvalidFilter`; an evaluation
that fails, or gives something other than a bool, counts as false and says
why.  Everything here is synchronous and CPU-bound, like the rest of the
pipeline, and runs on its thread pool.

The library has no cost limit, and it holds the GIL while it evaluates: a
slow filter holds the reactor too.  Four guards keep out the costly
shapes measured (``bench/cel.py --worst``; the docs give the figures): the
expression is at most :data:`MAX_BYTES` long, comprehensions
(``all``, ``exists``, ``exists_one``) do not nest, ``map`` and
``filter``, whose cost in this library grows with the square of the list,
are refused (a boolean filter can say the same with ``exists``, ``all`` or
``exists_one``), and it has at most :data:`MAX_ADDITIONS` ``+`` (a chain of
list ``+`` copies the list again at each step: 250 of them over a list of
1000 took 6.7 s).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attr
from twisted.logger import Logger

from ..brigade import FILTER_KEY
from ..events import ImageEvent
from ..lookups.outcomes import LookupResult
from . import enrich
from .expression import additions, bound_names, macros, needs_lookup, nesting

log = Logger()

# The longest expression taken, in UTF-8 bytes.
MAX_BYTES = 4096
# How deep comprehensions may nest: each level multiplies the work by the
# length of a list.
MAX_NESTING = 1
# How many ``+`` an expression may have: a chain of them over a list costs
# the square of its length (a filter joins a few strings at most).
MAX_ADDITIONS = 16
# Compiled programs (and compile errors) kept, by expression text.
CACHE_SIZE = 256
REFUSED_MACROS = frozenset({"map", "filter"})
# Headers never shown to a filter: those that carry credentials, by name.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-jfrog-event-auth",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-nexus-webhook-signature",
        "x-signature",
    }
)
_CREDENTIAL_WORDS = re.compile(r"auth|token|secret|signature|password|cookie|api-?key", re.I)
SHOWN_CHARS = 80
VARIABLES = frozenset({"image", "request"})


class InvalidFilter(Exception):
    """An expression that cannot be used: it does not compile, is too long,
    names a variable other than ``image`` and ``request``, uses ``map`` or
    ``filter``, or nests comprehensions.  Its message is for the project's
    owner."""


@attr.s(frozen=True, auto_attribs=True)
class Verdict:
    """What a filter said of one image.

    :param passed: whether the image is built.
    :param error: why the evaluation failed ("" when it did not); a
        failed evaluation never passes.
    """

    passed: bool
    error: str = ""


def _load_cel() -> Any:
    """The library's compiled module, ``cel.cel``.

    Importing the ``cel`` package also imports its interactive command
    (typer, rich, prompt_toolkit): about 25 MiB of memory and 0.2 s that a
    daemon has no use for.  The extension module alone is loaded when it
    is where the package keeps it, and kept as ``cel.cel``, where the
    package would import it from (a PyO3 module may be initialised only
    once in a process); otherwise the package is imported.
    """
    loaded = sys.modules.get("cel.cel")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("cel")
    for where in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(Path(where).glob("cel.*.so")):
            loader = importlib.machinery.ExtensionFileLoader("cel", str(path))
            found = importlib.util.spec_from_loader("cel", loader)
            if found is None:
                continue
            module = importlib.util.module_from_spec(found)
            loader.exec_module(module)
            sys.modules["cel.cel"] = module
            return module
    import cel  # pragma: no cover (a layout the package has not used)

    return cel


_cel: Any = None
_cel_lock = threading.Lock()


def cel_module() -> Any:
    """The CEL library, loaded on first use: a gateway whose projects have
    no filter never loads it."""
    global _cel
    with _cel_lock:
        if _cel is None:
            _cel = _load_cel()
        return _cel


def shown(text: str) -> str:
    """The expression as a reason quotes it: on one line, cut to a length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= SHOWN_CHARS else flat[: SHOWN_CHARS - 1] + "…"


def _compile_error(text: str, error: BaseException) -> str:
    """The library's compile error as one line, without the expression it
    repeats."""
    message = str(error)
    prefix = f"Failed to parse expression '{text}': "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    lines = [line for line in message.splitlines() if line and not line.startswith("| ")]
    return " ".join(" ".join(lines).split()) or type(error).__name__


def _fatal(error: BaseException) -> bool:
    """Whether an exception must go on up: an interpreter's own, not the
    library's (its panics are BaseExceptions too, and are caught)."""
    return isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError))


@attr.s(frozen=True, auto_attribs=True)
class Filter:
    """One compiled expression.

    :param text: the expression as the project holds it.
    :param program: the library's compiled program.
    :param needs_lookup: see :func:`needs_lookup`.
    :param variables: those of ``image`` and ``request`` it uses: only they
        are handed to the library, whose conversion of a Python value is
        most of what an evaluation costs.
    """

    text: str
    program: Any = attr.ib(repr=False, eq=False)
    needs_lookup: bool
    variables: frozenset[str] = VARIABLES

    def judge(self, image: Mapping[str, Any], request: Mapping[str, Any]) -> Verdict:
        """Evaluate the expression on one image.  Never raises for anything
        the expression or the values do."""
        given = {"image": image, "request": request}
        try:
            result = self.program.execute({k: dict(given[k]) for k in self.variables})
        except BaseException as error:
            if _fatal(error):
                raise
            return Verdict(False, _evaluation_error(error))
        if not isinstance(result, bool):
            return Verdict(
                False, f"it gave {type(result).__name__} {shown(repr(result))}, not a bool"
            )
        return Verdict(result)


def _evaluation_error(error: BaseException) -> str:
    kind = {"KeyError": "no such key"}.get(type(error).__name__, "")
    message = " ".join(str(error).split()) or type(error).__name__
    return f"{kind} {message}" if kind else message


def compile_filter(text: str) -> Filter:
    """The expression, compiled.

    :raises InvalidFilter: it is too long, nests too deep, adds too much or
        does not compile.
    """
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        raise InvalidFilter(f"{FILTER_KEY} is {size} bytes long; at most {MAX_BYTES} are taken")
    if not text.strip():
        raise InvalidFilter(f"{FILTER_KEY} is empty")
    try:
        program = cel_module().compile(text)
    except BaseException as error:
        if _fatal(error):
            raise
        raise InvalidFilter(
            f"{FILTER_KEY} does not compile: {_compile_error(text, error)}"
        ) from None
    refused = sorted(macros(text) & REFUSED_MACROS)
    if refused:
        raise InvalidFilter(
            f"{FILTER_KEY} uses {' and '.join(refused)}: map and filter are not taken "
            "(their cost grows with the square of the list): say it with exists, "
            "all or exists_one"
        )
    depth = nesting(text)
    if depth > MAX_NESTING:
        raise InvalidFilter(f"{FILTER_KEY} nests comprehensions {depth} deep; they may not nest")
    plus = additions(text)
    if plus > MAX_ADDITIONS:
        raise InvalidFilter(
            f"{FILTER_KEY} has {plus} '+'; at most {MAX_ADDITIONS} are taken "
            "(a chain of them over a list costs the square of its length)"
        )
    unknown = sorted(set(program.variables()) - VARIABLES - bound_names(text))
    if unknown:
        raise InvalidFilter(
            f"{FILTER_KEY} names {', '.join(unknown)}: a filter sees only image and request"
        )
    return Filter(text, program, needs_lookup(text), VARIABLES & set(program.variables()))


@attr.s
class Filters:
    """Compiled filters by expression text, at most ``size`` of them (least
    recently used goes first), shared by the pool's threads.

    A compile error is kept like a program, and logged once, when the
    expression is first seen (again only if it has left the cache since).
    A project whose expression changes gets the new one as soon as its
    project is read again (``[kubernetes] project_cache_seconds``).
    """

    size: int = attr.ib(default=CACHE_SIZE)
    # A program, or the message of the InvalidFilter its text gives (a new
    # exception each time: one raised again and again would grow its traceback).
    _cache: OrderedDict[str, Filter | str] = attr.ib(factory=OrderedDict, init=False)
    _lock: threading.Lock = attr.ib(factory=threading.Lock, init=False)

    def of(self, project_id: str, text: str) -> Filter | None:
        """The project's filter, or None when it has none.

        :param text: the project's expression (:attr:`.Project.filter`).
        :raises InvalidFilter: its expression cannot be used.
        """
        if not text.strip():
            return None
        with self._lock:
            known = self._cache.get(text)
            if known is not None:
                self._cache.move_to_end(text)
        if known is None:
            try:
                compiled: Filter | str = compile_filter(text)
            except InvalidFilter as error:
                compiled = str(error)
            with self._lock:
                known = self._cache.setdefault(text, compiled)
                first = known is compiled
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
            if first and isinstance(known, str):
                log.error(
                    "project {project}: crGatewayFilter {expression!r} cannot be used, "
                    "its webhooks are refused: {error}",
                    project=project_id,
                    expression=shown(text),
                    error=known,
                )
        if isinstance(known, str):
            raise InvalidFilter(known)
        return known

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)


def request_variable(
    commit: str, headers: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    """The ``request`` a filter sees: credentials and the token left out."""
    return {
        "commit": commit,
        "headers": {
            name: value
            for name, value in headers.items()
            if name not in CREDENTIAL_HEADERS and not _CREDENTIAL_WORDS.search(name)
        },
        "query": {name: value for name, value in query.items() if name != "token"},
    }


def image_name(event: ImageEvent) -> str:
    """The image as a reason names it."""
    where = f"{event.host}/{event.repository}" if event.host else event.repository
    return f"{where}:{event.tag}" if event.tag else f"{where}@{event.digest}"


def select(
    rule: Filter,
    project_id: str,
    events: Sequence[ImageEvent],
    results: Sequence[LookupResult] | None,
    request: Mapping[str, Any],
) -> tuple[list[ImageEvent], list[LookupResult] | None, list[str]]:
    """The events the filter lets through (with their lookup results), and
    why the others were left out.

    :param results: one lookup result per event, or None: the image is
        then what ``annotate_payload`` shows without a lookup (``lookup``
        is ``off``, no platforms, no labels).
    """
    kept, kept_results, reasons = [], [], []
    for i, event in enumerate(events):
        result = results[i] if results is not None else None
        facts = result.facts if result is not None else None
        outcome = result.outcome if result is not None else "off"
        verdict = rule.judge(enrich.normalised(event, facts, outcome), request)
        if verdict.passed:
            kept.append(event)
            if result is not None:
                kept_results.append(result)
            continue
        name = image_name(event)
        if verdict.error:
            log.warn(
                "project {project}: crGatewayFilter {expression!r} failed on {image}, "
                "which counts as false: {error}",
                project=project_id,
                expression=shown(rule.text),
                image=name,
                error=verdict.error,
            )
            reasons.append(
                f"the project's crGatewayFilter ({shown(rule.text)}) could not be evaluated "
                f"for {name}, which counts as false: {verdict.error}"
            )
        else:
            reasons.append(
                f"the project's crGatewayFilter ({shown(rule.text)}) is false for {name}"
            )
    return kept, (kept_results if results is not None else None), reasons
