"""One webhook, from what the sender said to the builds it made.

:meth:`Pipeline.deliver` is one plain synchronous function: it reads the
project, checks the sender's credentials, decodes the payload and creates
the builds, in that order.  The web layer runs it on the thread pool in a
single trip, so everything that blocks or burns CPU happens off the reactor
thread, and it can be tested without a reactor.  It answers 200 only once
Kubernetes holds every build, and 202 only once they are durably in the
spool; anything else is a :class:`Refusal`.

While Kubernetes is unavailable its calls are retried until
``[kubernetes] retry_seconds`` have passed since the work began (the build
names are deterministic, so a create that did get through comes back as
AlreadyExists); then the builds go to the spool, when there is one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attr
from twisted.logger import Logger

from .. import brigade, registries
from ..answers import Refusal, Reply, Target, Trace, Webhook, unavailable
from ..config import WHEN_CONFIGURED, Config
from ..events import merged
from ..kubernetes.store import SecretStore, StoreForbidden, StoreRejected, StoreUnavailable
from . import auth, enrich, filters, outage
from .images import ProjectLookups
from .outage import QUICK_ATTEMPT, Drain, Health
from .spool import Spool, SpoolError, SpoolFull

log = Logger()

T = TypeVar("T")


class ProjectReader(Protocol):
    """Where projects are read: a :class:`~brigade_crgw.kubernetes.projects.ProjectCache`
    in front of the store (with ``seconds`` 0 it remembers nothing)."""

    def get_project(
        self, project_id: str, timeout: float | None = None
    ) -> brigade.Project | None: ...

    def known(self, project_id: str) -> brigade.Project | None:
        """The project as last read, without asking Kubernetes; None when
        never read."""
        ...


@attr.s(frozen=True, auto_attribs=True)
class Pipeline:
    """Everything a webhook needs, made once per process.

    :param config: the gateway's configuration.
    :param projects: where projects are read (a :class:`ProjectCache`).
    :param store: where builds are created.
    :param images: registry lookups, or None when ``[registry] hosts`` is empty.
    :param spool: where builds wait while Kubernetes is away; None: no spool.
    :param clock: monotonic seconds, for the retry budget.
    :param sleep: the pause between retries.
    :param filters: the compiled ``crGatewayFilter`` expressions.
    :param drain: when shutdown wants every webhook over (no retry, no
        attempt past it).
    """

    config: Config
    projects: ProjectReader
    store: SecretStore
    images: ProjectLookups | None = None
    spool: Spool | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], object] = time.sleep
    health: Health = attr.ib(factory=Health)
    filters: filters.Filters = attr.ib(factory=filters.Filters)
    drain: Drain = attr.ib(factory=Drain)
    policy: auth.Policy = attr.ib(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "policy", auth.Policy(self.config.require, self.config.token_keys))

    def deliver(self, webhook: Webhook, trace: Trace) -> Reply:
        """Handle one webhook, start to finish.  Blocks: run it on a pool thread.

        :raises Refusal: for every answer other than success.
        """
        deadline = self.drain.cap(self.clock() + self.config.retry_seconds)
        project = self._authorised_project(webhook, trace, deadline)
        try:
            delivery = registries.decode(webhook.body, webhook.headers, webhook.query_registry)
        except registries.PayloadError as e:
            raise Refusal(400, "bad request", str(e)) from None
        trace.registry = delivery.registry
        if delivery.reply is not None:
            return Reply(200, delivery.reply)
        if delivery.registry == "generic" and self.config.strict:
            raise Refusal(
                422,
                "unrecognised payload",
                "no known registry sends this payload ([gateway] strict = true)",
            )
        try:
            rule = self.filters.of(trace.project, project.filter)
        except filters.InvalidFilter as e:
            raise Refusal(422, "invalid filter", str(e)) from None
        if delivery.events:
            trace.repository = delivery.events[0].repository
            trace.tag = delivery.events[0].tag
        chosen = merged(e for e in delivery.events if e.action in self.config.event_types)
        if len(chosen) > self.config.max_builds_per_webhook:
            raise Refusal(
                422,
                "too many builds",
                f"this webhook names {len(chosen)} different images; at most "
                f"{self.config.max_builds_per_webhook} builds are made for one webhook "
                "([gateway] max_builds_per_webhook)",
            )
        if not chosen:
            actions = sorted({e.action for e in delivery.events}) or ["nothing"]
            return Reply(
                200,
                {
                    "status": "ignored",
                    "reason": f"{delivery.registry} sent {', '.join(actions)}; "
                    f"builds are made for {', '.join(sorted(self.config.event_types))}",
                },
            )
        chosen, filtered = enrich.filter_tags(project, chosen)
        if not chosen:
            return _ignored(filtered)
        # A filter that reads only what the payload says is judged before
        # the lookups, so the images it leaves out are never looked up.
        early = rule is not None and (self.images is None or not rule.needs_lookup)
        commit = webhook.target.commit
        if rule is not None:  # the request variable only for a filter to read
            request = filters.request_variable(commit, webhook.headers, webhook.query)
        if rule is not None and early:
            chosen, _, reasons = filters.select(rule, trace.project, chosen, None, request)
            if not chosen:
                return _ignored(reasons)
        looked = self.images.results(project, chosen) if self.images is not None else None
        if rule is not None and not early:
            chosen, looked, reasons = filters.select(rule, trace.project, chosen, looked, request)
            if not chosen:
                return _ignored(reasons)
        annotate = self.config.annotate_payload
        secrets = enrich.build_secrets(project, chosen, looked, commit, annotate)
        return self._create(secrets, trace, deadline)

    def screen(
        self, target: Target, headers: Mapping[str, str], query_token: str | None, trace: Trace
    ) -> None:
        """Judge a webhook by its URL and headers, before its body is read:
        the project must exist and, unless only a signature over the body can
        tell, the credentials must be right.  Blocks: run it on a pool thread.

        :raises Refusal: what :meth:`deliver` would answer (401, 404, 503).
        """
        deadline = self.drain.cap(self.clock() + self.config.retry_seconds)
        presented = auth.Presented(headers, query_token, b"")
        self.refuse_the_empty_handed(target, trace, presented)
        project = self._project(target, trace, deadline, True)
        try:
            auth.screen(self.policy, project, presented)
        except auth.Unauthorized as e:
            raise _unauthorized(e, trace.project) from None

    def unverified(self, target: Target) -> bool:
        """Whether a webhook for ``target`` needs Kubernetes to learn its
        project (the cache never read it): such work may hold a thread for
        the whole retry budget of an outage, for a name anyone can make up,
        so the web layer bounds how many run at once."""
        return self.projects.known(brigade.project_id(target.project)) is None

    def failing(self) -> bool:
        """Whether Kubernetes is failing creates, or reads of new projects."""
        return self.health.failing_since is not None or self._reads_failing()

    def _reads_failing(self) -> bool:
        """Whether a read of a project the cache did not know failed within
        the retry budget (at least a second): another gets one quick attempt."""
        failed = self.health.read_failed_at
        window = max(self.config.retry_seconds, QUICK_ATTEMPT)
        return failed is not None and self.clock() - failed < window

    def refuse_the_empty_handed(
        self, target: Target, trace: Trace, presented: auth.Presented
    ) -> None:
        """Under ``require = always``, a request with no credential at all is
        refused before its project is read: the same 401, in the same time,
        for a project that exists and one that does not, at no cost to
        Kubernetes.  No I/O: the web layer asks it on the reactor too, so
        that such a request never takes a thread.

        :raises Refusal: that 401.
        """
        if self.policy.require == WHEN_CONFIGURED or not auth.presents_nothing(presented):
            return
        trace.project = brigade.project_id(target.project)
        raise _unauthorized(auth.Unauthorized(auth.INVALID), trace.project)

    def _long_outage(self) -> bool:
        """Whether Kubernetes has failed every create for longer than the budget."""
        failing = self.health.failing_since
        budget = self.config.retry_seconds
        return budget > 0 and failing is not None and self.clock() - failing > budget

    def _retried(
        self,
        deadline: float,
        attempt: Callable[[float], T],
        creating: bool = False,
        quick: bool = False,
    ) -> T:
        """``attempt(timeout)``, retried while Kubernetes is unavailable and
        the retry budget lasts.

        :param creating: the attempt creates builds; its outcome tells
            :attr:`health` whether Kubernetes answers (a project read may come
            from the cache and tell nothing).
        :param quick: one quick attempt only, as in a long outage.
        """
        started = self.clock()
        per_call = self.config.request_timeout
        left = self.drain.left()
        if left < outage.MIN_ATTEMPT:
            # Shutdown's deadline has come: no call is started (a webhook
            # still waiting for a thread is answered now, or spooled).
            raise StoreUnavailable("the gateway is stopping")
        if self.config.retry_seconds <= 0:
            budget = 0.0
        elif quick or self._long_outage():
            # An outage longer than the budget already: one quick attempt.
            budget, per_call = 0.0, min(per_call, QUICK_ATTEMPT)
        else:
            # At least one short attempt, even when the project read took it all.
            budget = max(deadline - started, outage.MIN_ATTEMPT)
        # Whatever is left of the drain bounds both the retries and each call.
        budget, per_call = min(budget, left), min(per_call, left)
        try:
            result = outage.within(budget, per_call, attempt, clock=self.clock, sleep=self.sleep)
        except StoreUnavailable:
            if creating and self.health.failing_since is None:
                self.health.failing_since = started
            raise
        except StoreRejected:
            if creating:
                self.health.failing_since = None  # it answered
            raise
        if creating:
            self.health.failing_since = self.health.read_failed_at = None
        return result

    def _project(
        self, target: Target, trace: Trace, deadline: float, screening: bool = False
    ) -> brigade.Project | None:
        """The project the URL names, or None (refused at once when the
        policy says that an unknown project is a 404).

        :param screening: for :meth:`screen`: a project the cache knows is
            used as it is, however old, without asking Kubernetes (deliver
            reads it properly), so that an outage is waited out once per
            webhook, not twice.  Past the retry budget of an outage, deliver
            does the same.
        """
        project_id = brigade.project_id(target.project)
        trace.project = project_id
        use_known = screening or self._long_outage() or self.drain.deadline is not None
        if use_known and brigade.is_secret_name(project_id):
            project = self.projects.known(project_id)
            if project is not None:
                return project
        project = None
        # A name already starting with brigade- is taken as an ID, and may not
        # be one Kubernetes could hold: no such project, without asking.
        if brigade.is_secret_name(project_id):
            was_known = self.projects.known(project_id) is not None
            # A name never read, while such reads fail: one quick attempt,
            # not the whole budget, so that made-up names cannot hold the
            # threads (and a real one is read as soon as Kubernetes is back).
            quick = not was_known and self._reads_failing()
            try:
                project = self._retried(
                    deadline,
                    lambda timeout: self.projects.get_project(project_id, timeout),
                    quick=quick,
                )
            except StoreUnavailable as e:
                if not was_known:
                    self.health.read_failed_at = self.clock()
                raise _store_failed("reading the project", e) from None
            if not was_known:
                # Kubernetes answered (a known project may have come from
                # the cache instead, telling nothing).
                self.health.read_failed_at = None
        if project is None and self.policy.require == WHEN_CONFIGURED:
            raise Refusal(404, "project not found")
        return project

    def _authorised_project(
        self, webhook: Webhook, trace: Trace, deadline: float
    ) -> brigade.Project:
        """The project the URL names, if the sender may trigger it."""
        presented = auth.Presented(webhook.headers, webhook.query_token, webhook.body)
        self.refuse_the_empty_handed(webhook.target, trace, presented)
        project = self._project(webhook.target, trace, deadline)
        try:
            method = auth.authorise(self.policy, project, presented)
        except auth.Unauthorized as e:
            raise _unauthorized(e, trace.project) from None
        if method == "none":
            log.warn(
                "project {project} has no token: anyone can trigger it "
                "([auth] require = when-configured)",
                project=trace.project,
            )
        assert project is not None
        return project

    def _create(self, secrets: Sequence[Mapping[str, Any]], trace: Trace, deadline: float) -> Reply:
        """Create every build; a redelivered one already exists, which is
        success.  Past the retry budget they are spooled, when there is a spool."""
        names = [str(secret["metadata"]["name"]) for secret in secrets]

        def create_all(timeout: float) -> None:
            for secret in secrets:
                self.store.create_build(secret, timeout)

        try:
            self._retried(deadline, create_all, creating=True)
        except StoreRejected as e:
            raise Refusal(422, "rejected", f"Kubernetes refused the build Secret: {e}") from None
        except StoreUnavailable as e:
            if self.spool is None:
                raise _store_failed("creating the build", e) from None
            return self._queue(secrets, names, trace, e)
        trace.builds.extend(names)
        return Reply(200, {"status": "Success", "builds": names})

    def _queue(
        self,
        secrets: Sequence[Mapping[str, Any]],
        names: list[str],
        trace: Trace,
        error: StoreUnavailable,
    ) -> Reply:
        """Write the builds to the spool; answer 202 once that is durable."""
        assert self.spool is not None
        try:
            self.spool.put(secrets, str(error))
        except SpoolFull as full:
            _store_failed("creating the build", error)
            log.warn(
                "cannot queue the builds of {project}: {full}", project=trace.project, full=full
            )
            raise unavailable(
                "Kubernetes is unavailable and the spool is full; retry later"
            ) from None
        except SpoolError as broken:
            _store_failed("creating the build", error)
            log.error(
                "cannot queue the builds of {project}: {error}", project=trace.project, error=broken
            )
            raise unavailable("Kubernetes is unavailable; retry later") from None
        emit = log.error if isinstance(error, StoreForbidden) else log.info
        for name in names:
            emit(
                "queued build {build} in the spool: Kubernetes is unavailable ({error})",
                build=name,
                error=str(error),
            )
        trace.builds.extend(names)
        return Reply(202, {"status": "queued", "builds": names})


def _ignored(reasons: Sequence[str]) -> Reply:
    """The answer to a webhook whose every image was left out, and why."""
    return Reply(200, {"status": "ignored", "reason": "; ".join(dict.fromkeys(reasons))})


def _unauthorized(error: auth.Unauthorized, project_id: str) -> Refusal:
    # Every sender is told the same; the operator may be told more.
    if error.note:
        log.warn("project {project}: {note}", project=project_id, note=error.note)
    return Refusal(
        401, "unauthorized", str(error), {"WWW-Authenticate": 'Bearer realm="brigade-crgw"'}
    )


def _store_failed(doing: str, error: StoreUnavailable) -> Refusal:
    # The details are for the operator; the sender only needs to retry.  A
    # permission the gateway lacks is an operator's error, not an outage.
    emit = log.error if isinstance(error, StoreForbidden) else log.warn
    emit("Kubernetes failed while {doing}: {error}", doing=doing, error=str(error))
    return unavailable("Kubernetes is unavailable; retry later")
