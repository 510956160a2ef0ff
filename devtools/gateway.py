"""The real gateway process, for the integration tier and the bench:
``twistd -n brigade-crgw`` started from this working tree, spoken to over
real HTTP."""

from __future__ import annotations

import configparser
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attr

from devtools import ROOT
from devtools.plane.processes import free_port
from devtools.waiting import until

TWISTD = Path(sys.executable).parent / "twistd"


@attr.s(frozen=True, auto_attribs=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    host: str = "127.0.0.1",
    context: ssl.SSLContext | None = None,
) -> Answer:
    """One HTTP request on a new connection (HTTPS with ``context``), and its answer."""
    connection: http.client.HTTPConnection
    if context is not None:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        connection.close()


def metric(port: int, name: str) -> float:
    """The value of the sample ``name`` (with its labels, if any) in the
    /metrics of the gateway on loopback ``port``."""
    text = exchange(port, "GET", "/metrics").body.decode()
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    raise AssertionError(f"no sample {name} in /metrics")


def wait_not_listening(port: int, timeout: float = 30.0) -> None:
    """Until nothing accepts connections on loopback ``port`` any more."""

    def refused() -> bool:
        try:
            exchange(port, "GET", "/healthz", timeout=2)
        except OSError:
            return True
        return False

    until(refused, f"port {port} to stop listening", timeout)


@attr.s(auto_attribs=True)
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Answer:
        return exchange(self.port, method, path, body, headers, timeout)

    def post(
        self,
        path: str,
        body: bytes | dict[str, Any],
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Answer:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request(
            "POST", path, raw, {"Content-Type": "application/json", **(headers or {})}, **kwargs
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 30.0) -> str:
        """Until a line of the log holds ``text``; that line."""

        def line() -> str:
            return next((found for found in self.log().splitlines() if text in found), "")

        return until(line, f"a log line with {text!r}", timeout)

    def metric(self, name: str) -> float:
        """The value of the sample ``name`` (with its labels, if any) in /metrics."""
        return metric(self.port, name)

    def wait_metric(self, name: str, value: float, timeout: float = 30.0) -> None:
        """Until the sample ``name`` in /metrics is ``value``."""
        until(lambda: self.metric(name) == value, f"{name} = {value:g}", timeout)

    def wait_in_flight(self, n: int, timeout: float = 30.0) -> None:
        """Until ``n`` webhooks are being handled (received, not yet answered)."""
        self.wait_metric("brigade_crgw_webhooks_in_flight", n, timeout)

    def wait_not_listening(self, timeout: float = 30.0) -> None:
        """Until the gateway no longer accepts connections (it stops
        listening at SIGTERM)."""
        wait_not_listening(self.port, timeout)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM, as systemd and Kubernetes stop it; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


# What the tests run with unless they say otherwise: a short read timeout,
# a small pool and quick Kubernetes timeouts.
TEST_SETTINGS: dict[str, dict[str, object]] = {
    "server": {"read_timeout": 5},
    "kubernetes": {"request_timeout": 3, "threads": 4},
}
SHIPPED_INI = ROOT / "etc" / "brigade-crgw.ini"


def shipped_settings() -> dict[str, dict[str, object]]:
    """The shipped ``etc/brigade-crgw.ini``, by section."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(SHIPPED_INI.read_text())
    return {name: dict(ini[name]) for name in ini.sections()}


def settings_for(
    port: int,
    namespace: str,
    kubeconfig: Path,
    settings: dict[str, dict[str, object]] | None = None,
    base: dict[str, dict[str, object]] | None = None,
) -> dict[str, dict[str, object]]:
    """The gateway's ini by section: ``base`` (the test settings unless
    given), listening on loopback ``port`` and writing to ``namespace``
    through ``kubeconfig``, then ``settings`` over all of it."""
    sections = {name: dict(values) for name, values in (base or TEST_SETTINGS).items()}
    sections.setdefault("server", {})["listen"] = f"tcp:{port}:interface=127.0.0.1"
    sections.setdefault("kubernetes", {}).update(namespace=namespace, kubeconfig=kubeconfig)
    for section, values in (settings or {}).items():
        sections.setdefault(section, {}).update(values)
    return sections


def ini_text(sections: dict[str, dict[str, object]]) -> str:
    return "\n".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())
        for name, values in sections.items()
    )


def start(
    tmp: Path,
    namespace: str,
    kubeconfig: Path,
    settings: dict[str, dict[str, object]] | None = None,
    timeout: float = 30.0,
    *,
    base: dict[str, dict[str, object]] | None = None,
    wrappers: Sequence[str] = (),
    port: int | None = None,
) -> Daemon:
    """Start the gateway on a free loopback port and wait until it answers.

    :param settings: ini values by section, over ``base``.
    :param base: the ini to start from: the test settings unless given
        (the bench gives :func:`shipped_settings`).
    :param wrappers: commands that exec the next (``taskset -c 0``,
        ``setpriv ... --``), so the process is still twistd itself.
    :param port: this loopback port instead (a replica restarted in place).
    """
    port = port or free_port()
    config = tmp / f"gateway-{port}.ini"
    config.write_text(ini_text(settings_for(port, namespace, kubeconfig, settings, base)))
    log_path = tmp / f"gateway-{port}.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("BRIGADE_NAMESPACE", None)
    twistd = [
        str(TWISTD),
        "--nodaemon",
        "--pidfile=",
        f"--logfile={log_path}",
        "brigade-crgw",
        "--config",
        str(config),
    ]
    process = subprocess.Popen(
        [*wrappers, *twistd],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    daemon = Daemon(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise RuntimeError(f"the gateway exited with {process.returncode}:\n{output}\n{log}")
        try:
            if daemon.request("GET", "/healthz", timeout=1).status == 200:
                return daemon
        except OSError:
            time.sleep(0.1)
    daemon.stop()
    raise RuntimeError(f"the gateway did not answer within {timeout}s:\n{daemon.log()}")
