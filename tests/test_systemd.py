"""The unit as shipped, under a real systemd: a Debian machine booted with
``systemd-nspawn``, the project installed by the commands of
docs/installation.rst (run from the page's text), against the real API server
on loopback.

The machine shares the host's network, so the gateway inside listens on
127.0.0.1 (or ::1) and reaches kube-apiserver through a loopback proxy that
a test can hold.  One machine serves the whole module; each test sets the
configuration it needs first.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attr
import pytest

import devtools.kubectl
from brigade_crgw.brigade import project_id
from devtools import ROOT, debian, rootfs
from devtools.gateway import Answer, exchange, free_port, metric, wait_not_listening
from devtools.outage import FORWARD, HANG, Proxy, proxied_kubeconfig
from devtools.plane import PlaneError
from devtools.projects import decoded, fresh, project_secret
from devtools.waiting import until

from . import machine as machines
from .conftest import Cluster, Namespace
from .helpers import DOCKERHUB, docs_block, wait_read

pytestmark = [pytest.mark.integration, pytest.mark.systemd]

UNIT = "brigade-crgw.service"
INI = "/etc/brigade-crgw/brigade-crgw.ini"
INSTALL = "/root/brigade-crgw-install"  # where the test's files appear inside
WEBHOOK = "/events/webhook/acme/app"


def run_host(script: str, cwd: Path, env: dict[str, str]) -> str:
    """Run a docs block on the host with bash, as an operator would."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@attr.s(auto_attribs=True)
class Site:
    """The booted machine with the gateway installed, and what the tests need around it."""

    machine: machines.Machine
    proxy: Proxy
    files: Path
    namespace: Namespace
    token: str
    port: int = 0

    def ini(self, listen: str, **server: Any) -> str:
        lines = [f"listen = {listen}", *(f"{k} = {v}" for k, v in server.items())]
        return (
            "[server]\n" + "\n".join(lines) + "\n"
            f"[kubernetes]\nnamespace = {self.namespace.name}\nrequest_timeout = 15\n"
        )

    def configure(self, ini: str, restart: bool = True) -> str:
        """Install ``ini`` as docs/installation.rst does; restart the unit; a journal
        cursor from before the restart."""
        (self.files / "brigade-crgw.ini").write_text(ini)
        cursor = self.machine.cursor()
        self.machine.run(f"install -m 0600 brigade-crgw.ini {INI}", cwd=INSTALL)
        if restart:
            self.machine.run(f"systemctl daemon-reload && systemctl restart {UNIT}")
        return cursor

    def request(self, method: str, path: str, body: bytes = b"", **kwargs: Any) -> Answer:
        """:func:`devtools.gateway.exchange` with the gateway in the machine
        (``headers``, ``timeout``, ``host``, ``context``)."""
        return exchange(self.port, method, path, body, **kwargs)

    def webhook(self, n: int, **kwargs: Any) -> Answer:
        """A fresh Docker Hub push for acme/app, with the project's token."""
        return self.request(
            "POST",
            f"{WEBHOOK}?token={self.token}",
            fresh(DOCKERHUB, n),
            headers={"Content-Type": "application/json"},
            **kwargs,
        )

    def in_flight(self) -> float:
        """The webhooks the gateway is handling now (/metrics)."""
        return metric(self.port, "brigade_crgw_webhooks_in_flight")

    def wait_stopping(self) -> None:
        """Until systemd is stopping the unit and the gateway no longer
        listens (it stops listening at SIGTERM, then drains)."""
        machines.wait_for(
            lambda: self.machine.show(UNIT, "ActiveState")["ActiveState"] == "deactivating"
        )
        wait_not_listening(self.port)

    def wait_ready(self, **kwargs: Any) -> None:
        """Until /healthz answers; fails at once if the unit fails."""

        def ready() -> bool:
            state = self.machine.show(UNIT, "ActiveState")["ActiveState"]
            if state == "failed":
                pytest.fail(f"{UNIT} failed:\n{self.machine.journal(UNIT)[-3000:]}")
            try:
                return self.request("GET", "/healthz", timeout=2, **kwargs).status == 200
            except OSError:
                return False

        machines.wait_for(ready, timeout=60)

    def builds(self) -> set[str]:
        core = self.namespace.plane.core
        found = core.list_namespaced_secret(self.namespace.name, label_selector="component=build")
        return {s.metadata.name for s in found.items}


def admin_kubeconfig(plane: Cluster) -> Path:
    if plane.local is not None:
        return plane.local.admin_kubeconfig
    return Path(os.environ["BRIGADE_CRGW_TEST_KUBECONFIG"])


