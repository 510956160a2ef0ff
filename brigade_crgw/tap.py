"""The command line: ``twistd -n brigade-crgw --config etc/brigade-crgw.ini``.

``Options`` loads and checks everything in ``postOptions`` so that a bad
configuration ends the process with one line and no traceback;
``makeService`` only wires the parts together.
"""

from __future__ import annotations

import os
import signal
from functools import partial
from typing import Any

import attr
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from .config import Config, ConfigError
from .deliver import Pipeline
from .kube import KubeStore, StoreConfigError, load_api_client
from .projects import ProjectCache
from .server import InFlight, access_log_formatter, bounded_request
from .web import Gateway

log = Logger()
# How long shutdown waits for webhooks in flight before stopping anyway.
DRAIN_SECONDS = 30.0


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
    ]

    def postOptions(self) -> None:
        try:
            if self["config"]:
                config = Config.from_ini(self["config"])
            else:
                config = Config.from_string("")
            overrides = {k: self[k] for k in ("listen", "namespace", "kubeconfig") if self[k]}
            config = config.replace(**overrides)
            serverFromString(reactor, config.listen)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        except (ValueError, KeyError, TypeError) as e:
            raise usage.UsageError(
                f"[server] listen: {config.listen!r} is not an endpoint: {e}"
            ) from None
        try:
            api = load_api_client(config.kubeconfig, config.context, config.threads)
        except StoreConfigError as e:
            raise usage.UsageError(str(e)) from None
        self["parsed"] = config
        self["api"] = api


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
    gateway = Gateway(
        Pipeline(config, projects, store),
        partial(deferToThreadPool, reactor, pool),
        in_flight,
    )
    site = Site(
        gateway.app.resource(),
        requestFactory=bounded_request(config.max_body_bytes, config.read_timeout, reactor),
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
    StreamServerEndpointService(serverFromString(reactor, config.listen), site).setServiceParent(
        top
    )
    return top
