"""The HTTP surface in memory: routes, answers and error codes, with the
in-memory store and a synchronous runner."""

from __future__ import annotations

import json
from typing import Any

import attr
import pytest
from hypothesis import given
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from brigade_crgw.answers import Refusal
from brigade_crgw.brigade import project_id
from brigade_crgw.config import Config
from brigade_crgw.delivery.pipeline import Pipeline
from brigade_crgw.http.app import Gateway
from brigade_crgw.http.inflight import InFlight
from brigade_crgw.http.webhook import parse_target
from brigade_crgw.kubernetes.projects import ProjectCache
from devtools.projects import TOKEN, decoded, fresh, project_secret

from .helpers import DOCKERHUB, URL_FORMS, body
from .memory import MemoryStore

ACR_PUSH = body("acr/push.json")
ACR_PING = b'{"action": "ping"}'
JSON = {"Content-Type": "application/json"}


@attr.s(frozen=True, auto_attribs=True)
class Reply:
    code: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemoryStore()
        self.store.put(project_secret("acme/app"))
        # No in-request retry here (it would sleep); tests/test_deliver_spool.py has it.
        self.config = Config(retry_seconds=0)

    def gateway(self, **config: Any) -> StubTreq:
        pipeline = Pipeline(
            Config(**config) if config else self.config,
            ProjectCache(self.store, 0, 0),
            self.store,
        )
        gateway = Gateway(pipeline, maybeDeferred, InFlight(64, Clock()))
        return StubTreq(gateway.app.resource())

    def call(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        client: StubTreq | None = None,
    ) -> Reply:
        client = client or self.gateway()
        response = self.successResultOf(
            client.request(method, "http://gw" + url, data=body, headers=headers or JSON)
        )
        content = self.successResultOf(response.content())
        return Reply(response.code, response.headers, content)

    def post(self, url: str, body: bytes = DOCKERHUB, **kwargs: Any) -> Reply:
        sep = "&" if "?" in url else "?"
        return self.call("POST", f"{url}{sep}token={TOKEN}", body, **kwargs)

    def test_an_unexpected_error_in_a_route_is_a_json_500(self) -> None:
        """A route that raises what it did not expect answers a JSON 500, not HTML."""
        pipeline = Pipeline(self.config, ProjectCache(self.store, 0, 0), self.store)

        def broken() -> tuple[bool, str]:
            raise RuntimeError("readiness broke")

        gateway = Gateway(pipeline, maybeDeferred, InFlight(64, Clock()), ready=broken)
        answer = self.call("GET", "/readyz", client=StubTreq(gateway.app.resource()))
        assert answer.code == 500
        assert answer.headers.getRawHeaders("content-type") == ["application/json"]
        assert json.loads(answer.body) == {"status": "internal error"}
        assert len(self.flushLoggedErrors(RuntimeError)) == 1

    def test_metrics_count_webhooks_and_builds(self) -> None:
        """/metrics counts answers by registry and code, builds, and durations."""
        client = self.gateway()
        self.post("/events/webhook/acme/app", ACR_PUSH, client=client)
        self.post("/events/webhook/acme/app", ACR_PING, client=client)
        self.call("POST", "/events/webhook/acme/app?token=nope", DOCKERHUB, client=client)
        text = self.call("GET", "/metrics", client=client).body.decode()
        self.assertIn('brigade_crgw_webhooks_total{code="200",registry="acr"} 2.0', text)
        self.assertIn('brigade_crgw_webhooks_total{code="401",registry="none"} 1.0', text)
        self.assertIn('brigade_crgw_builds_total{registry="acr"} 1.0', text)
        self.assertIn("brigade_crgw_webhooks_in_flight 0.0", text)
        self.assertIn('brigade_crgw_webhook_duration_seconds_bucket{le="+Inf"} 3.0', text)
        self.assertIn("brigade_crgw_webhook_duration_seconds_count 3.0", text)

    def test_metrics_standard_series_and_openmetrics(self) -> None:
        """/metrics carries prometheus_client's process_* and python_* series,
        and answers OpenMetrics to a scraper that asks for it."""
        client = self.gateway()
        reply = self.call("GET", "/metrics", client=client)
        text = reply.body.decode()
        self.assertEqual(
            reply.headers.getRawHeaders("content-type"),
            ["text/plain; version=0.0.4; charset=utf-8"],
        )
        for series in ("process_resident_memory_bytes", "process_open_fds", "python_info"):
            self.assertIn(f"\n{series}", text)
        self.assertNotIn("_created", text)
        open_metrics = self.call(
            "GET",
            "/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            client=client,
        )
        self.assertTrue(open_metrics.body.endswith(b"# EOF\n"))

    def test_healthz(self) -> None:
        """GET /healthz answers 200 OK, as v1 did."""
        reply = self.call("GET", "/healthz")
        self.assertEqual((reply.code, reply.body), (200, b"OK"))

    def test_every_url_form_makes_one_build(self) -> None:
        """Each URL form users have configured makes exactly one build with its commit."""
        pid = project_id("acme/app")
        for n, (url, commit) in enumerate(URL_FORMS.items()):
            before = len(self.store.builds())
            sent = fresh(DOCKERHUB, n)
            reply = self.post(url, sent)
            self.assertEqual(reply.code, 200, (url, reply.body))
            body = reply.json()
            self.assertEqual(body["status"], "Success")
            self.assertEqual(len(body["builds"]), 1)
            self.assertEqual(len(self.store.builds()), before + 1, url)
            data = decoded(self.store.secrets[body["builds"][0]])
            self.assertEqual(data["commit_ref"], commit, url)
            self.assertEqual(data["project_id"], pid)
            self.assertEqual(data["payload"].encode(), sent)
            self.assertEqual(data["event_type"], "image_push")
            self.assertEqual(data["event_provider"], "dockerhub")
            self.assertEqual(data["short_title"], "svendowideit/testhook:latest")

    def test_redelivery_is_one_build(self) -> None:
        """The same delivery twice names the same build, and only one exists."""
        first = self.post("/events/webhook/acme/app", ACR_PUSH).json()
        second = self.post("/events/webhook/acme/app", ACR_PUSH).json()
        self.assertEqual(first, second)
        self.assertEqual(len(self.store.builds()), 1)

    def test_acr_push(self) -> None:
        """An ACR push is a build from provider acr, titled with its image."""
        body = self.post("/events/webhook/acme/app", ACR_PUSH).json()
        data = decoded(self.store.secrets[body["builds"][0]])
        self.assertEqual(data["event_provider"], "acr")
        self.assertEqual(data["short_title"], "hello-world:v1")
        self.assertIn("myregistry.azurecr.io/hello-world:v1", data["long_title"])

    def test_ignored_events(self) -> None:
        """A ping makes no build and says why."""
        reply = self.post("/events/webhook/acme/app", ACR_PING)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json()["status"], "ignored")
        self.assertIn("ping", reply.json()["reason"])
        self.assertEqual(self.store.builds(), [])

    def test_unknown_project_unauthenticated(self) -> None:
        """Under require=always an unknown project is 401, like a wrong token."""
        unknown = self.post("/events/webhook/nobody/here")
        wrong = self.call("POST", "/events/webhook/acme/app?token=nope", DOCKERHUB)
        self.assertEqual(unknown.code, 401)
        self.assertEqual(unknown.json(), wrong.json())
        self.assertEqual(
            unknown.headers.getRawHeaders("WWW-Authenticate"), ['Bearer realm="brigade-crgw"']
        )
        self.assertEqual(self.store.builds(), [])

    def test_unknown_project_when_configured(self) -> None:
        """Under require=when-configured an unknown project is 404, as v1 said
        (with 404 rather than v1's 400)."""
        client = self.gateway(require="when-configured")
        reply = self.post("/events/webhook/nobody/here", client=client)
        self.assertEqual((reply.code, reply.json()), (404, {"status": "project not found"}))

    def test_project_without_token(self) -> None:
        """A project without a token refuses under always, with the very
        answer an unknown project gets; it accepts under when-configured."""
        self.store.put(project_secret("open/app", token=None))
        refused = self.call("POST", "/events/webhook/open/app", DOCKERHUB)
        unknown = self.call("POST", "/events/webhook/nobody/here", DOCKERHUB)
        self.assertEqual(refused.code, 401)
        self.assertEqual(refused.body, unknown.body)
        accepted = self.call(
            "POST",
            "/events/webhook/open/app",
            DOCKERHUB,
            client=self.gateway(require="when-configured"),
        )
        self.assertEqual(accepted.code, 200)

    def test_not_json(self) -> None:
        """A body that is not JSON is a 400 with a reason."""
        reply = self.post("/events/webhook/acme/app", b"{not json")
        self.assertEqual(reply.code, 400)
        self.assertEqual(reply.json()["status"], "bad request")

    def test_media_type(self) -> None:
        """A non-JSON media type is 415; JSON variants are accepted."""
        for content_type in ("text/html", "application/x-www-form-urlencoded", "text/json"):
            reply = self.post("/events/webhook/acme/app", headers={"Content-Type": content_type})
            self.assertEqual(reply.code, 415, content_type)
            self.assertEqual(reply.json()["status"], "unsupported media type")
        distribution = body("distribution/push-envelope-docs.json")
        for content_type, sent in (
            ("application/json; charset=utf-8", DOCKERHUB),
            ("application/vnd.docker.distribution.events.v2+json", distribution),
            ("APPLICATION/JSON", fresh(DOCKERHUB, 1)),
        ):
            reply = self.post(
                "/events/webhook/acme/app", sent, headers={"Content-Type": content_type}
            )
            self.assertEqual(reply.code, 200, (content_type, reply.body))

    def test_store_down(self) -> None:
        """With Kubernetes unreachable the answer is 503 with Retry-After, and
        the next delivery succeeds once it is back."""
        self.store.down = True
        reply = self.post("/events/webhook/acme/app")
        self.assertEqual(reply.code, 503)
        self.assertEqual(reply.headers.getRawHeaders("Retry-After"), ["5"])
        self.store.down = False
        self.assertEqual(self.post("/events/webhook/acme/app").code, 200)

    def test_strict_refuses_unknown_payloads(self) -> None:
        """An unrecognised JSON body is a generic build, or 422 when strict."""
        body = b'{"hello": "world"}'
        lenient = self.post("/events/webhook/acme/app", body)
        self.assertEqual(lenient.code, 200)
        data = decoded(self.store.secrets[lenient.json()["builds"][0]])
        self.assertEqual(data["event_provider"], "generic")
        strict = self.post("/events/webhook/acme/app", body, client=self.gateway(strict=True))
        self.assertEqual(strict.code, 422)

    def test_not_found_and_method(self) -> None:
        """Other paths are JSON 404s; wrong methods JSON 405s."""
        missing = self.call("GET", "/nothing")
        self.assertEqual(missing.code, 404)
        self.assertEqual(missing.json()["status"], "not found")
        wrong = self.call("GET", "/events/webhook/acme/app")
        self.assertEqual(wrong.code, 405)
        self.assertEqual(wrong.json()["status"], "method not allowed")

    def test_cloudevents_handshake(self) -> None:
        """OPTIONS with WebHook-Request-Origin is allowed, for CloudEvents webhooks."""
        reply = self.call(
            "OPTIONS",
            "/events/webhook/acme/app",
            headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
        )
        self.assertEqual(reply.code, 200)
        self.assertEqual(
            reply.headers.getRawHeaders("WebHook-Allowed-Origin"), ["eventgrid.azure.net"]
        )

    def test_ids_kubernetes_cannot_hold(self) -> None:
        """A brigade- name that is no valid Secret name is an unknown project,
        found without asking Kubernetes (which is down here)."""
        self.store.down = True
        reply = self.post("/events/webhook/brigade-Upper")
        self.assertEqual(reply.code, 401)
        reply = self.post(
            "/events/webhook/brigade-x/y", client=self.gateway(require="when-configured")
        )
        self.assertEqual(reply.code, 404)

    def test_bad_names_are_400(self) -> None:
        """Encoded slashes, dot segments and odd characters in names are 400."""
        for url in (
            "/events/webhook/acme%2Fapp",
            "/events/webhook/../app",
            "/events/webhook/acme/..",
            "/events/webhook/acme/app/a..b",
            "/events/webhook/ac%00me/app",
            "/events/dockerhub/onlyone",
        ):
            self.assertEqual(self.post(url).code, 400, url)
        self.assertEqual(self.store.builds(), [])


