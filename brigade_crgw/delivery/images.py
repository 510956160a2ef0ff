"""Looking up the images of one webhook, from the pipeline's pool thread.

:class:`ProjectLookups` is the one optional collaborator the webhook pipeline
gets when ``[registry] hosts`` lists anything: it finds the project's
registry credentials (``crGatewayPullSecret``, else ``[registry]
pull_secret``) and asks :class:`~brigade_crgw.lookups.bridge.LookupBridge` about each
image within the webhook's time budget.  It never raises: a lookup that
gives nothing is a :class:`~brigade_crgw.lookups.outcomes.LookupResult` that says why, and
the log says so too.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

import attr
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger

from .. import text
from ..brigade import Project
from ..config import Config
from ..events import ImageEvent
from ..lookups.bridge import LookupBridge
from ..lookups.client import RegistryClient
from ..lookups.credentials import Credential, read_dockerconfigjson
from ..lookups.outcomes import LookupResult
from ..lookups.references import usable_reference
from .outage import Drain

log = Logger()

DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"


class SecretReader(Protocol):
    """Reads any Secret of the namespace by name (the store)."""

    def get_secret(self, name: str) -> Mapping[str, Any] | None: ...


@attr.s(auto_attribs=True)
class ProjectLookups:
    """Lookups for the images of one webhook at a time.

    :param lookups: the blocking bridge to the registry client.
    :param secrets: where pull secrets are read.
    :param timeout: seconds for all the lookups of one webhook.
    :param pull_secret: the default pull secret's name, or empty.
    :param drain: shutdown's deadline, which ends the lookups too.
    """

    lookups: LookupBridge
    secrets: SecretReader
    timeout: float
    pull_secret: str = ""
    clock: Callable[[], float] = time.monotonic
    drain: Drain = attr.ib(factory=Drain)

    def results(self, project: Project, events: Sequence[ImageEvent]) -> list[LookupResult]:
        """One result per event, in order, within :attr:`timeout` in all."""
        deadline = self.drain.cap(self.clock() + self.timeout)
        credentials: dict[str, Credential] | None = None
        results = []
        for event in events:
            reference = usable_reference(event.host, event.repository, event.tag, event.digest)
            credential = None
            if reference is not None and self.lookups.allowed(reference.host):
                if credentials is None:
                    credentials = self._credentials(project)
                credential = credentials.get(reference.host)
            result = self.lookups.inspect(reference, credential, deadline)
            if result.facts is None:
                log.info(
                    "lookup for {image} gave nothing ({outcome}): {reason}",
                    image=text.printable(text.cut(_image(event), 600)),
                    outcome=result.outcome,
                    reason=text.printable(result.reason),
                )
            results.append(result)
        return results

    def _credentials(self, project: Project) -> dict[str, Credential]:
        """The credentials of the project's pull secret, by host; none when it
        names none, or its Secret cannot be read (logged)."""
        name = project.pull_secret or self.pull_secret
        if not name:
            return {}
        try:
            secret = self.secrets.get_secret(name)
        except Exception as e:  # StoreUnavailable, or a name Kubernetes cannot hold
            log.warn(
                "cannot read pull secret {name} of project {project}: {error}",
                name=name,
                project=project.id,
                error=str(e),
            )
            return {}
        if secret is None or secret.get("type") != DOCKERCONFIGJSON:
            log.warn(
                "pull secret {name} of project {project} is not a {kind} Secret; "
                "looking up anonymously",
                name=name,
                project=project.id,
                kind=DOCKERCONFIGJSON,
            )
            return {}
        data = secret.get("data") or {}
        raw = data.get(".dockerconfigjson", "") if isinstance(data, Mapping) else ""
        try:
            decoded = base64.b64decode(raw or "", validate=True)
        except (ValueError, TypeError):
            decoded = b""
        return read_dockerconfigjson(decoded)


def _image(event: ImageEvent) -> str:
    image = f"{event.host}/{event.repository}" if event.host else event.repository
    if event.tag:
        image += f":{event.tag}"
    if event.digest:
        image += f"@{event.digest}"
    return image


def create(
    config: Config,
    reactor: Any,
    secrets: SecretReader,
    record: Callable[[str], None],
    drain: Drain | None = None,
) -> ProjectLookups | None:
    """The production lookups, or None when ``[registry] hosts`` is empty:
    then nothing is looked up and no outbound connection is ever made.

    :param record: counts each lookup's outcome (the metrics).
    """
    endpoints = config.registry_endpoints()
    if not endpoints:
        return None
    client = RegistryClient.create(endpoints, reactor)
    lookups = LookupBridge(client, partial(blockingCallFromThread, reactor), record)
    log.info(
        "registry lookups on {hosts}, {timeout:g}s per webhook",
        hosts=" ".join(f"{host}={url}" for host, url in endpoints.items()),
        timeout=config.lookup_timeout,
    )
    return ProjectLookups(
        lookups, secrets, config.lookup_timeout, config.pull_secret, drain=drain or Drain()
    )
