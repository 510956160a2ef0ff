"""Bad input against the real daemon and control plane: every case gets a
4xx JSON answer (or the connection is closed after one), the process stays
up, and no Secret is created.  Credentials are tried in every placement;
nothing the gateway logs may contain a token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brigade_crgw.brigade import project_id
from devtools import gateway as gateway_process
from devtools.outage import FORWARD, HANG, Proxy, proxied_kubeconfig
from devtools.projects import TOKEN, fresh, project_secret
from devtools.waiting import until

from .conftest import Namespace
from .helpers import BEARER, DOCKERHUB, established, read_all
from .helpers import body as payload_body

pytestmark = pytest.mark.integration
GOOD = "/events/webhook/acme/app"
MAX_BODY = 4096


@pytest.fixture(scope="module")
def gateway(
    namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[gateway_process.Daemon]:
    core = namespace.plane.core
    core.create_namespaced_secret(namespace.name, project_secret("acme/app"))
    core.create_namespaced_secret(namespace.name, project_secret("open/app", token=None))
    process = gateway_process.start(
        tmp_path_factory.mktemp("gw"),
        namespace.name,
        namespace.gateway_kubeconfig,
        {"server": {"max_body_bytes": MAX_BODY, "read_timeout": 2}},
    )
    yield process
    process.stop()
    assert TOKEN not in process.log(), "a token reached the log"


@pytest.fixture
def no_new_builds(gateway: gateway_process.Daemon, namespace: Namespace) -> Iterator[None]:
    """Asserts, after the test, that no build was created and the daemon lives."""
    before = builds(namespace)
    yield
    assert gateway.alive(), gateway.log()[-2000:]
    assert gateway.request("GET", "/healthz").status == 200
    assert builds(namespace) == before


def builds(ns: Namespace) -> set[str]:
    secrets = ns.plane.core.list_namespaced_secret(ns.name, label_selector="component=build")
    return {s.metadata.name for s in secrets.items}


def assert_json_refusal(answer: gateway_process.Answer, status: int) -> dict[str, Any]:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert isinstance(body["status"], str)
    return body


def raw_exchange(port: int, data: bytes, pause: float = 0.0, read_timeout: float = 10) -> bytes:
    """Send raw bytes (optionally one at a time with pauses) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        try:
            if pause:
                for i in range(len(data)):
                    s.sendall(data[i : i + 1])
                    time.sleep(pause)
            else:
                s.sendall(data)
        except OSError:
            pass  # the gateway may answer and close before it has read everything
        return read_all(s)


