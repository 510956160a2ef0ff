"""What ``GET /metrics`` serves, through ``prometheus_client``.

Each :class:`Metrics` has a registry of its own (so a test can make many),
holding the gateway's series and the library's standard ``process_*`` and
``python_*`` collectors.  Labels are bounded sets (registry kinds, HTTP
codes), never projects or anything a sender chooses, so the series count
stays small.
"""

from __future__ import annotations

from collections.abc import Callable

import attr
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from ..delivery.spool import SpoolStats

# Seconds; a webhook's time includes its Kubernetes calls.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The library would add a ``*_created`` series beside every counter and
# histogram, doubling the series for a timestamp Prometheus does not need.
disable_created_metrics()


@attr.s(auto_attribs=True)
class Metrics:
    """What the gateway has done since it started, and the process's figures.

    :param in_flight: reads the number of webhooks being handled now.
    :param spool: reads the spool's figures, when there is a spool.
    """

    in_flight: Callable[[], int]
    spool: Callable[[], SpoolStats] | None = None
    registry: CollectorRegistry = attr.ib(init=False)
    _webhooks: Counter = attr.ib(init=False)
    _builds: Counter = attr.ib(init=False)
    _duration: Histogram = attr.ib(init=False)
    _lookups: Counter = attr.ib(init=False)
    _dropped: Counter | None = attr.ib(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(standard)
        self._webhooks = Counter(
            "brigade_crgw_webhooks",
            "Webhooks answered, by registry and status code.",
            ["registry", "code"],
            registry=registry,
        )
        self._builds = Counter(
            "brigade_crgw_builds",
            "Build Secrets written (or found redelivered).",
            ["registry"],
            registry=registry,
        )
        Gauge(
            "brigade_crgw_webhooks_in_flight", "Webhooks being handled now.", registry=registry
        ).set_function(self.in_flight)
        self._duration = Histogram(
            "brigade_crgw_webhook_duration_seconds",
            "Time from request to answer.",
            buckets=BUCKETS,
            registry=registry,
        )
        self._lookups = Counter(
            "brigade_crgw_registry_lookups",
            "Registry lookups, by outcome.",
            ["outcome"],
            registry=registry,
        )
        if self.spool is not None:
            self.watch_spool(self.spool)

    def watch_spool(self, spool: Callable[[], SpoolStats]) -> None:
        """Serve the spool's figures, as ``spool`` reads them, from now on."""
        self.spool = spool
        registry = self.registry
        Gauge(
            "brigade_crgw_spool_depth",
            "Builds in the spool waiting for Kubernetes.",
            registry=registry,
        ).set_function(lambda: spool().depth)
        Gauge(
            "brigade_crgw_spool_oldest_age_seconds",
            "How long the oldest waiting build has waited (0 when none waits).",
            registry=registry,
        ).set_function(lambda: spool().oldest_age or 0.0)
        Gauge(
            "brigade_crgw_spool_rejected",
            "Spooled builds Kubernetes refused for good.",
            registry=registry,
        ).set_function(lambda: spool().rejected)
        self._dropped = Counter(
            "brigade_crgw_spool_dropped",
            "Spooled builds dropped, not created, because their project was deleted.",
            registry=registry,
        )

    def record_dropped(self, count: int) -> None:
        """Count spooled builds dropped because their project is gone."""
        if self._dropped is not None:
            self._dropped.inc(count)

    def watch_readiness(self, ready: Callable[[], bool], kubernetes: Callable[[], bool]) -> None:
        """Serve whether the gateway is ready (``/readyz``) and, apart from
        that, whether Kubernetes answered its last check."""
        Gauge(
            "brigade_crgw_ready",
            "1 while /readyz says ready: the gateway can take a push safely.",
            registry=self.registry,
        ).set_function(lambda: 1.0 if ready() else 0.0)
        Gauge(
            "brigade_crgw_kubernetes_up",
            "1 while Kubernetes answers the readiness check (and the project Secrets "
            "can be read), 0 while it does not.",
            registry=self.registry,
        ).set_function(lambda: 1.0 if kubernetes() else 0.0)

    def record(self, registry: str, code: int, builds: int, duration: float) -> None:
        """Count one answered webhook."""
        self._webhooks.labels(registry, str(code)).inc()
        if builds:
            self._builds.labels(registry).inc(builds)
        self._duration.observe(duration)

    def record_lookup(self, outcome: str) -> None:
        """Count one registry lookup by its outcome (``found``, ``timeout``...)."""
        self._lookups.labels(outcome).inc()

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition in the format the ``Accept`` header asks for (the
        Prometheus text format unless OpenMetrics is asked), and its
        Content-Type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    def render(self) -> str:
        """The exposition in the Prometheus text format."""
        return self.exposition()[0].decode("utf-8")
