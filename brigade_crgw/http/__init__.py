"""The HTTP surface: the Klein app and what stands around it.

- :mod:`.app`: the routes, a webhook's answer and its log line;
- :mod:`.webhook`: what a webhook request says (path, headers, query, body);
- :mod:`.requests`: bounded requests and the body budget;
- :mod:`.connections`: the connection limit and the open-files limit;
- :mod:`.inflight`: the count of webhooks in flight, and the drain;
- :mod:`.accesslog`: the access log, tokens redacted;
- :mod:`.metrics`: the Prometheus metrics;
- :mod:`.readiness`: ``/readyz``.
"""
