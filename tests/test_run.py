"""`make run`: the quickstart serves, and the curl it prints makes a build."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brigade_crgw.brigade import project_id
from devtools import ROOT
from devtools.gateway import free_port

from .conftest import Cluster

pytestmark = pytest.mark.integration


def test_printed_curl_makes_a_build(plane: Cluster, tmp_path: Path) -> None:
    """With no cluster configured, scripts/demo.py (what `make run` runs)
    uses the local plane, prints a curl, serves; the curl gets a build name,
    that build Secret exists, and its script reads only what a v1 script
    can, from a payload that has it."""
    # The curl's push is always the same, so a build left by an earlier run
    # would answer it as a redelivery: start from none.
    plane.core.delete_collection_namespaced_secret(
        "default", label_selector=f"component=build,project={project_id('demo/hello')}"
    )
    port = free_port()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "BRIGADE_NAMESPACE")}
    # `make run` puts the working tree on PYTHONPATH (devtools, brigade_crgw).
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=cache, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Builds:"):
                break
        output = "".join(lines)
        match = re.search(r"^  (curl .*?)\n\n", output, re.S | re.M)
        assert match, output
        command = match.group(1)
        assert f"127.0.0.1:{port}" in command
        deadline = time.monotonic() + 30
        while True:
            answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
            if answer.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer.returncode == 0, answer.stderr
        build = json.loads(answer.stdout)["builds"][0]
        secret = plane.core.read_namespaced_secret(build, "default")
        assert secret.type == "brigade.sh/build"
        assert secret.metadata.labels["component"] == "build"
        # The demo's brigade.js reads only what a Brigade v1 script is given
        # (e.type, e.provider, e.revision, e.payload), and the image fields
        # it prints from the payload are there, with values.
        data = {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
        script = data["script"]
        assert set(re.findall(r"\be\.(\w+)", script)) <= {"type", "provider", "revision", "payload"}
        image = json.loads(data["payload"])["brigade_crgw"]
        for field in set(re.findall(r"\bimage\.(\w+)", script)):
            assert field in image, field
        assert all(image[f] for f in ("host", "repository", "tag", "pusher")), image
        assert (data["event_type"], data["event_provider"]) == ("image_push", "dockerhub")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
