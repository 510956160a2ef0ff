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
from functools import partial
from typing import Any

import attr
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from .config import Config, ConfigError
from .delivery import images
from .delivery.drainer import Drainer
from .delivery.pipeline import Pipeline
from .delivery.spool import Spool, SpoolError
from .http.accesslog import access_log_formatter
from .http.app import Gateway
from .http.connections import ConnectionLimit, raise_open_files
from .http.inflight import InFlight
from .http.metrics import Metrics
from .http.readiness import Readiness
from .http.requests import BodyBudget, bounded_request
from .kubernetes.projects import ProjectCache
from .kubernetes.store import KubeStore, StoreConfigError, load_api_client

log = Logger()
# How long shutdown waits for webhooks in flight before stopping anyway.
DRAIN_SECONDS = 30.0
# The exit code of a configuration error (EX_CONFIG in sysexits.h): the
# systemd unit does not restart on it (RestartPreventExitStatus=), since the
# same configuration would fail again.
EXIT_CONFIG = 78


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
                self["spool_file"] = Spool.open(config.spool_path, config.spool_max_entries)
            except SpoolError as e:
                raise usage.UsageError(str(e)) from None


@attr.s(auto_attribs=True)
class ThreadPoolService(Service):
    """Runs the thread pool between start and stop; on stop, first lets the
    webhooks in flight finish (the listener has stopped taking new ones)."""

    pool: ThreadPool
    in_flight: InFlight
    clock: IReactorTime

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        drained = self.in_flight.drained()
        drained.addTimeout(DRAIN_SECONDS, self.clock)

        def stop(result: Any) -> None:
            if self.in_flight.count:
                log.warn("stopping with {count} webhooks unanswered", count=self.in_flight.count)
            self.pool.stop()

        return drained.addBoth(stop)


@attr.s(auto_attribs=True)
class CleanExitOnTerm(Service):
    """Makes SIGTERM a clean stop that exits 0.

    twistd's own handler re-raises the signal after shutdown, so the process
    would end "killed by SIGTERM" (143 in Kubernetes) even when it drained
    every webhook.  The reactor installs its own handlers once it runs, so
    this one is installed just after, in their place.
    """

    reactor: Any

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(signal.signal, signal.SIGTERM, self._stop)

    def _stop(self, signum: int, frame: object) -> None:
        log.info("received SIGTERM: finishing webhooks in flight, then exiting")
        self.reactor.callFromThread(self.reactor.stop)


def makeService(options: Options, reactor: Any = reactor) -> IService:
    """Wire the gateway: the listener, the thread pool and the pipeline.

    :param reactor: the reactor to run on; the global one by default.
    """
    config: Config = options["parsed"]
    pool = ThreadPool(minthreads=1, maxthreads=config.threads, name="brigade-crgw")
    in_flight = InFlight(config.max_in_flight, reactor)
    store = KubeStore(options["api"], config.namespace, config.request_timeout)
    projects = ProjectCache(
        store, config.project_cache_seconds, miss_seconds=config.project_cache_seconds / 5
    )
    spool: Spool | None = options.get("spool_file")
    run = partial(deferToThreadPool, reactor, pool)
    readiness = Readiness(store.check_access, run, reactor, config.request_timeout)
    # Made here and handed to whoever counts.
    metrics = Metrics(lambda: in_flight.count)
    lookups = images.create(config, reactor, store, record=metrics.record_lookup)
    gateway = Gateway(
        Pipeline(config, projects, store, lookups, spool),
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
    top = MultiService()
    CleanExitOnTerm(reactor).setServiceParent(top)
    ThreadPoolService(pool, in_flight, reactor).setServiceParent(top)
    readiness.setServiceParent(top)
    if spool is not None:
        # Started after the pool and so stopped before it.
        drainer = Drainer(spool, store, run, reactor)
        drainer.setServiceParent(top)
        metrics.watch_spool(lambda: drainer.stats)
        log.info("spool {path}: {depth} builds waiting", path=spool.path, depth=spool.depth())
    # Open connections are bounded here; the file limit must not bind first
    # (room is left for the Kubernetes connections, the log and the pool).
    raise_open_files(config.max_connections + config.threads + 64)
    listening = ConnectionLimit(site, config.max_connections)
    StreamServerEndpointService(
        serverFromString(reactor, config.listen), listening
    ).setServiceParent(top)
    return top
