"""The measuring: the pushes wrk sends, the build Secrets counted, and one
row of the table -- the API server, then a fresh gateway -- at a layout,
body size and concurrency (see :mod:`bench.run` for the method)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import attr

from bench import processes, report, wrk
from bench import profile as profiling
from bench.processes import SynCounter
from bench.wrk import BenchError
from brigade_crgw import brigade, registries
from devtools import gateway as gateway_process
from devtools.plane import Plane, State
from devtools.projects import project_secret as brig_project_secret

BODIES = {"1k": 1024, "64k": 64 * 1024, "512k": 512 * 1024}
CONCURRENCY = (1, 8, 32, 128)
WARM_UP_SECONDS = 1.0
# The largest body the gateway can be configured to take (a build Secret
# holds at most 1 MiB); set only for bodies above the shipped default.
MAX_BODY_CEILING = 786432
PROJECT = "bench/app"
TOKEN = "bench-token-" + uuid.uuid4().hex

# A Docker Hub push, in the shape Docker Hub documents, with markers where
# each request puts its own values.
PUSH: dict[str, object] = {
    "callback_url": "https://registry.hub.docker.com/u/bench/app/hook/0123456789abcdef/",
    "push_data": {"pushed_at": wrk.PUSHED_AT, "pusher": "bench", "tag": wrk.TAG},
    "repository": {
        "comment_count": 0,
        "date_created": 1700000000,
        "description": "the image the bench pushes",
        "is_official": False,
        "is_private": True,
        "is_trusted": False,
        "name": "app",
        "namespace": "bench",
        "owner": "bench",
        "repo_name": "bench/app",
        "repo_url": "https://hub.docker.com/r/bench/app",
        "star_count": 0,
        "status": "Active",
    },
    # Not a Docker Hub field: it brings the body to the size under test.
    "padding": wrk.PADDING,
}


def project_secret() -> dict[str, Any]:
    """The bench's project, as ``brig project create`` writes one, with a token."""
    return brig_project_secret(PROJECT, TOKEN)


def direct_body(body: bytes) -> bytes:
    """The build Secret the gateway writes for the push ``body``, named by
    the API server (``generateName``) instead of the build ID."""
    project = brigade.Project.from_secret(brigade.project_id(PROJECT), project_secret())
    assert project is not None
    delivery = registries.decode(body, {"content-type": "application/json"}, None)
    event = delivery.events[0]
    secret = brigade.build_secret(project, event, brigade.build_id(project, event))
    metadata = secret["metadata"]
    assert isinstance(metadata, dict)
    del metadata["name"]
    metadata["generateName"] = "brigade-worker-"
    return json.dumps(secret).encode()


def sample_push(size: int) -> bytes:
    """One push of the size under test, as the wrk script makes them."""
    pieces, padding = wrk.push_template(PUSH, size, "r0000")
    values = (wrk.push_pushed_at(1), wrk.push_tag("r0000", 1, 1), "x" * padding)
    return (pieces[0] + "".join(v + p for v, p in zip(values, pieces[1:], strict=True))).encode()


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Namespace:
    """The bench's namespace on the plane, the project in it, and the
    gateway's least-privilege identity there (kubeconfig and token)."""

    state: State
    core: Any
    name: str
    kubeconfig: Path
    token: str

    def count(self) -> int:
        """The Secrets in the namespace, counted by the API server without
        sending them (``limit=1`` and ``remainingItemCount``)."""
        response = self.core.list_namespaced_secret(self.name, limit=1, _preload_content=False)
        doc = json.loads(response.data)
        remaining = doc["metadata"].get("remainingItemCount")
        if remaining is not None or not doc["metadata"].get("continue"):
            return len(doc["items"]) + int(remaining or 0)
        total, token = 0, None
        while True:  # an API server that does not count: page through them
            response = self.core.list_namespaced_secret(
                self.name, limit=200, _continue=token, _preload_content=False
            )
            doc = json.loads(response.data)
            total += len(doc["items"])
            token = doc["metadata"].get("continue")
            if not token:
                return total

    def settled_count(self, timeout: float = 60.0) -> int:
        """The Secret count once it stops moving (requests that were in
        flight when wrk stopped finish or fail)."""
        deadline = time.monotonic() + timeout
        last, steady = self.count(), 0
        while steady < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.count()
            steady = steady + 1 if now == last else 0
            last = now
        return last

    def delete_builds(self) -> None:
        self.core.delete_collection_namespaced_secret(self.name, label_selector="component=build")
        processes.compact_etcd(self.state)


