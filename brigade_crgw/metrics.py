"""Counters for ``GET /metrics``, in the Prometheus text format.

Labels are bounded sets (registry kinds, HTTP codes), never projects or
anything a sender chooses, so the series count stays small.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import attr

# Seconds; a webhook's time includes its Kubernetes calls.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@attr.s(auto_attribs=True)
class Metrics:
    """What the gateway has done since it started.

    :param in_flight: reads the number of webhooks being handled now.
    """

    in_flight: Callable[[], int]
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
        return "\n".join(lines) + "\n"
