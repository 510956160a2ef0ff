"""The bench's pure parts: wrk's report, the Lua pushes, the table, the
targets and the profile's headline.  No timing is asserted anywhere."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import profile, report, soak, wrk
from bench.measure import PUSH, Gateways, direct_body, sample_push
from brigade_crgw import registries
from devtools import gateway

# A report as wrk 4.1 prints it with --latency, errors included.
REPORT = """\
Running 5s test @ http://127.0.0.1:41234
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   168.10ms   61.50ms   1.02s    80.11%
    Req/Sec    95.31     30.02   180.00     69.00%
  Latency Distribution
     50%  164.22ms
     75%  190.01ms
     90%  233.47ms
     99%    1.02s
  951 requests in 5.01s, 290.10KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:    189.82
Transfer/sec:     57.90KB
"""


def test_parse_reads_totals_percentiles_and_errors() -> None:
    """A wrk report gives requests, seconds, non-2xx, socket errors and the
    percentiles in milliseconds whatever wrk's unit."""
    result = wrk.parse(REPORT)
    assert (result.requests, result.seconds, result.non_2xx) == (951, 5.01, 12)
    assert result.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 1}
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (164.22, 233.47, 1020.0)
    assert result.ok == 939
    assert result.ok_per_second == pytest.approx(939 / 5.01)


def test_parse_microseconds_and_no_error_lines() -> None:
    """Microsecond latencies convert, and absent error lines mean zero errors."""
    text = "\n".join(
        line
        for line in REPORT.replace("164.22ms", "812.00us").splitlines()
        if not line.lstrip().startswith(("Socket", "Non-2xx"))
    )
    result = wrk.parse(text)
    assert result.p50_ms == pytest.approx(0.812)
    assert result.non_2xx == 0 and not any(result.socket_errors.values())


