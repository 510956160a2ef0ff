"""crGatewayFilter: the filter module, its documented examples, and the
pipeline with it (the in-memory store, lookups off or scripted)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brigade_crgw.answers import Target, Trace, Webhook
from brigade_crgw.brigade import Project
from brigade_crgw.config import Config
from brigade_crgw.delivery import enrich, expression, filters
from brigade_crgw.delivery.pipeline import Pipeline
from brigade_crgw.events import ImageEvent, ImageFacts
from brigade_crgw.kubernetes.projects import ProjectCache
from brigade_crgw.lookups.outcomes import LookupResult
from devtools.projects import TOKEN, decoded, project_secret

from .helpers import run_cli
from .memory import MemoryStore

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "filters.rst").read_text()
ACR_PUSH = json.loads((ROOT / "tests" / "payloads" / "acr" / "push.json").read_bytes())

EVENT = ImageEvent(
    registry="acr",
    action="image_push",
    repository="acme/app",
    host="acme.azurecr.io",
    tag="v1.2.3",
    digest="",
    pusher="alice",
    payload=b"{}",
)
FACTS = ImageFacts(
    digest="sha256:" + "ab" * 32,
    platforms=("linux/amd64", "linux/arm64"),
    labels={"source": "https://github.com/acme/app", "revision": "0" * 40},
)
REQUEST = filters.request_variable("", {}, {})


def image(event: ImageEvent = EVENT, facts: ImageFacts | None = FACTS, **changes: Any) -> Any:
    """The ``image`` variable, as annotate_payload builds it."""
    return enrich.normalised(attr.evolve(event, **changes), facts, "found" if facts else "off")


def judge(text: str, value: Any, request: Any = REQUEST) -> filters.Verdict:
    return filters.compile_filter(text).judge(value, request)


# The examples docs/filters.rst shows, each with an image it passes and one it does not.
EXAMPLES: list[tuple[str, Any, Any]] = [
    (
        "image.tag.matches('^v?[0-9]+\\\\.[0-9]+\\\\.[0-9]+$')",
        image(tag="v1.2.3"),
        image(tag="latest"),
    ),
    (
        "'linux/arm64' in image.platforms",
        image(),
        image(facts=ImageFacts(digest="sha256:" + "cd" * 32, platforms=("linux/amd64",))),
    ),
    (
        "has(image.labels.source) && image.labels.source.startsWith('https://github.com/acme/')",
        image(),
        image(facts=None),
    ),
    ("image.pusher != 'mirror-bot'", image(), image(pusher="mirror-bot")),
    ("image.host == 'acme.azurecr.io'", image(), image(host="other.azurecr.io")),
]


@pytest.mark.parametrize(("text", "passes", "fails"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_documented_example(text: str, passes: Any, fails: Any) -> None:
    """Each documented example is on the page as written, passes its image and not the other."""
    assert f"   {text}\n" in DOCS, text
    assert judge(text, passes) == filters.Verdict(True)
    assert judge(text, fails) == filters.Verdict(False)


def test_documented_examples_all_tested() -> None:
    """Every filter the page shows as an example is one of the tested examples."""
    section = DOCS.split("Examples\n--------\n", 1)[1].split("\n---", 1)[0]
    shown = re.findall(r"::\n\n   (.+)\n", section)
    assert sorted(shown) == sorted(t for t, _, _ in EXAMPLES)


def test_request_variable_leaves_out_credentials() -> None:
    """request holds the commit, headers without credentials and the query without the token."""
    headers = {
        "authorization": "Bearer s",
        "x-hub-signature-256": "sha256=s",
        "x-jfrog-event-auth": "s",
        "x-gitlab-token": "s",
        "x-api-key": "s",
        "cookie": "s",
        "user-agent": "Harbor",
        "x-request-id": "r1",
    }
    variable = filters.request_variable("main", headers, {"token": "s", "source": "ci"})
    assert variable == {
        "commit": "main",
        "headers": {"user-agent": "Harbor", "x-request-id": "r1"},
        "query": {"source": "ci"},
    }
    text = "request.commit == 'main' && request.headers['user-agent'] == 'Harbor'"
    assert judge(text + " && request.query.source == 'ci'", image(), variable).passed


@pytest.mark.parametrize(
    ("text", "needs"),
    [
        ("image.tag == 'v1'", False),
        ("has(image.pusher) && image.host.endsWith('.io')", False),
        ("image . repository == 'a' && request.commit == ''", False),
        ("'image.platforms' == image.tag", False),
        ("image.action == 'image_push' // image.labels", False),
        ("'linux/arm64' in image.platforms", True),
        ("has(image.labels.source)", True),
        ("image.digest != ''", True),
        ("image.lookup == 'found'", True),
        ("image['tag'] == 'v1'", True),
        ("size(image) > 0", True),
        ("[1].exists(image, image == 1)", True),
        ("r'image.tag' + image.tag == 'x'", False),
        ("'''a\\'''' + image.tag == 'x' && image.labels.x == 'y'", True),
    ],
)
def test_needs_lookup(text: str, needs: bool) -> None:
    """Only a filter reading platforms, labels, digest, lookup or image whole waits for one."""
    assert expression.needs_lookup(text) is needs


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("image.tag ==", "does not compile: ERROR: <input>:1:13: Syntax error"),
        ("image.tag.matches(", "does not compile"),
        ("", "is empty"),
        ("  ", "is empty"),
        ("imgae.tag == 'v1'", "names imgae: a filter sees only image and request"),
        ("image.platforms.map(p, p) == []", "uses map"),
        ("image.platforms.filter(p, true).size() > 0", "uses filter"),
        (
            "image.platforms.exists(p, image.platforms.all(q, p == q))",
            "nests comprehensions 2 deep",
        ),
        ("image.tag == '" + "x" * 4096 + "'", "at most 4096 are taken"),
        (
            "[image.platforms].all(p, (" + "+".join(["p"] * 18) + ").size() > 0)",
            "has 17 '+'; at most 16",
        ),
    ],
)
def test_invalid(text: str, says: str) -> None:
    """A filter that cannot be used is refused at compile time, saying why."""
    with pytest.raises(filters.InvalidFilter) as raised:
        filters.compile_filter(text)
    assert says in str(raised.value)
    assert "\n" not in str(raised.value)


def test_additions_within_the_cap_compile() -> None:
    """Sixteen ``+`` are taken, and a ``+`` inside a string literal is not counted."""
    text = "image.tag == " + "+".join(["'a+b'"] * 17)
    assert filters.compile_filter(text).text == text


def test_longest_taken() -> None:
    """An expression of exactly 4096 bytes is taken."""
    text = "image.tag != '" + "x" * (4096 - len("image.tag != ''")) + "'"
    assert len(text.encode()) == 4096
    assert judge(text, image()).passed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("image.labels.nope == 'x'", "no such key 'nope'"),
        ("image.tag + 1 == 'x'", "Unsupported"),
        ("image.tag", "it gave str 'v1.2.3', not a bool"),
        ("size(image.platforms)", "it gave int 2, not a bool"),
        ("image.tag.matches('(')", "not a valid regex"),
        ("1 / 0 == 1", "ivision"),
        ("image.platforms[7] == 'x'", "index"),
    ],
)
def test_evaluation_error_is_false(text: str, says: str) -> None:
    """An evaluation that fails, or gives no bool, counts as false and says why."""
    verdict = judge(text, image())
    assert verdict.passed is False and says in verdict.error, verdict


def test_errors_absorbed_as_cel_says() -> None:
    """CEL's logic absorbs an error where the other side decides: true, not an evaluation error."""
    assert judge("image.labels.nope == 'x' || true", image()) == filters.Verdict(True)
    assert judge("false && image.labels.nope == 'x'", image()) == filters.Verdict(False)