@pytest.mark.parametrize(
    ("path", "commit", "target"),
    [
        (b"/events/webhook/acme/app", None, ("acme/app", "")),
        (b"/events/webhook/acme/app/feature/x/y", None, ("acme/app", "feature/x/y")),
        (b"/events/webhook/brigade-abc", "v1", ("brigade-abc", "v1")),
        (b"/events/dockerhub/acme/app/v1", "v1", ("acme/app", "v1")),
    ],
)
def test_parse_target(path: bytes, commit: str | None, target: tuple[str, str]) -> None:
    """Project and commit-ish are read from the raw path and the query."""
    route = path.split(b"/")[2].decode()
    parsed = parse_target(path, route, commit)
    assert (parsed.project, parsed.commit) == target


@pytest.mark.parametrize(
    ("path", "target"),
    [
        (b"/events/webhoo%6b/acme/app", ("acme/app", "")),
        (b"/events/webhook/%61cme/app/v%31", ("acme/app", "v1")),
        (b"/events/dockerhub/acme/app/feature%2Fx", ("acme/app", "feature/x")),
    ],
)
def test_parse_target_reads_the_routed_segments(path: bytes, target: tuple[str, str]) -> None:
    """The project is read from the decoded segments that routing matched, so
    an escaped letter names the same project the route saw."""
    parsed = parse_target(path, path.split(b"/")[2].decode().replace("%6b", "k"), None)
    assert (parsed.project, parsed.commit) == target