BAD_BODIES = {
    "malformed": b'{"push_data": {"tag": "v1"',
    "truncated": DOCKERHUB[: len(DOCKERHUB) // 2],
    "invalid utf-8": b'{"repository": {"repo_name": "\xff\xfe"}}',
    "deep nesting": b"[" * 2000 + b"]" * 2000,
    "deep objects": b'{"a":' * 600 + b"1" + b"}" * 600,
    "scalar": b"42",
    "empty": b"",
    "nan": b'{"push_data": NaN}',
}


@pytest.mark.usefixtures("no_new_builds")
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_bodies_are_400(gateway: gateway_process.Daemon, case: str) -> None:
    """Bodies that are not sound JSON are a 400 with a reason."""
    body = assert_json_refusal(gateway.post(GOOD, BAD_BODIES[case], BEARER), 400)
    assert body["reason"]


WRONG_TYPES = {
    "push_data a list": ("dockerhub", {"push_data": [], "repository": {"repo_name": "a/b"}}),
    "tag a number": ("dockerhub", {"push_data": {"tag": 5}, "repository": {"repo_name": "a/b"}}),
    "repo_name an object": (
        "dockerhub",
        {"push_data": {"tag": "v"}, "repository": {"repo_name": {}}},
    ),
    "events a string": ("distribution", {"events": "x"}),
    "event target a list": ("distribution", {"events": [{"action": "push", "target": []}]}),
    "acr target a string": ("acr", {"action": "push", "target": "x", "id": "1"}),
    "harbor resources a dict": (
        "harbor",
        {"type": "PUSH_ARTIFACT", "event_data": {"resources": {}}},
    ),
    "pubsub data not base64": ("gar", {"message": {"data": "***", "messageId": "1"}}),
    "ecr detail a list": (
        "ecr",
        {"source": "aws.ecr", "detail-type": "ECR Image Action", "detail": []},
    ),
    "quay tags a number": ("quay", {"repository": "a/b", "updated_tags": 3}),
}


@pytest.mark.usefixtures("no_new_builds")
@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_wrong_types_are_refused(gateway: gateway_process.Daemon, case: str) -> None:
    """Fields of the wrong type in a registry's format are a 400, not a build
    and not a crash."""
    registry, body = WRONG_TYPES[case]
    answer = gateway.post(f"{GOOD}?registry={registry}", body, BEARER)
    assert_json_refusal(answer, 400)


@pytest.mark.usefixtures("no_new_builds")
@pytest.mark.parametrize(
    "path",
    [
        "/events/webhook/acme%2Fapp",
        "/events/webhook/acme%2fapp/v1",
        "/events/webhook/../acme/app",
        "/events/webhook/acme/%2E%2E",
        "/events/webhook/acme/..",
        "/events/webhook/acme/app/..%2F..%2Fetc",
        "/events/webhook/acme/app/a..b",
        "/events/webhook/acme/app?commit=%0d%0aSet-Cookie:%20x=1",
        "/events/webhook/" + "a" * 300 + "/app",
        "/events/webhook/acme/app/" + "c" * 300,
        "/events/webhook/ac%00me/app",
        "/events/dockerhub/onlyone",
    ],
)
def test_bad_names_are_400(gateway: gateway_process.Daemon, path: str) -> None:
    """Encoded slashes, dot segments, control characters and overlong names
    or commit-ishes are a 400, before any credentials are looked at."""
    answer = gateway.post(path, DOCKERHUB, BEARER)
    assert_json_refusal(answer, 400)
    assert "set-cookie" not in answer.headers


@pytest.mark.usefixtures("no_new_builds")
def test_huge_body_with_length_is_413_at_once(gateway: gateway_process.Daemon) -> None:
    """A Content-Length over the limit is refused without reading the body."""
    head = (
        f"POST {GOOD}?token={TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    answer = raw_exchange(gateway.port, head)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["status"] == "payload too large"


@pytest.mark.usefixtures("no_new_builds")
def test_huge_chunked_body_is_413(gateway: gateway_process.Daemon) -> None:
    """A body without Content-Length is counted as it arrives and cut at the limit."""
    chunk = b"x" * 1024
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(64)) + b"0\r\n\r\n"
    head = (
        f"POST {GOOD}?token={TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    answer = raw_exchange(gateway.port, head + body)
    assert answer.startswith(b"HTTP/1.1 413 ")


@pytest.mark.usefixtures("no_new_builds")
def test_body_at_the_limit_is_read(gateway: gateway_process.Daemon) -> None:
    """A body of exactly the limit is read (and here refused as not JSON)."""
    assert_json_refusal(gateway.post(GOOD, b" " * MAX_BODY, BEARER), 400)
    assert_json_refusal(gateway.post(GOOD, b" " * (MAX_BODY + 1), BEARER), 413)


@pytest.mark.usefixtures("no_new_builds")
@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
def test_non_json_media_types_are_415(gateway: gateway_process.Daemon, content_type: str) -> None:
    """Only JSON media types are accepted."""
    answer = gateway.post(GOOD, DOCKERHUB, {**BEARER, "Content-Type": content_type})
    assert_json_refusal(answer, 415)


@pytest.mark.usefixtures("no_new_builds")
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_methods_are_405(gateway: gateway_process.Daemon, method: str) -> None:
    """Webhook routes take POST (and the OPTIONS handshake) only."""
    answer = gateway.request(
        method, GOOD, DOCKERHUB, {**BEARER, "Content-Type": "application/json"}
    )
    assert_json_refusal(answer, 405)


@pytest.mark.usefixtures("no_new_builds")
def test_unknown_paths_are_404(gateway: gateway_process.Daemon) -> None:
    """Anything but the webhook routes and /healthz is a JSON 404."""
    for path in ("/", "/events", "/events/github/acme/app", "/healthz/x", "/%00"):
        assert_json_refusal(gateway.post(path, DOCKERHUB, BEARER), 404)


@pytest.mark.usefixtures("no_new_builds")
def test_header_injection_attempts(gateway: gateway_process.Daemon) -> None:
    """Smuggled line breaks and oversized headers never reach a handler."""
    for raw in (
        f"POST {GOOD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\rInjected: {TOKEN}\r\n"
        "Content-Length: 2\r\n\r\n{}",
        f"POST {GOOD} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 70000}\r\nContent-Length: 2\r\n\r\n{{}}",
        f"POST {GOOD} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}",
        f"POST {GOOD} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Content-Length: 2\r\n\r\n{}",
    ):
        answer = raw_exchange(gateway.port, raw.encode())
        assert not answer.startswith(b"HTTP/1.1 2"), answer[:200]


@pytest.mark.usefixtures("no_new_builds")
def test_slow_sender_gets_408_while_others_are_served(gateway: gateway_process.Daemon) -> None:
    """A sender that trickles its request is cut off after read_timeout (2 s
    here) with a 408, and the gateway serves others meanwhile."""
    request = (
        f"POST {GOOD}?token={TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(DOCKERHUB)}\r\n\r\n"
    ).encode() + DOCKERHUB
    result: dict[str, bytes] = {}
    slow = threading.Thread(
        target=lambda: result.update(answer=raw_exchange(gateway.port, request, pause=0.05))
    )
    started = time.monotonic()
    slow.start()
    until(lambda: established(gateway.port), "the slow sender's connection")
    assert gateway.request("GET", "/healthz").status == 200
    slow.join(15)
    assert result["answer"].startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 6


PLACEMENTS = {
    "query": lambda token, body: (f"?token={token}", {}),
    "bearer": lambda token, body: ("", {"Authorization": f"Bearer {token}"}),
    "basic": lambda token, body: (
        "",
        {"Authorization": "Basic " + base64.b64encode(f"registry:{token}".encode()).decode()},
    ),
    "github": lambda token, body: (
        "",
        {"X-Hub-Signature-256": "sha256=" + hmac.new(token.encode(), body, "sha256").hexdigest()},
    ),
    "jfrog": lambda token, body: (
        "",
        {"X-JFrog-Event-Auth": hmac.new(token.encode(), body, "sha256").hexdigest()},
    ),
    "nexus": lambda token, body: (
        "",
        {"X-Nexus-Webhook-Signature": hmac.new(token.encode(), body, hashlib.sha1).hexdigest()},
    ),
    "signature": lambda token, body: (
        "",
        {"X-Signature": "sha256=" + hmac.new(token.encode(), body, "sha256").hexdigest()},
    ),
}


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_credentials_in_every_placement(
    gateway: gateway_process.Daemon, namespace: Namespace, placement: str
) -> None:
    """The right token builds; a wrong, truncated or missing one, or a
    signature replayed over an altered body, gets 401 and builds nothing."""
    n = sorted(PLACEMENTS).index(placement)
    body = fresh(DOCKERHUB, 5000 + n)
    make = PLACEMENTS[placement]
    before = builds(namespace)
    for token in ("wrong-token", TOKEN[:-1], TOKEN + "x", ""):
        query, headers = make(token, body)
        assert_json_refusal(gateway.post(GOOD + query, body, headers), 401)
    assert_json_refusal(gateway.post(GOOD, body), 401)
    query, headers = make(TOKEN, body)
    altered = body.replace(b"latest", b"hacked")
    if placement in ("github", "jfrog", "nexus", "signature"):
        assert_json_refusal(gateway.post(GOOD + query, altered, headers), 401)
    assert builds(namespace) == before
    answer = gateway.post(GOOD + query, body, headers)
    assert answer.status == 200, answer.body
    assert builds(namespace) - before == set(answer.json()["builds"])


@pytest.mark.usefixtures("no_new_builds")
def test_probing_project_names_reveals_nothing(gateway: gateway_process.Daemon) -> None:
    """Without credentials, an existing and an unknown project get the same answer."""
    existing = gateway.post(GOOD, DOCKERHUB)
    unknown = gateway.post("/events/webhook/nobody/here", DOCKERHUB)
    by_id = gateway.post(f"/events/webhook/{project_id('nobody/else')}", DOCKERHUB)
    assert existing.status == unknown.status == by_id.status == 401
    assert existing.body == unknown.body == by_id.body
    assert existing.headers["www-authenticate"] == unknown.headers["www-authenticate"]


@pytest.mark.usefixtures("no_new_builds")
def test_project_without_token_refuses(gateway: gateway_process.Daemon) -> None:
    """A project with no token refuses with the very 401 an unknown project
    and a wrong token get; how to add a token goes to the log only."""
    without = gateway.post("/events/webhook/open/app", DOCKERHUB)
    unknown = gateway.post("/events/webhook/nobody/here", DOCKERHUB)
    wrong = gateway.post("/events/webhook/open/app?token=guess", DOCKERHUB)
    assert_json_refusal(without, 401)
    assert without.body == unknown.body == wrong.body
    assert without.headers["www-authenticate"] == unknown.headers["www-authenticate"]
    assert "crGatewayToken" not in without.body.decode()
    assert "added to its Secret under crGatewayToken" in gateway.log()


@pytest.mark.parametrize("query", ["?x=1;token={}", "?%74oken={}", "?a=b&TO%4Ben=x;to%6b%65n={}"])
def test_no_token_spelling_reaches_the_log(
    gateway: gateway_process.Daemon, namespace: Namespace, query: str
) -> None:
    """A token that authenticates after ';' or with an escaped name is not
    written to the access log (or any log)."""
    n = 6000 + ["?x", "?%", "?a"].index(query[:2])
    answer = gateway.post(GOOD + query.format(TOKEN), fresh(DOCKERHUB, n))
    assert answer.status == 200, answer.body
    log = gateway.log()
    assert TOKEN not in log
    assert "REDACTED" in log


def test_control_characters_never_reach_a_log_line_or_a_title(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """A repository and tag holding CR, LF and ESC make a build whose titles
    and log line show them escaped, never raw."""
    doc = json.loads(fresh(DOCKERHUB, 6100))
    doc["repository"]["repo_name"] = "acme/app\r\n2026-11-27T00:00:00 [forged#info] hi\x1b[2J"
    doc["push_data"]["tag"] = "v1\u202e\n" + "t" * 300
    answer = gateway.post(GOOD, json.dumps(doc).encode(), BEARER)
    assert answer.status == 200, answer.body
    [name] = answer.json()["builds"]
    secret = namespace.plane.core.read_namespaced_secret(name, namespace.name)
    short = base64.b64decode(secret.data["short_title"]).decode()
    long = base64.b64decode(secret.data["long_title"]).decode()
    for title in (short, long):
        assert not any(c in title for c in "\r\n\x1b\u202e"), title
        assert "acme/app\\x0d\\x0a2026" in title
    # The tag is cut to 128 characters (4 before the t's, the mark after),
    # then escaped.
    assert short.endswith("t…") and short.rsplit(":", 1)[1].count("t") == 128 - 4 - 1
    log = gateway.log()
    assert "\x1b" not in log and "\u202e" not in log
    forged = [line for line in log.splitlines() if "[forged#info]" in line]
    assert forged and all("webhook project=" in line for line in forged)
    assert "hi\\x1b[2J" in log


@pytest.mark.usefixtures("no_new_builds")
@pytest.mark.parametrize(
    "path",
    [
        "/events/webhook%2Facme/app",
        "/events/webhook%2facme%2Fapp",
        "/events/dockerhub%2Facme/app",
        "/events/webhook/acme%2eapp",
        "/events/webhook/%2E/app",
    ],
)
def test_encoded_separators_in_the_project_part_are_400(
    gateway: gateway_process.Daemon, path: str
) -> None:
    """A route or project part holding an encoded '/' or '.' is a 400, even
    with valid credentials."""
    assert_json_refusal(gateway.post(path + f"?token={TOKEN}", DOCKERHUB), 400)


def test_escaped_route_names_the_routed_project(
    gateway: gateway_process.Daemon, namespace: Namespace
) -> None:
    """``/events/webhoo%6b/acme/app`` is the webhook route for acme/app (what
    routing saw), not project ``b/acme`` with commit ``app``."""
    answer = gateway.post(f"/events/webhoo%6b/acme/app?token={TOKEN}", fresh(DOCKERHUB, 6200))
    assert answer.status == 200, answer.body
    [name] = answer.json()["builds"]
    secret = namespace.plane.core.read_namespaced_secret(name, namespace.name)
    assert secret.metadata.labels["project"] == project_id("acme/app")
    assert base64.b64decode(secret.data["commit_ref"]) == b""


QUAY = payload_body("quay/repo_push.json")
DISTRIBUTION = payload_body("distribution/push-envelope-docs.json")


def test_builds_per_webhook_are_bounded(namespace: Namespace, tmp_path: Path) -> None:
    """With the default body limit: one tag repeated 1,000 times and 300
    identical Distribution events each make one build; 21 distinct tags
    (over the default max_builds_per_webhook of 20) get 422 and no build."""
    process = gateway_process.start(tmp_path, namespace.name, namespace.gateway_kubeconfig)
    try:
        quay = json.loads(QUAY)
        quay["updated_tags"] = ["v1"] * 1000
        answer = process.post(GOOD, quay, BEARER)
        assert answer.status == 200, answer.body
        assert len(answer.json()["builds"]) == 1
        envelope = json.loads(DISTRIBUTION)
        envelope["events"] = [envelope["events"][0]] * 300
        answer = process.post(GOOD, envelope, BEARER)
        assert answer.status == 200, answer.body
        assert len(answer.json()["builds"]) == 1
        before = builds(namespace)
        quay["updated_tags"] = [f"v{n}" for n in range(21)]
        refused = assert_json_refusal(process.post(GOOD, quay, BEARER), 422)
        assert "max_builds_per_webhook" in refused["reason"]
        assert builds(namespace) == before
    finally:
        process.stop()


def test_in_flight_bound(namespace: Namespace, tmp_path: Path) -> None:
    """With max_in_flight webhooks waiting on a stalled API server, one more
    gets 503 with Retry-After at once, instead of queueing."""
    namespace.plane.core.read_namespaced_secret(project_id("acme/app"), namespace.name)
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "via-proxy.kubeconfig"
    )
    process = gateway_process.start(
        tmp_path, namespace.name, kubeconfig, {"server": {"max_in_flight": 1}}
    )
    try:
        proxy.set(HANG)
        waiting = threading.Thread(target=lambda: process.post(GOOD, DOCKERHUB, BEARER))
        waiting.start()
        process.wait_in_flight(1)
        started = time.monotonic()
        answer = process.post(GOOD, DOCKERHUB, BEARER)
        assert time.monotonic() - started < 1
        assert_json_refusal(answer, 503)
        assert answer.headers["retry-after"] == "5"
        proxy.set(FORWARD)
        waiting.join(10)
        assert process.alive()
    finally:
        process.stop()
        proxy.close()
