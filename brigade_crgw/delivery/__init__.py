"""From a webhook to stored builds.

- :mod:`.pipeline`: :class:`~.pipeline.Pipeline`, one webhook in one trip to the pool;
- :mod:`.auth`: whether the sender may trigger the project;
- :mod:`.enrich`: tag filters and the build Secrets, with what lookups found;
- :mod:`.images`: the lookups a project's builds ask for;
- :mod:`.outage`: riding out a short Kubernetes outage (retries, the shared health);
- :mod:`.spool`: builds kept durably while Kubernetes is away;
- :mod:`.drainer`: the spool emptied into Kubernetes.
"""
