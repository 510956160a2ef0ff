"""The third hardening round's probes against the real daemon: a hostile
registry (an index of 15,000 platforms, a folded challenge of 480 KB, a
token realm on another port, a registry that hangs), a flood of unknown
projects while Kubernetes hangs, bodies declared and never sent, and the
small ones (huge numbers, deep nesting, ``Expect: 100-continue``,
``/readyz``, ``%ff``).  Each gets the answer a careful sender would expect:
a JSON refusal, a build, or a 202."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from devtools import gateway as gateway_process
from devtools.hostile_registry import HostileRegistry
from devtools.outage import HANG, Proxy, proxied_kubeconfig
from devtools.projects import fresh, project_secret

from . import registry as R
from .conftest import Namespace
from .helpers import BEARER, DOCKERHUB

pytestmark = pytest.mark.integration

GOOD = "/events/webhook/acme/app"
DISTRIBUTION = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
SIGNED = {"X-Hub-Signature-256": "sha256=" + "0" * 64}
PLATFORMS = 15_000


def push(host: str, repository: str, tag: str = "v1") -> bytes:
    """A Distribution push of ``host/repository:tag`` without a digest, so
    the gateway asks the registry for one."""
    event = {
        "id": f"event-{uuid.uuid4().hex}",
        "timestamp": "2026-01-02T15:04:05Z",
        "action": "push",
        "target": {
            "mediaType": R.OCI_MANIFEST,
            "repository": repository,
            "url": f"https://{host}/v2/{repository}/manifests/{tag}",
            "tag": tag,
        },
        "request": {"id": "r1", "addr": "10.0.0.1", "host": host, "method": "PUT"},
    }
    return json.dumps({"events": [event]}).encode()


def test_sigterm_ends_lookups_and_retries(namespace: Namespace, tmp_path: Path) -> None:
    """With lookups held by a registry that never answers, the API server
    hanging and 64 pushes in flight, SIGTERM ends the process (exit 0) past
    its drain deadline: every sender is answered, 202 with its build queued."""
    ensure_project(namespace)
    server = namespace.plane.api.configuration.host
    proxy = Proxy(server)
    slow = HostileRegistry(delay=120)
    kubeconfig = proxied_kubeconfig(
        namespace.gateway_kubeconfig, server, proxy, tmp_path / "proxied.kubeconfig"
    )
    gateway = gateway_process.start(
        tmp_path,
        namespace.name,
        kubeconfig,
        {
            "server": {"drain_seconds": 4},
            "kubernetes": {"request_timeout": 2},
            "registry": {
                "hosts": slow.address,
                "endpoints": f"{slow.address}={slow.url}",
                "timeout": 3,
            },
            "spool": {"path": tmp_path / "spool.db"},
        },
    )
    answers: list[Any] = []
    try:
        assert gateway.post(GOOD, fresh(DOCKERHUB, 7100), BEARER).status == 200
        proxy.set(HANG)

        def send(n: int) -> None:
            try:
                body = push(slow.address, f"slow/app{n}")
                answers.append(gateway.post(GOOD, body, BEARER, timeout=60).status)
            except OSError as e:
                answers.append(repr(e))

        senders = [threading.Thread(target=send, args=(n,)) for n in range(64)]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 20
        while len(slow.requests) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(slow.requests) >= 8, "the lookups never reached the registry"
        gateway.process.send_signal(signal.SIGTERM)
        code = gateway.process.wait(60)
        for sender in senders:
            sender.join(10)
    finally:
        gateway.stop()
        proxy.close()
        slow.stop()
    assert code == 0, gateway.log()[-3000:]
    assert len(answers) == 64 and set(answers) <= {202, 503}, answers
    assert 202 in answers
    assert "unanswered" not in gateway.log()


def ensure_project(namespace: Namespace) -> None:
    """acme/app exists (the module's other gateway may have made it)."""
    from kubernetes.client.exceptions import ApiException

    try:
        namespace.plane.core.create_namespaced_secret(namespace.name, project_secret("acme/app"))
    except ApiException as e:
        if e.status != 409:
            raise
