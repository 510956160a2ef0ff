"""Counters for ``GET /metrics``, in the Prometheus text format.

Labels are bounded sets (registry kinds, HTTP codes), never projects or
anything a sender chooses, so the series count stays small.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import attr

from .spool import SpoolStats

# Seconds; a webhook's time includes its Kubernetes calls.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@attr.s(auto_attribs=True)
class Metrics:
    """What the gateway has done since it started.

    :param in_flight: reads the number of webhooks being handled now.
    :param spool: reads the spool's figures, when there is a spool.
    """

    in_flight: Callable[[], int]
    spool: Callable[[], SpoolStats] | None = None
    webhooks: Counter[tuple[str, int]] = attr.ib(factory=Counter)
    builds: Counter[str] = attr.ib(factory=Counter)
    buckets: list[int] = attr.ib(factory=lambda: [0] * len(BUCKETS))
    duration_sum: float = 0.0

    def record(self, registry: str, code: int, builds: int, duration: float) -> None:
        """Count one answered webhook."""
        self.webhooks[(registry, code)] += 1
        if builds:
            self.builds[registry] += builds
        self.duration_sum += duration
        for i, bound in enumerate(BUCKETS):
            if duration <= bound:
                self.buckets[i] += 1

    def render(self) -> str:
        """The exposition text."""
        count = sum(self.webhooks.values())
        lines = [
            "# HELP brigade_crgw_webhooks_total Webhooks answered, by registry and status code.",
            "# TYPE brigade_crgw_webhooks_total counter",
            *(
                f'brigade_crgw_webhooks_total{{registry="{registry}",code="{code}"}} {n}'
                for (registry, code), n in sorted(self.webhooks.items())
            ),
            "# HELP brigade_crgw_builds_total Build Secrets written (or found redelivered).",
            "# TYPE brigade_crgw_builds_total counter",
            *(
                f'brigade_crgw_builds_total{{registry="{registry}"}} {n}'
                for registry, n in sorted(self.builds.items())
            ),
            "# HELP brigade_crgw_webhooks_in_flight Webhooks being handled now.",
            "# TYPE brigade_crgw_webhooks_in_flight gauge",
            f"brigade_crgw_webhooks_in_flight {self.in_flight()}",
            "# HELP brigade_crgw_webhook_duration_seconds Time from request to answer.",
            "# TYPE brigade_crgw_webhook_duration_seconds histogram",
            *(
                f'brigade_crgw_webhook_duration_seconds_bucket{{le="{bound:g}"}} {n}'
                for bound, n in zip(BUCKETS, self.buckets, strict=True)
            ),
            f'brigade_crgw_webhook_duration_seconds_bucket{{le="+Inf"}} {count}',
            f"brigade_crgw_webhook_duration_seconds_sum {self.duration_sum:.6f}",
            f"brigade_crgw_webhook_duration_seconds_count {count}",
        ]
        if self.spool is not None:
            stats = self.spool()
            lines += [
                "# HELP brigade_crgw_spool_depth Builds in the spool waiting for Kubernetes.",
                "# TYPE brigade_crgw_spool_depth gauge",
                f"brigade_crgw_spool_depth {stats.depth}",
                "# HELP brigade_crgw_spool_oldest_age_seconds How long the oldest waiting "
                "build has waited (0 when none waits).",
                "# TYPE brigade_crgw_spool_oldest_age_seconds gauge",
                f"brigade_crgw_spool_oldest_age_seconds {stats.oldest_age or 0:.3f}",
                "# HELP brigade_crgw_spool_rejected Spooled builds Kubernetes refused for good.",
                "# TYPE brigade_crgw_spool_rejected gauge",
                f"brigade_crgw_spool_rejected {stats.rejected}",
            ]
        return "\n".join(lines) + "\n"
