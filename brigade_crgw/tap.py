"""The command line: ``twistd -n brigade-crgw --config etc/brigade-crgw.ini``.

``Options`` loads and checks everything in ``postOptions`` so that a bad
configuration ends the process with one line and no traceback;
``makeService`` only wires the parts together.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from functools import partial
from threading import Thread
from typing import Any

import attr
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from .config import Config, ConfigError
from .delivery import images
from .delivery.drainer import Drainer
from .delivery.outage import Drain
from .delivery.pipeline import Pipeline
from .delivery.spool import Spool, SpoolError
from .http.accesslog import access_log_formatter
from .http.app import Gateway
from .http.connections import ConnectionLimit, raise_open_files
from .http.inflight import FLUSH_SECONDS, InFlight
from .http.metrics import Metrics
from .http.readiness import Readiness
from .http.requests import BodyBudget, bounded_request
from .kubernetes.projects import ProjectCache
from .kubernetes.store import KubeStore, StoreConfigError, load_api_client

log = Logger()
# The part of [server] drain_seconds kept, at the end, for answers to leave
# and for the webhooks whose work could not end in time to be told 503.
DRAIN_MARGIN = 2.0
# How long the pool's threads are waited for once no webhook needs them.
JOIN_SECONDS = 2.0
# The exit code of a configuration error (EX_CONFIG in sysexits.h): the
# systemd unit does not restart on it (RestartPreventExitStatus=), since the
# same configuration would fail again.
EXIT_CONFIG = 78
# The exit code when the listening socket cannot be had (a port in use):
# a supervisor should try again.
EXIT_LISTEN = 1


class ConfigurationError(usage.UsageError):
    """The ini, an override or the kubeconfig is unusable."""


def _check_adopted(endpoint: object, listen: str) -> None:
    """A socket passed by systemd must be of the family ``listen`` names:
    Twisted trusts ``domain=``, and an IPv6 socket read as IPv4 gives
    garbage peer addresses."""
    if not isinstance(endpoint, AdoptedStreamServerEndpoint):
        return
    expected = endpoint.addressFamily
    with socket.socket(fileno=os.dup(endpoint.fileno)) as passed:
        actual = passed.family
    if actual != expected:
        raise ConfigurationError(
            f"[server] listen: {listen!r} says domain={socket.AddressFamily(expected).name[3:]}"
            f" but systemd passed an {actual.name} socket; use domain={actual.name[3:]}"
        )


class Options(usage.Options):
    optParameters = [
        [
            "config",
            "c",
            None,
            "The ini file (see etc/brigade-crgw.ini); defaults apply without one.",
        ],
        ["listen", None, None, "Override [server] listen: an endpoint string, e.g. tcp:7744."],
        ["namespace", None, None, "Override [kubernetes] namespace (and $BRIGADE_NAMESPACE)."],
        ["kubeconfig", None, None, "Override [kubernetes] kubeconfig."],
        ["spool", None, None, "Override [spool] path: the spool file, or '' for none."],
    ]

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except ConfigurationError as e:
            if self.parent is None:
                raise  # not under twistd or twist: the caller handles it
            # twistd would print the whole usage text and exit 1; a
            # configuration error is one line and its own exit code.
            print(f"brigade-crgw: {e}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CONFIG) from None

    def postOptions(self) -> None:
        try:
            if self["config"]:
                config = Config.from_ini(self["config"])
            else:
                config = Config.from_string("")
            overrides = {
                k: self[k]
                for k in ("listen", "namespace", "kubeconfig", "spool")
                if self[k] is not None and (self[k] or k == "spool")
            }
            config = config.replace(**overrides)
            endpoint = serverFromString(reactor, config.listen)
        except ConfigError as e:
            raise ConfigurationError(str(e)) from None
        except IndexError:
            raise ConfigurationError(
                f"[server] listen: {config.listen!r}: systemd passed no socket at that index"
            ) from None
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigurationError(
                f"[server] listen: {config.listen!r} is not an endpoint: {e}"
            ) from None
        _check_adopted(endpoint, config.listen)
        try:
            api = load_api_client(config.kubeconfig, config.context, config.threads)
        except StoreConfigError as e:
            raise ConfigurationError(str(e)) from None
        self["parsed"] = config
        self["api"] = api
        self["spool_file"] = None
        if config.spool_path:
            # Opened here so that a spool that cannot be opened or read stops
            # the start with one line naming it, before anything listens.
            try:
                self["spool_file"] = Spool.open(
                    config.spool_path,
                    config.spool_max_entries,
                    max_per_project=config.spool_max_per_project,
                )
            except SpoolError as e:
                # A spool that cannot be read now will not be on a restart:
                # the configuration's exit code, so systemd does not loop.
                raise ConfigurationError(str(e)) from None


class DaemonThreadPool(ThreadPool):
    """A thread pool whose threads never hold the process up at exit: one
    still inside a Kubernetes call when the drain is over is abandoned."""

    threadFactory = staticmethod(partial(Thread, daemon=True))  # type: ignore[assignment]


def _on_own_thread(reactor: Any, f: Callable[[], None]) -> Deferred[None]:
    """``f()`` on a daemon thread of its own (not the reactor's pool, which
    the reactor joins at exit); fires on the reactor when it returns."""
    done: Deferred[None] = Deferred()

    def run() -> None:
        f()
        reactor.callFromThread(done.callback, None)

    Thread(target=run, name="brigade-crgw-stop", daemon=True).start()
    return done


@attr.s(auto_attribs=True)
class ThreadPoolService(Service):
    """Runs the thread pool between start and stop; on stop, first lets the
    webhooks in flight finish (the listener has stopped taking new ones).

    The drain has a deadline (:attr:`seconds`): the pipeline is told it
    (:class:`~brigade_crgw.delivery.outage.Drain`), so that no Kubernetes
    call or registry lookup outlives it; at it, any webhook still waiting is
    answered 503 (:attr:`give_up`).  The pool's threads are then joined on
    a thread of its own, never on the reactor's: a pool thread may be
    waiting for the reactor (a lookup), which must keep turning.

    :param off_reactor: runs a blocking call on another thread; tests pass
        ``maybeDeferred``.
    """

    pool: ThreadPool
    in_flight: InFlight
    clock: IReactorTime
    drain: Drain = attr.ib(factory=Drain)
    seconds: float = 30.0
    give_up: Callable[[], int] = lambda: 0
    off_reactor: Callable[[Callable[[], None]], Deferred[None]] | None = None

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.drain.begin(max(0.0, self.seconds - min(DRAIN_MARGIN, self.seconds / 4)))
        drained = self.in_flight.drained()
        drained.addTimeout(self.seconds, self.clock)
        drained.addErrback(self._deadline)
        return drained.addCallback(self._stop_pool)

    def _deadline(self, failure: Any) -> Deferred[None]:
        failure.trap(TimeoutError)
        told = self.give_up()
        log.warn(
            "drain_seconds ({seconds:g}) is over: {told} webhooks told 503, "
            "{count} still held a slot",
            seconds=self.seconds,
            told=told,
            count=self.in_flight.count,
        )
        # Give those answers a moment to leave, as a drained one would have.
        return deferLater(self.clock, FLUSH_SECONDS, lambda: None)

    def _stop_pool(self, _: object) -> Deferred[None]:
        off = self.off_reactor or partial(_on_own_thread, self.clock)
        stopped = off(self.pool.stop)
        stopped.addTimeout(JOIN_SECONDS, self.clock)

        def late(failure: Any) -> None:
            failure.trap(TimeoutError)
            log.warn("a pool thread is still busy; exiting without it")

        return stopped.addErrback(late)


@attr.s(auto_attribs=True)
class CleanExitOnTerm(Service):
    """Makes SIGTERM a clean stop that exits 0, after ``delay`` seconds.

    twistd's own handler re-raises the signal after shutdown, so the process
    would end "killed by SIGTERM" (143 in Kubernetes) even when it drained
    every webhook.  The reactor installs its own handlers once it runs, so
    this one is installed just after, in their place.

    For ``delay`` seconds after SIGTERM (``[server] shutdown_delay``) the
    gateway is not ready but still takes pushes, each connection closed
    after its answer: load balancers, Services and ingresses go on sending
    to a stopping replica until their health checks or endpoints catch up.
    Then it stops listening and finishes the webhooks in flight.  A second
    SIGTERM ends the delay at once.

    :param stopping: called at SIGTERM (readiness turns 503).
    """

    reactor: Any
    delay: float = 0.0
    stopping: Callable[[], object] = lambda: None
    _later: Any = None

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(signal.signal, signal.SIGTERM, self._stop)

    def _stop(self, signum: int, frame: object) -> None:
        # A signal handler: the work is done on the reactor's thread.
        self.reactor.callFromThread(self._begin)

    def _begin(self) -> None:
        if self._later and self._later.active():
            log.info("received SIGTERM again: stopping now")
            self._later.cancel()
            self.reactor.stop()
            return
        if self._later is not None:
            return  # already stopping
        self.stopping()
        if self.delay <= 0:
            log.info("received SIGTERM: finishing webhooks in flight, then exiting")
            self._later = False
            self.reactor.stop()
            return
        log.info(
            "received SIGTERM: not ready; taking webhooks for {delay:g}s more "
            "([server] shutdown_delay), then finishing those in flight and exiting",
            delay=self.delay,
        )
        self._later = self.reactor.callLater(self.delay, self._end)

    def _end(self) -> None:
        log.info("shutdown_delay is over: no longer listening; finishing webhooks in flight")
        self.reactor.stop()


class ListeningService(StreamServerEndpointService):
    """The listener.  Listening is the first thing started, and a failure
    ends the process at once with one line and exit code 1 (so that systemd
    or the kubelet restarts it), rather than a gateway running with nothing
    to listen on."""

    _raiseSynchronously = True

    def __init__(self, endpoint: Any, factory: Any, listen: str) -> None:
        super().__init__(endpoint, factory)
        self.listen = listen

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:
            reason = getattr(e, "socketError", None) or e
            log.critical("cannot listen on {listen}: {reason}", listen=self.listen, reason=reason)
            print(f"brigade-crgw: cannot listen on {self.listen}: {reason}", file=sys.stderr)
            raise SystemExit(EXIT_LISTEN) from None


def makeService(options: Options, reactor: Any = reactor) -> IService:
    """Wire the gateway: the listener, the thread pool and the pipeline.

    :param reactor: the reactor to run on; the global one by default.
    """
    config: Config = options["parsed"]
    pool = DaemonThreadPool(minthreads=1, maxthreads=config.threads, name="brigade-crgw")
    drain = Drain()
    in_flight = InFlight(config.max_in_flight, reactor)
    store = KubeStore(options["api"], config.namespace, config.request_timeout)
    projects = ProjectCache(
        store, config.project_cache_seconds, miss_seconds=config.project_cache_seconds / 5
    )
    spool: Spool | None = options.get("spool_file")
    run = partial(deferToThreadPool, reactor, pool)
    readiness = Readiness(
        store.check_access, run, reactor, config.request_timeout, warm=projects.warm
    )
    # Made here and handed to whoever counts.
    metrics = Metrics(lambda: in_flight.count)
    lookups = images.create(config, reactor, store, record=metrics.record_lookup, drain=drain)
    gateway = Gateway(
        Pipeline(config, projects, store, lookups, spool, drain=drain),
        run,
        in_flight,
        ready=readiness.state,
        metrics=metrics,
    )
    site = Site(
        gateway.app.resource(),
        requestFactory=bounded_request(
            config.max_body_bytes,
            config.read_timeout,
            reactor,
            in_flight,
            screen=gateway.screen,
            budget=BodyBudget(config.max_buffered_bytes),
            closing=lambda: readiness.stopping,
        ),
        parsePOSTFormSubmission=False,
        # Idle connections (and senders that stall) are closed after this.
        timeout=config.read_timeout,
        logFormatter=access_log_formatter,
        reactor=reactor,
    )
    log.info(
        "brigade-crgw listening on {listen}, namespace {namespace}, {threads} threads, pid {pid}",
        listen=config.listen,
        namespace=config.namespace,
        threads=config.threads,
        pid=os.getpid(),
    )
    metrics.watch_readiness(lambda: readiness.state()[0], lambda: readiness.kubernetes()[0])
    top = MultiService()
    CleanExitOnTerm(reactor, config.shutdown_delay, readiness.stop_taking).setServiceParent(top)
    ThreadPoolService(
        pool, in_flight, reactor, drain, config.drain_seconds, gateway.give_up
    ).setServiceParent(top)
    readiness.setServiceParent(top)
    if spool is not None:
        # Started after the pool and so stopped before it.
        drainer = Drainer(spool, store, run, reactor, metrics.record_dropped, drain=drain)
        drainer.setServiceParent(top)
        metrics.watch_spool(lambda: drainer.stats)
        held = spool.max_entries

        def room() -> bool:
            return drainer.stats.depth + drainer.stats.rejected < held

        readiness.spool_room = room
        log.info("spool {path}: {depth} builds waiting", path=spool.path, depth=spool.depth())
    # Open connections are bounded here; the file limit must not bind first
    # (room is left for the Kubernetes connections, the log and the pool).
    raise_open_files(config.max_connections + config.threads + 64)
    listening = ConnectionLimit(site, config.max_connections)
    ListeningService(
        serverFromString(reactor, config.listen), listening, config.listen
    ).setServiceParent(top)
    return top