@contextmanager
def namespace_on(plane: Plane, state: State, tmp: Path) -> Iterator[Namespace]:
    """A fresh namespace with the bench's project and the gateway's
    identity in it, deleted after."""
    kubeconfig = tmp / "gateway.kubeconfig"
    core, name = processes.fresh_namespace(plane, "bench", project_secret(), kubeconfig)
    token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
    namespace = Namespace(state=state, core=core, name=name, kubeconfig=kubeconfig, token=token)
    try:
        yield namespace
    finally:
        with suppress(Exception):
            namespace.delete_builds()
            core.delete_namespace(name)


@attr.s(frozen=True, auto_attribs=True)
class Layout:
    """Where the processes run: ``shared``, every CPU for everyone, or
    ``pinned``, the gateway alone on one CPU and the rest on the other."""

    name: str
    gateway_cpu: int | None = None
    load_cpu: int | None = None


@attr.s(auto_attribs=True, kw_only=True)
class Gateways:
    """How each fresh gateway is made: the shipped ini, with the
    experiment's ``--set`` overrides over it."""

    tmp: Path
    overrides: dict[str, dict[str, object]]
    pool: int
    shipped_max_body: int
    counter: SynCounter | None
    started: int = 0

    @classmethod
    def create(
        cls, tmp: Path, overrides: list[tuple[tuple[str, str], str]], counter: SynCounter | None
    ) -> Gateways:
        """:raises BenchError: when an override names a key the shipped ini lacks."""
        shipped = gateway_process.shipped_settings()
        by_section: dict[str, dict[str, object]] = {}
        for (section, key), value in overrides:
            if key not in shipped.get(section, {}):
                raise BenchError(f"--set {section}.{key}: the shipped ini has no such key")
            by_section.setdefault(section, {})[key] = value
        effective = {s: {**shipped[s], **by_section.get(s, {})} for s in shipped}
        return cls(
            tmp=tmp,
            overrides=by_section,
            pool=int(str(effective["kubernetes"]["threads"])),
            shipped_max_body=int(str(effective["server"]["max_body_bytes"])),
            counter=counter,
        )

    def described(self) -> list[str]:
        return [
            f"[{section}] {key} = {value}"
            for section, values in self.overrides.items()
            for key, value in values.items()
        ]

    def settings(self, size: int) -> dict[str, dict[str, object]]:
        """The ini values over the shipped ones for the next gateway, which
        takes bodies of ``size``."""
        settings: dict[str, dict[str, object]] = {}
        if size > self.shipped_max_body:
            settings["server"] = {"max_body_bytes": MAX_BODY_CEILING}
        if gateway_process.shipped_settings().get("spool", {}).get("path"):
            # The shipped spool lives in systemd's StateDirectory; this one
            # is the bench's, one file per gateway.
            settings["spool"] = {"path": self.tmp / f"spool-{self.started}.sqlite"}
        for section, values in self.overrides.items():
            settings.setdefault(section, {}).update(values)
        return settings

    def start(self, namespace: Namespace, size: int, layout: Layout) -> gateway_process.Daemon:
        self.started += 1
        settings = self.settings(size)
        # Each wrapper execs the next, so the process is twistd itself.
        wrappers = self.counter.wrapper() if self.counter else []
        if layout.gateway_cpu is not None:
            wrappers += ["taskset", "-c", str(layout.gateway_cpu)]
        return processes.start_gateway(
            self.tmp, namespace.name, namespace.kubeconfig, settings, wrappers
        )