@pytest.fixture(scope="module")
def site(
    plane: Cluster, namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """The systemd steps 1 to 4 of docs/installation.rst on the host and in a booted machine, with
    the unit started and answering on a loopback port."""
    for tool in ("systemd-nspawn", "nsenter", "openssl"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is needed (see .ci/run)", pytrace=False)
    try:
        tree, wheels = rootfs.rootfs(), debian.wheels("rootfs")
    except debian.DebianError as e:
        pytest.fail(f"the rootfs could not be built: {e}", pytrace=False)
    try:
        kubectl = devtools.kubectl.kubectl()
    except PlaneError as e:
        pytest.fail(f"no kubectl, and it could not be built: {e}", pytrace=False)
    work = tmp_path_factory.mktemp("systemd")
    files = work / "files"
    files.mkdir()
    proxy = Proxy(plane.api.configuration.host)
    machine = None
    try:
        admin = proxied_kubeconfig(
            admin_kubeconfig(plane), plane.api.configuration.host, proxy, work / "admin.kubeconfig"
        )
        (files / "brigade-crgw").symlink_to(ROOT)
        env = {
            "NS": namespace.name,
            "KUBECONFIG": str(admin),
            "PATH": f"{kubectl.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            # The wheels come from the cache; the page's pip command stays as it is.
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(wheels),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        run_host(docs_block("installation", "systemd-test", "kubeconfig"), files, env)
        assert (files / "gateway.kubeconfig").stat().st_mode & 0o777 == 0o600
        run_host(docs_block("installation", "systemd-test", "wheels"), files, env)
        (files / "brigade-crgw").unlink()  # the machine needs only the copies

        core = plane.core
        core.create_namespaced_secret(namespace.name, project_secret("acme/app", token=None))
        run_host(
            docs_block("installation", "systemd-test", "project-token"),
            files,
            {**env, "PROJECT": project_id("acme/app")},
        )
        secret = core.read_namespaced_secret(project_id("acme/app"), namespace.name)
        token = decoded(secret.to_dict())["crGatewayToken"]

        machine = machines.boot(tree, work / "console.log", {files: INSTALL})
        site = Site(machine, proxy, files, namespace, token, free_port())
        (files / "brigade-crgw.ini").write_text(site.ini(f"tcp:{site.port}:interface=127.0.0.1"))
        machine.run(docs_block("installation", "systemd-test", "install"), cwd=INSTALL, timeout=300)
        site.wait_ready()
        yield site
    except machines.MachineError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        if machine is not None:
            machine.shutdown()
        proxy.close()


def test_webhook_makes_a_build(site: Site) -> None:
    """Installed as docs/installation.rst says and started by systemd with root-only
    (0600) files, the gateway turns a webhook into a build Secret, and its
    start logs no plugin-cache write."""
    modes = site.machine.run(f"stat -c '%a %U' {INI} /etc/brigade-crgw/kubeconfig").stdout
    assert modes.split() == ["600", "root", "600", "root"]
    pid = site.machine.show(UNIT, "MainPID")["MainPID"]
    uid = site.machine.run(f"stat -c %u /proc/{pid}").stdout.strip()
    assert uid.isdigit() and uid != "0"
    before = site.builds()
    answer = site.webhook(1)
    assert answer.status == 200, answer.body
    assert set(answer.json()["builds"]) == site.builds() - before != set()
    journal = site.machine.journal(UNIT)
    assert "plugin cache" not in journal, journal
    assert "POST /events/webhook/acme/app?token=REDACTED" in journal


def test_stop_drains_and_succeeds(site: Site) -> None:
    """``systemctl stop`` with a webhook waiting on Kubernetes: the port
    closes at once, the webhook still gets its 200 and build, and the unit
    ends with status 0 and result success."""
    site.configure(site.ini(f"tcp:{site.port}:interface=127.0.0.1"))
    site.wait_ready()
    before = site.builds()
    site.proxy.set(HANG)
    result: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: result.update(answer=site.webhook(2)))
    try:
        sender.start()
        until(lambda: site.in_flight() == 1, "the webhook in flight")
        site.proxy.wait_held(1)  # the webhook now waits on the held Kubernetes call
        stop = subprocess.Popen(
            ["nsenter", f"--target={site.machine.leader}", "--all", "systemctl", "stop", UNIT]
        )
        site.wait_stopping()
        assert stop.poll() is None, "the stop did not wait for the webhook"
    finally:
        site.proxy.set(FORWARD)
    assert stop.wait(30) == 0
    sender.join(30)
    answer = result["answer"]
    assert answer.status == 200, answer.body
    assert set(answer.json()["builds"]) == site.builds() - before != set()
    shown = site.machine.show(UNIT, "Result", "ExecMainStatus", "ExecMainCode", "ActiveState")
    assert shown == {
        "Result": "success",
        "ExecMainStatus": "0",
        "ExecMainCode": "1",  # CLD_EXITED: it exited, no signal killed it
        "ActiveState": "inactive",
    }


def test_stop_answers_a_body_half_received(site: Site) -> None:
    """A webhook whose body is half received when ``systemctl stop`` comes
    is still read, built and answered 200, and the unit ends with success."""
    site.configure(site.ini(f"tcp:{site.port}:interface=127.0.0.1"))
    site.wait_ready()
    before = site.builds()
    body = fresh(DOCKERHUB, 6)
    head = (
        f"POST {WEBHOOK}?token={site.token} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", site.port), timeout=30) as sender:
        sender.sendall(head + body[:100])
        wait_read(sender)
        stop = subprocess.Popen(
            ["nsenter", f"--target={site.machine.leader}", "--all", "systemctl", "stop", UNIT]
        )
        site.wait_stopping()
        assert stop.poll() is None, "the stop did not wait for the request"
        sender.sendall(body[100:])
        response = http.client.HTTPResponse(sender)
        response.begin()
        assert response.status == 200
        builds = json.loads(response.read())["builds"]
    assert stop.wait(30) == 0
    assert set(builds) == site.builds() - before != set()
    shown = site.machine.show(UNIT, "Result", "ExecMainStatus")
    assert shown == {"Result": "success", "ExecMainStatus": "0"}


def _fails_once(site: Site, cursor: str, status: str) -> str:
    """Waits for the unit to fail; asserts it never restarted and none is
    pending; its journal since ``cursor``.

    No need to sit out RestartSec: a unit systemd will restart waits in
    ``activating (auto-restart)``, never in ``failed``, and a unit that
    restarted and failed again counts it in NRestarts.
    """
    machines.wait_for(lambda: site.machine.show(UNIT, "ActiveState")["ActiveState"] == "failed")
    shown = site.machine.show(UNIT, "ActiveState", "SubState", "NRestarts", "ExecMainStatus", "Job")
    assert shown == {
        "ActiveState": "failed",
        "SubState": "failed",
        "NRestarts": "0",
        "ExecMainStatus": status,
        "Job": "",
    }
    return site.machine.journal(UNIT, since=cursor)


def test_bad_ini_fails_once(site: Site) -> None:
    """A bad ini ends the gateway with exit status 78 and one line naming the
    problem (no usage text, no traceback), and systemd does not restart it."""
    cursor = site.configure("[server]\nlisten = tcp:1\nport = 7744\n")
    journal = _fails_once(site, cursor, "78")
    assert journal.count("unknown key 'port' in [server]") == 1, journal
    assert "Usage:" not in journal and "Traceback" not in journal, journal


def test_missing_kubeconfig_fails_once(site: Site) -> None:
    """Without its kubeconfig file the unit fails once (243, the credential
    is missing), without a restart loop."""
    site.configure(site.ini(f"tcp:{site.port}:interface=127.0.0.1"), restart=False)
    site.machine.run("mv /etc/brigade-crgw/kubeconfig /etc/brigade-crgw/kubeconfig.away")
    try:
        cursor = site.machine.cursor()
        site.machine.run(f"systemctl restart {UNIT} || true")
        _fails_once(site, cursor, "243")
    finally:
        site.machine.run("mv /etc/brigade-crgw/kubeconfig.away /etc/brigade-crgw/kubeconfig")


def _tls_files(directory: Path) -> Path:
    """A test CA, and a PEM (key and certificate) for 127.0.0.1 signed by it."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    new_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl(
        "req",
        "-x509",
        *new_key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=crgw test CA",
    )
    openssl(
        "req",
        *new_key,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    pem = directory / "tls.pem"
    pem.write_bytes(
        (directory / "server.key").read_bytes() + (directory / "server.crt").read_bytes()
    )
    return directory / "ca.crt"


def test_tls(site: Site, tmp_path: Path) -> None:
    """With ``listen = ssl:…`` and the key handed over as a credential, as
    docs/installation.rst says, a webhook over verified TLS makes a build."""
    ca = _tls_files(tmp_path)
    shutil.copy(tmp_path / "tls.pem", site.files / "tls.pem")
    pem = "/run/credentials/brigade-crgw.service/tls.pem"
    listen = f"ssl:{site.port}:interface=127.0.0.1:privateKey={pem}"
    assert f"privateKey={pem}" in (ROOT / "docs" / "installation.rst").read_text()
    site.configure(site.ini(listen), restart=False)
    try:
        site.machine.run(docs_block("installation", "systemd-test", "tls"), cwd=INSTALL)
        context = ssl.create_default_context(cafile=str(ca))
        site.wait_ready(context=context)
        before = site.builds()
        answer = site.webhook(3, context=context)
        assert answer.status == 200, answer.body
        assert set(answer.json()["builds"]) == site.builds() - before != set()
        journal = site.machine.journal(UNIT)
        assert "MemoryError" not in journal, journal
    finally:
        site.machine.run(
            "rm -rf /etc/systemd/system/brigade-crgw.service.d && systemctl daemon-reload"
        )


def test_socket_activation(site: Site) -> None:
    """Started by its socket (an IPv6 one, on ::1) with ``listen =
    systemd:domain=INET6:index=0``, the gateway makes a build and the access
    log shows the real peer; ``domain=INET`` on that socket is refused as a
    configuration error."""
    socket_unit = "brigade-crgw.socket"
    site.machine.write(
        f"/etc/systemd/system/{socket_unit}.d/loopback.conf",
        f"[Socket]\nListenStream=\nListenStream=[::1]:{site.port}\n",
        mode="0644",
    )
    site.configure(site.ini("systemd:domain=INET6:index=0"), restart=False)
    try:
        cursor = site.machine.cursor()
        site.machine.run(docs_block("installation", "systemd-test", "socket"), cwd=INSTALL)
        before = site.builds()
        answer = site.webhook(4, host="::1")
        assert answer.status == 200, answer.body
        assert set(answer.json()["builds"]) == site.builds() - before != set()
        journal = site.machine.journal(UNIT, since=cursor)
        access = [line for line in journal.splitlines() if "POST /events/webhook" in line]
        assert access and all('"::1" - - [' in line for line in access), journal

        # Started by hand, the service still gets the socket's descriptor.
        site.machine.run(f"systemctl stop {UNIT}")
        cursor = site.configure(site.ini("systemd:domain=INET:index=0"), restart=False)
        site.machine.run(f"systemctl start {UNIT}")
        journal = _fails_once(site, cursor, "78")
        assert "use domain=INET6" in journal, journal
    finally:
        site.machine.run(
            f"systemctl disable --now {socket_unit}; systemctl stop {UNIT};"
            f" systemctl reset-failed {UNIT}"
        )


def test_restart_with_socket_activation_refuses_none(site: Site) -> None:
    """Under socket activation, ``systemctl restart brigade-crgw`` while
    single-attempt senders push refuses none of their pushes: systemd holds
    the port, so what arrives while the gateway restarts waits in the
    socket's backlog for the new process; each push makes one build."""
    socket_unit = "brigade-crgw.socket"
    site.machine.write(
        f"/etc/systemd/system/{socket_unit}.d/loopback.conf",
        f"[Socket]\nListenStream=\nListenStream=[::1]:{site.port}\n",
        mode="0644",
    )
    site.configure(site.ini("systemd:domain=INET6:index=0"), restart=False)
    answers: dict[int, Answer | str] = {}
    stop = threading.Event()
    numbers = itertools.count(50_000)
    lock = threading.Lock()

    def sender() -> None:
        while not stop.is_set():
            with lock:
                n = next(numbers)
            try:
                answers[n] = site.webhook(n, host="::1", timeout=60)
            except OSError as e:  # a refused or cut connection: the push is lost
                answers[n] = type(e).__name__

    def more(count: int) -> None:
        target = len(answers) + count
        until(lambda: len(answers) >= target, f"{count} more answers", 120)

    try:
        site.machine.run(docs_block("installation", "systemd-test", "socket"), cwd=INSTALL)
        site.wait_ready(host="::1")
        threads = [threading.Thread(target=sender) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            more(10)
            for _ in range(2):
                pid = site.machine.show(UNIT, "MainPID")["MainPID"]
                site.machine.run(f"systemctl restart {UNIT}")
                assert site.machine.show(UNIT, "MainPID")["MainPID"] != pid
                more(10)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        codes = {n: a.status if isinstance(a, Answer) else a for n, a in answers.items()}
        assert set(codes.values()) == {200}, Counter(codes.values())
        names = [n for a in answers.values() if isinstance(a, Answer) for n in a.json()["builds"]]
        assert len(set(names)) == len(answers) and set(names) <= site.builds()
    finally:
        site.machine.run(
            f"systemctl disable --now {socket_unit}; systemctl stop {UNIT};"
            f" systemctl reset-failed {UNIT}"
        )