def test_cache_bound_and_logged_once(caplog_events: list[dict[str, Any]]) -> None:
    """A compile error is logged once per distinct expression; the cache keeps at most its bound."""
    cache = filters.Filters(size=2)
    for _ in range(3):
        with pytest.raises(filters.InvalidFilter):
            cache.of("acme/app", "image.tag ==")
    errors = [e for e in caplog_events if "cannot be used" in e.get("log_format", "")]
    assert len(errors) == 1 and errors[0]["project"] == "acme/app"
    first = cache.of("a", "true")
    assert cache.of("b", "true") is first
    cache.of("c", "false")
    assert len(cache) == 2
    assert cache.of("d", "") is None and cache.of("e", " ") is None


@pytest.fixture
def caplog_events() -> Any:
    """The events twisted.logger emits during the test."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


# Random expressions: tokens of CEL (and some that are not) strung together.
ATOMS = st.sampled_from(
    [
        "image",
        "request",
        "image.tag",
        "image.platforms",
        "image.labels",
        "image.labels.source",
        "request.headers",
        "request.query",
        "request.commit",
        "'linux/arm64'",
        "'^v[0-9]+'",
        "'('",
        "1",
        "0",
        "-1",
        "2.5",
        "1u",
        "true",
        "false",
        "null",
        "b'x'",
        "[]",
        "{}",
        "['a', 1]",
        "{'a': 1}",
        "x",
    ]
)
OPERATORS = st.sampled_from(
    [" && ", " || ", " == ", " != ", " < ", " + ", " - ", " * ", " / ", " % ", " in ", "."]
)
CALLS = st.sampled_from(
    [
        "size({})",
        "has({}.source)",
        "{}.matches('^v')",
        "{}.startsWith('a')",
        "{}.contains('a')",
        "{}.exists(x, x == 'a')",
        "{}.all(x, x != 1)",
        "!{}",
        "({})",
        "{}[0]",
        "{}['source']",
        "int({})",
        "string({})",
        "{} ? 1 : 2",
        "dyn({})",
        "type({})",
    ]
)


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    """A random expression: often valid CEL, often not."""
    if depth == 0 or draw(st.booleans()):
        return draw(ATOMS)
    kind = draw(st.sampled_from(["binary", "call", "junk"]))
    if kind == "binary":
        return draw(expressions(depth - 1)) + draw(OPERATORS) + draw(expressions(depth - 1))
    if kind == "call":
        return draw(CALLS).replace("{}", draw(expressions(depth - 1)))
    return draw(expressions(depth - 1)) + draw(st.text(max_size=4))


TEXT = st.text(max_size=12)
EVENTS = st.builds(
    ImageEvent,
    registry=st.sampled_from(["acr", "dockerhub", "distribution"]),
    action=st.sampled_from(["image_push", "push"]),
    repository=TEXT,
    host=TEXT,
    tag=TEXT,
    digest=TEXT,
    pusher=TEXT,
    payload=st.just(b"{}"),
)
FACTSES = st.none() | st.builds(
    ImageFacts,
    digest=TEXT,
    platforms=st.lists(TEXT, max_size=3).map(tuple),
    labels=st.dictionaries(st.sampled_from(["source", "revision", "version"]), TEXT),
)
REQUESTS = st.builds(
    filters.request_variable,
    TEXT,
    st.dictionaries(TEXT.map(str.lower), TEXT, max_size=3),
    st.dictionaries(TEXT, TEXT, max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=expressions() | st.text(max_size=80), event=EVENTS, facts=FACTSES, request=REQUESTS)
def test_random_expressions_and_events(
    text: str, event: ImageEvent, facts: ImageFacts | None, request: Any
) -> None:
    """Any expression on any event: a bool, an "invalid" refusal or an evaluation error."""
    try:
        rule = filters.compile_filter(text)
    except filters.InvalidFilter as invalid:
        assert str(invalid).startswith("crGatewayFilter")
        return
    verdict = rule.judge(enrich.normalised(event, facts, "found"), request)
    assert isinstance(verdict.passed, bool)
    assert verdict.passed is False or verdict.error == ""
    assert isinstance(verdict.error, str)


NAMES = st.sampled_from(
    [
        "image.tag",
        "image.host",
        "image.pusher",
        "image.repository",
        "image.registry",
        "image.action",
        "image.platforms",
        "image.labels",
        "image.labels.source",
        "image.digest",
        "image.lookup",
        "image",
        "image['tag']",
        "'image.platforms'",
        "request.commit",
    ]
)


@st.composite
def reading(draw: st.DrawFn, depth: int = 2) -> str:
    """A random expression over the image's fields, mostly valid CEL."""
    if depth == 0 or draw(st.booleans()):
        return draw(NAMES)
    kind = draw(st.sampled_from(["binary", "call"]))
    if kind == "binary":
        return draw(reading(depth - 1)) + draw(OPERATORS) + draw(reading(depth - 1))
    return draw(CALLS).replace("{}", draw(reading(depth - 1)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=reading(), event=EVENTS, facts=FACTSES.filter(lambda f: f is not None))
def test_early_filters_need_no_lookup(text: str, event: ImageEvent, facts: ImageFacts) -> None:
    """A filter judged before the lookups gives the verdict it would give after them."""
    try:
        rule = filters.compile_filter(text)
    except filters.InvalidFilter:
        return
    if rule.needs_lookup:
        return
    before = rule.judge(enrich.normalised(event, None, "off"), REQUEST)
    after = rule.judge(enrich.normalised(event, facts, "found"), REQUEST)
    assert before == after, (before, after)


# The pipeline with a filter.


def acr_push(tag: str, n: int) -> bytes:
    """ACR's documented push, as a new event (its own id) for ``tag``."""
    doc = json.loads(json.dumps(ACR_PUSH))
    doc["id"] = f"event-{n}"
    doc["target"]["tag"] = tag
    return json.dumps(doc).encode()


@attr.s(auto_attribs=True)
class ScriptedImages:
    """Lookups that answer from a table, and remember what they were asked."""

    facts: ImageFacts | None
    asked: list[str] = attr.ib(factory=list)

    def results(self, project: Project, events: Sequence[ImageEvent]) -> list[LookupResult]:
        self.asked.extend(e.tag for e in events)
        return [LookupResult("found" if self.facts else "off", self.facts) for _ in events]


def deliver(
    store: MemoryStore,
    body: bytes,
    images: Any = None,
    query: dict[str, str] | None = None,
    **config: Any,
) -> Any:
    webhook = Webhook(
        target=Target(project="acme/app", commit=""),
        headers={"content-type": "application/json", "user-agent": "AzureContainerRegistry/1.0"},
        body=body,
        query_token=TOKEN,
        query=query or {},
    )
    return Pipeline(Config(**config), ProjectCache(store, 0, 0), store, images).deliver(
        webhook, Trace()
    )


def store_with(text: str, **data: str) -> MemoryStore:
    store = MemoryStore()
    store.put(project_secret("acme/app", crGatewayFilter=text, **data))
    return store


def test_pipeline_semver() -> None:
    """The semver filter: a build for v1.2.3; 200 ignored naming the filter for latest."""
    store = store_with(EXAMPLES[0][0])
    assert deliver(store, acr_push("v1.2.3", 1)).body["status"] == "Success"
    ignored = deliver(store, acr_push("latest", 2))
    assert ignored.code == 200 and ignored.body["status"] == "ignored"
    assert "crGatewayFilter (image.tag.matches(" in ignored.body["reason"]
    assert "is false for myregistry.azurecr.io/hello-world:latest" in ignored.body["reason"]
    assert len(store.builds()) == 1


def test_pipeline_invalid_is_422() -> None:
    """An expression that does not compile refuses the project's webhooks with 422 and the error."""
    store = store_with("image.tag ==")
    with pytest.raises(Exception) as raised:
        deliver(store, acr_push("v1", 1))
    refusal: Any = raised.value
    assert refusal.code == 422 and refusal.status == "invalid filter"
    assert "Syntax error" in refusal.reason and store.builds() == []


def test_pipeline_evaluation_error() -> None:
    """An evaluation error is a 200 ignored whose reason carries the error."""
    store = store_with("image.labels.nope == 'x'")
    ignored = deliver(store, acr_push("v1", 1))
    assert ignored.body["status"] == "ignored"
    assert "could not be evaluated" in ignored.body["reason"]
    assert "no such key 'nope'" in ignored.body["reason"]


def test_pipeline_tags_then_filter() -> None:
    """Tag filters come first: their reason is the answer when they leave nothing."""
    store = store_with("true", crGatewayTags="v*")
    ignored = deliver(store, acr_push("latest", 1))
    assert "crGatewayTags" in ignored.body["reason"]


def test_pipeline_query_seen() -> None:
    """request.query is the webhook URL's query, the token left out."""
    store = store_with("request.query.source == 'ci' && !('token' in request.query)")
    assert deliver(store, acr_push("v1", 1), query={"source": "ci"}).body["status"] == "Success"
    assert deliver(store, acr_push("v1", 2), query={"source": "x"}).body["status"] == "ignored"


def test_no_lookup_for_filtered_out() -> None:
    """A filter that needs no lookup is judged first: an image it leaves out is never looked up."""
    store = store_with("image.tag != 'latest'")
    images = ScriptedImages(FACTS)
    assert deliver(store, acr_push("latest", 1), images).body["status"] == "ignored"
    assert images.asked == []
    assert deliver(store, acr_push("v1", 2), images).body["status"] == "Success"
    assert images.asked == ["v1"]


def test_lookup_before_filter_that_needs_it() -> None:
    """A filter on platforms is judged on what the lookup found."""
    store = store_with("'linux/arm64' in image.platforms")
    images = ScriptedImages(FACTS)
    [name] = deliver(store, acr_push("v1", 1), images, annotate_payload=True).body["builds"]
    assert images.asked == ["v1"]
    annotated = json.loads(decoded(store.secrets[name])["payload"])["brigade_crgw"]
    assert annotated["platforms"] == ["linux/amd64", "linux/arm64"]
    amd64 = ScriptedImages(attr.evolve(FACTS, platforms=("linux/amd64",)))
    assert deliver(store, acr_push("v1", 2), amd64).body["status"] == "ignored"


# brigade-crgw filter test


def test_cli_filter_test(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """filter test judges the payload's images as the gateway does: exit 0 when
    one passes, 1 when none does, 2 for an expression that cannot be used."""
    payload = tmp_path / "push.json"
    payload.write_bytes(acr_push("v1.2.3", 1))
    common = ["filter", "test", "acme/app", "--payload", str(payload), "--expression"]
    code, out, _ = run_cli(capsys, *common, EXAMPLES[0][0])
    assert code == 0 and "true    myregistry.azurecr.io/hello-world:v1.2.3" in out
    assert "judged early, needing no lookup" in out
    code, out, _ = run_cli(capsys, *common, EXAMPLES[1][0])
    assert code == 1 and "false   myregistry.azurecr.io/hello-world:v1.2.3" in out
    assert "give --platform, --label, --digest" in out
    code, out, _ = run_cli(capsys, *common, EXAMPLES[1][0], "--platform", "linux/arm64")
    assert code == 0 and "judged after lookups" in out
    code, out, _ = run_cli(capsys, *common, "image.labels.source == 'x'", "--label", "a=b")
    assert code == 1 and "which counts as false: no such key 'source'" in out
    code, out, _ = run_cli(capsys, *common, "request.query.source == 'ci'", "--query", "source=ci")
    assert code == 0
    code, _, err = run_cli(capsys, *common, "image.tag ==")
    assert code == 2 and "crGatewayFilter does not compile: ERROR" in err


def test_library_loaded_without_its_command() -> None:
    """The gateway loads the library's compiled module alone (not typer, rich,
    prompt_toolkit), and only when a filter is compiled; the package imports after."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from brigade_crgw.delivery import filters\n"
        "assert 'cel.cel' not in sys.modules\n"
        "assert filters.compile_filter('image.tag == \"v1\"').judge({'tag': 'v1'}, {}).passed\n"
        "assert not {'typer', 'rich', 'prompt_toolkit'} & set(sys.modules), sys.modules.keys()\n"
        "import cel\n"
        "assert cel.compile('1 == 1').execute({}) is True\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT, timeout=120)


def test_pipeline_some_images_pass() -> None:
    """One webhook naming two images: the one the filter passes is built, the answer is Success."""
    store = store_with(EXAMPLES[0][0])
    events = [
        {
            "id": f"two-{tag}",
            "timestamp": "2026-01-02T15:04:05Z",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + "ab" * 32,
                "repository": "acme/app",
                "tag": tag,
            },
            "request": {"host": "registry.example.com"},
            "actor": {"name": "ci"},
        }
        for tag in ("latest", "v1.2.3")
    ]
    answer = deliver(store, json.dumps({"events": events}).encode())
    assert answer.body["status"] == "Success" and len(answer.body["builds"]) == 1
    [build] = store.builds()
    assert json.loads(decoded(build)["payload"])["target"]["tag"] == "v1.2.3"


def test_pipeline_invalid_filter_and_pings() -> None:
    """A project whose filter cannot be used still answers Event Grid's
    handshake, and refuses a registry's ping with the 422."""
    store = store_with("image.tag ==")
    payloads = ROOT / "tests" / "payloads" / "acr"
    handshake = deliver(
        store, (payloads / "SubscriptionValidation-eventgrid-docs.json").read_bytes()
    )
    assert handshake.code == 200 and "validationResponse" in handshake.body
    with pytest.raises(Exception) as raised:
        deliver(store, (payloads / "ping-kargo-trimmed.json").read_bytes())
    assert getattr(raised.value, "code", None) == 422


def test_library_conformance_as_documented() -> None:
    """The library misses exactly the four conformance rows docs/filters.rst names."""
    from bench import cel as comparison

    rows = comparison.conformance(comparison.RustCel())
    missed = sorted(str(r["expression"]) for r in rows if not r["ok"])
    assert missed == [
        "image.platforms[1].split('/')[1] == 'arm64'",
        "image.repository.lowerAscii() == 'team/app'",
        "matches(image.tag, '^v[0-9]')",
        "size('\u00e9t\u00e9') == 3",
    ]
    assert f"{len(rows)} expressions" in DOCS and len(rows) - len(missed) == 42