@attr.s(auto_attribs=True, kw_only=True)
class Bench:
    """The runs: wrk against the API server or a fresh gateway."""

    wrk_path: str
    duration: float
    namespace: Namespace
    gateways: Gateways
    runs: int = 0

    def load(
        self, url: str, script: str, concurrency: int, layout: Layout, seconds: float
    ) -> wrk.WrkResult:
        cpus = None if layout.load_cpu is None else str(layout.load_cpu)
        return wrk.run(self.wrk_path, url, script, concurrency, seconds, cpus)

    def direct(self, body: str, concurrency: int, layout: Layout) -> report.Run:
        """The API server creating the gateway's build Secret itself."""
        script = wrk.direct_script(self.namespace.token, direct_body(sample_push(BODIES[body])))
        url = f"{self.namespace.state.server}/api/v1/namespaces/{self.namespace.name}/secrets"
        self.load(url, script, concurrency, layout, WARM_UP_SECONDS)
        before = self.namespace.settled_count()
        result = self.load(url, script, concurrency, layout, self.duration)
        return report.Run(wrk=result, secrets=self.namespace.settled_count() - before)

    def push(self, body: str) -> str:
        """A wrk script sending distinct pushes, its own for each run."""
        self.runs += 1
        run = f"r{self.runs:04d}"
        pieces, padding = wrk.push_template(PUSH, BODIES[body], run)
        return wrk.push_script(f"/events/webhook/{PROJECT}?token={TOKEN}", pieces, padding, run)

    def gateway(
        self, body: str, concurrency: int, layout: Layout, profile: Path | None = None
    ) -> report.GatewayRun:
        """One fresh gateway: the warm-up, then the measured run (with
        py-spy beside it when ``profile`` says where its output goes)."""
        counter = self.gateways.counter
        opened = counter.read() if counter else 0
        gateway = self.gateways.start(self.namespace, BODIES[body], layout)
        spies: list[subprocess.Popen[bytes]] = []
        try:
            url = f"http://127.0.0.1:{gateway.port}"
            self.load(url, self.push(body), concurrency, layout, WARM_UP_SECONDS)
            before = self.namespace.settled_count()
            cpu = processes.cpu_ms(gateway.process.pid)
            if profile is not None:
                # Two samplers side by side: threads running or ready to
                # run, and the thread holding the GIL (Python executing).
                spies = [
                    processes.start_py_spy(
                        gateway.process.pid,
                        profile / f"{kind}.txt",
                        self.duration,
                        kind,
                        layout.load_cpu,
                    )
                    for kind in ("active", "gil")
                ]
            result = self.load(url, self.push(body), concurrency, layout, self.duration)
            made = self.namespace.settled_count() - before
            run = report.GatewayRun(
                wrk=result,
                secrets=made,
                cpu_ms=processes.cpu_ms(gateway.process.pid) - cpu,
                rss_mib=processes.peak_rss_mib(gateway.process.pid),
                connections=counter.read() - opened if counter else None,
            )
            for spy in spies:
                spy.wait(timeout=60)
        finally:
            for spy in spies:
                if spy.poll() is None:
                    spy.terminate()
            gateway.stop()
        return run

    def row(self, layout: Layout, body: str, concurrency: int) -> report.Row:
        direct = self.direct(body, concurrency, layout)
        self.namespace.delete_builds()
        gateway = self.gateway(body, concurrency, layout)
        self.namespace.delete_builds()
        return report.Row(
            layout=layout.name,
            body=body,
            concurrency=concurrency,
            direct=direct,
            gateway=gateway,
            pool=self.gateways.pool,
        )

    def profile(self, layout: Layout) -> str:
        """py-spy on a gateway under the pinned c=32 1 KiB load; the headline."""
        processes.say("profiling the gateway (py-spy), pinned, 1k, c=32 ...")
        where = self.gateways.tmp / "profile"
        where.mkdir()
        run = self.gateway("1k", 32, layout, profile=where)
        self.namespace.delete_builds()
        raw = {kind: where / f"{kind}.txt" for kind in ("active", "gil")}
        if not all(path.exists() for path in raw.values()):
            raise BenchError("py-spy wrote no profile (is ptrace allowed here?)")
        return (
            f"In the profiled run the gateway made {run.secrets} builds at"
            f" {run.wrk.ok_per_second:.0f}/s and used {run.cpu_share:.0%} of a core"
            f" ({run.cpu_ms_per_build:.2f} CPU-ms per build).\n\n"
            "### Threads running or ready to run\n\n"
            + profiling.markdown(profiling.summarise(raw["active"].read_text()))
            + "\n### The thread holding the GIL (Python code running)\n\n"
            + profiling.markdown(profiling.summarise(raw["gil"].read_text()))
        )