def test_parse_refuses_a_report_without_latency() -> None:
    """A report without --latency's distribution is an error, not zeros."""
    text = "\n".join(line for line in REPORT.splitlines() if "%  " not in line)
    with pytest.raises(wrk.BenchError):
        wrk.parse(text)


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP server that keeps every body and answers every
    fifth request 503."""
    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(503 if len(bodies) % 5 == 0 else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


def test_real_wrk_sends_distinct_pushes_and_its_report_parses(
    recorder: tuple[str, list[bytes]],
) -> None:
    """Real wrk with the bench's Lua script sends Docker Hub pushes of the
    exact size, each a distinct delivery, and its report counts what the
    server saw."""
    url, bodies = recorder
    pieces, padding = wrk.push_template(PUSH, 4096, "t0001")
    script = wrk.push_script("/events/webhook/bench/app?token=x", pieces, padding, "t0001")
    result = wrk.run(wrk.ensure_wrk(), url, script, concurrency=4, seconds=1, threads=2)
    # Requests in flight when wrk stopped reached the server without an answer.
    assert 0 < result.requests <= len(bodies) <= result.requests + 4
    assert {len(b) for b in bodies} == {4096}
    assert result.non_2xx <= len(bodies) // 5 and result.non_2xx >= result.requests // 5 - 4
    deliveries = set()
    for body in bodies:
        (event,) = registries.decode(body, {"content-type": "application/json"}, None).events
        assert event.registry == "dockerhub" and event.repository == "bench/app"
        deliveries.add(event.delivery_id)
    assert len(deliveries) == len(bodies)


def test_sample_push_has_the_size_and_direct_body_is_the_gateways_secret() -> None:
    """The direct run's body is the gateway's build Secret for such a push,
    named by the API server."""
    body = sample_push(64 * 1024)
    assert len(body) == 64 * 1024
    secret = json.loads(direct_body(body))
    assert secret["type"] == "brigade.sh/build"
    assert secret["metadata"]["generateName"] == "brigade-worker-"
    assert "name" not in secret["metadata"]
    assert base64.b64decode(secret["data"]["payload"]) == body


def test_gateway_ini_keeps_the_shipped_defaults() -> None:
    """The bench's gateway runs the shipped ini with only the port,
    namespace, kubeconfig (and a raised body limit when asked) changed."""
    sections = gateway.settings_for(
        4321,
        "ns",
        Path("/k"),
        {"server": {"max_body_bytes": 786432}},
        base=gateway.shipped_settings(),
    )
    text = gateway.ini_text(sections)
    assert "listen = tcp:4321:interface=127.0.0.1" in text
    assert "max_body_bytes = 786432" in text and "threads = 8" in text
    assert "max_in_flight = 64" in text and "namespace = ns" in text
    assert "kubeconfig = /k" in text


def test_bench_gateways_get_their_own_spool_and_the_experiment(tmp_path: Path) -> None:
    """Each bench gateway has a spool file of its own under the bench's
    directory, a raised body limit only for bodies above the shipped one,
    and the --set overrides; a key the shipped ini lacks is refused."""
    gateways = Gateways.create(tmp_path, [(("kubernetes", "threads"), "32")], None)
    assert gateways.pool == 32 and gateways.described() == ["[kubernetes] threads = 32"]
    small = gateways.settings(1024)
    assert "server" not in small and small["kubernetes"] == {"threads": "32"}
    spool = small["spool"]["path"]
    assert isinstance(spool, Path) and spool.parent == tmp_path
    assert gateways.settings(gateways.shipped_max_body + 1)["server"]["max_body_bytes"] == 786432
    with pytest.raises(wrk.BenchError, match="no such key"):
        Gateways.create(tmp_path, [(("kubernetes", "thread"), "32")], None)


def _row(gateway_rate: int, p99: float, rss: float, connections: int | None) -> report.Row:
    direct = wrk.WrkResult(
        1000, 5.0, 0, dict.fromkeys(("connect", "read", "write", "timeout"), 0), 10.0, 20.0, 40.0
    )
    gateway = wrk.WrkResult(gateway_rate * 5, 5.0, 0, dict(direct.socket_errors), 12.0, 30.0, p99)
    return report.Row(
        layout="pinned",
        body="1k",
        concurrency=32,
        direct=report.Run(wrk=direct, secrets=1000),
        gateway=report.GatewayRun(
            wrk=gateway,
            secrets=gateway_rate * 5 + 3,
            cpu_ms=500.0,
            rss_mib=rss,
            connections=connections,
        ),
        pool=8,
    )


def test_table_and_targets() -> None:
    """The table has one line per row with the ratio, the latencies and a
    2xx / Secrets difference; the targets say which are met."""
    good, bad = _row(180, 55.0, 70.0, 8), _row(100, 90.0, 101.0, 700)
    text = report.table([good, bad])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0] == report.HEADER
    assert lines[1].count("|") == lines[0].count("|")
    assert "| 200 | 180 | 90% |" in lines[2]
    assert "| 10 / 20 / 40 | 12 / 30 / 55 |" in lines[2]
    assert "| 1000 / 900 (903) |" in lines[2]
    assert "| 8 (8) |" in lines[2] and "| 700 (8) |" in lines[3]
    assert all(t.met for t in report.targets(good))
    assert [t.met for t in report.targets(bad)] == [False, False, True, False, False]
    assert not report.targets(_row(180, 55.0, 70.0, None))[-1].met


def test_document_holds_machine_table_targets_and_profile() -> None:
    """docs/benchmark.md names the machine, explains the method and holds
    the table, the targets and the profile."""
    row = _row(180, 55.0, 70.0, 8)
    method = report.Method(
        pool=8,
        shipped_max_body=262144,
        raised_max_body=786432,
        duration=5,
        warm_up=1,
        counted=True,
    )
    text = report.document(
        {"nproc": "2", "load average at start (1, 5, 15 min)": "7.1, 6.0, 5.5"},
        [row],
        method,
        profile="- 26% TLS handshakes\n",
    )
    assert "- nproc: 2" in text and "7.1, 6.0, 5.5" in text
    assert report.table([row]) in text and "nftables" in text
    assert "## Targets (pinned, c=32, 1 KiB)" in text and "26% TLS" in text


WORKER = (
    "thread (0x7f01);_bootstrap (threading.py:995);"
    "run (/v/lib/python3.11/site-packages/twisted/_threads/_threadworker.py:47)"
)
# py-spy's raw format: one line per stack, root first, then the count.
RAW = (
    f"{WORKER};do_handshake (/usr/lib/python3.11/ssl.py:1342) 26\n"
    f"{WORKER};dumps (/usr/lib/python3.11/json/__init__.py:231) 14\n"
    "thread (0x7f00);<module> (twistd:8);"
    "doIteration (/v/lib/python3.11/site-packages/twisted/internet/epollreactor.py:200) 60\n"
)


def test_profile_headline() -> None:
    """The profile's headline gives self-time shares by function and
    inclusive shares by area, TLS handshakes named."""
    summary = profile.summarise(RAW)
    assert summary.samples == 100
    assert summary.self_time[0] == ("doIteration (twisted/internet/epollreactor.py)", 0.6)
    areas = dict(summary.areas)
    assert areas["twisted"] == 1.0 and areas["ssl"] == 0.26 and areas["json"] == 0.14
    assert areas["TLS handshakes (ssl do_handshake)"] == 0.26
    assert "26% TLS handshakes" in profile.markdown(summary)


def test_soak_report_counts_lost_duplicated_and_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """The soak's table counts a push answered 2xx without a build as lost,
    one with two builds as duplicated, and a final non-2xx as refused; it
    fails on any of them for single-attempt senders, but not on a retrying
    sender's refusal."""
    single, retrying = soak.SINGLE, soak.RETRYING
    pushes = {
        0: soak.Push(single, ["200"]),
        1: soak.Push(single, ["202"]),
        2: soak.Push(retrying, ["503", "200"]),
        3: soak.Push(retrying, ["ConnectionResetError"] * 5),
    }
    builds = {0: ["a"], 1: ["b"], 2: ["c"]}
    assert soak._report(pushes, builds) is False
    table = capsys.readouterr().out
    assert "| single-attempt | 2 | 200: 1, 202: 1 | 0 | 0 | 0 | 0 |" in table
    assert "| retrying | 2 | 200: 1, ConnectionResetError: 1 | 2 | 0 | 0 | 1 |" in table
    assert soak._report({**pushes, 4: soak.Push(single, ["200"])}, builds) is True  # lost
    assert soak._report(pushes, {**builds, 1: ["b", "b2"]}) is True  # duplicated
    assert soak._report({**pushes, 5: soak.Push(single, ["503"])}, builds) is True  # refused