@pytest.mark.parametrize(
    "path",
    [
        b"/events/webhook%2Facme/app",
        b"/events/webhook%2facme/app/v1",
        b"/events/webhook/acme%2Fapp",
        b"/events/webhook/acme/%2E%2E",
        b"/events/webhook/acme/app%2e",
        b"/events/dockerhub/%2e/app",
    ],
)
def test_encoded_separators_in_the_project_are_400(path: bytes) -> None:
    """An encoded '/' or '.' in the route or project part is a 400."""
    route = "dockerhub" if b"dockerhub" in path else "webhook"
    with pytest.raises(Refusal) as e:
        parse_target(path, route, None)
    assert e.value.code == 400


@pytest.mark.parametrize("commit", ["a..b", "/x", "x/", "x//y", "a b", "x" * 201, "$(x)"])
def test_bad_commits(commit: str) -> None:
    """Commit-ishes that git would refuse, or that could be mischief, are 400."""
    with pytest.raises(Refusal) as e:
        parse_target(b"/events/webhook/acme/app", "webhook", commit)
    assert e.value.code == 400


@given(st.binary(max_size=300), st.one_of(st.none(), st.text(max_size=60)))
def test_parse_target_never_crashes(rest: bytes, commit: str | None) -> None:
    """Any raw path and commit give a Target with checked parts, or a 400."""
    for route in ("webhook", "dockerhub"):
        try:
            target = parse_target(b"/events/" + route.encode() + b"/" + rest, route, commit)
        except Refusal as e:
            assert e.code == 400
            continue
        assert ".." not in target.project and "%" not in target.project
        assert target.project.count("/") <= 1
        assert all(c.isascii() and c.isprintable() for c in target.project + target.commit)


class ShutdownTests(SynchronousTestCase):
    def test_give_up_answers_what_still_waits(self) -> None:
        """At the drain deadline, a webhook whose work has not ended is
        answered 503 with Retry-After; its work ending later changes nothing."""
        store = MemoryStore()
        store.put(project_secret("acme/app"))
        pipeline = Pipeline(Config(retry_seconds=0), ProjectCache(store, 0, 0), store)
        held: list[Deferred[Any]] = []

        def run(f: Any, *args: Any) -> Deferred[Any]:
            held.append(Deferred())
            return held[-1]

        gateway = Gateway(pipeline, run, InFlight(64, Clock()))
        client = StubTreq(gateway.app.resource())
        url = f"http://gw/events/webhook/acme/app?token={TOKEN}"
        pending = client.request("POST", url, data=DOCKERHUB, headers=JSON)
        self.assertNoResult(pending)
        self.assertEqual(gateway.give_up(), 1)
        client.flush()
        response = self.successResultOf(pending)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["5"])
        held[0].errback(RuntimeError("ended after the answer"))
        self.assertEqual(gateway.give_up(), 0)
