"""``brigade-crgw check --config INI``: everything the gateway would check at
start, and a little more, without serving.

In order: the ini; ``[server] listen``; the kubeconfig the ini names (the gateway's identity,
found as the daemon finds it: ``--kubeconfig``, ``--context`` and
``--namespace`` stand in for the ini's, as ``twistd brigade-crgw``'s
options do); that the API server answers; what that identity may do with
Secrets in the namespace, asked of the API server itself
(SelfSubjectAccessReview): ``get`` and ``create`` are needed, ``list``,
``watch``, ``update``, ``patch`` and ``delete`` are more than it needs; that
the spool opens and takes a write; that each ``[registry] hosts`` entry
answers ``GET /v2/``.  One line per check; a failure names the problem and
the fix.  Exit 0 when nothing failed (warnings allowed), else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attr

from ._verb import Failed, Verb, add_config_option, load_config

if TYPE_CHECKING:
    from ..config import Config

OK, WARNING, FAILED = "ok", "warning", "FAILED"
NEEDED = ("get", "create")
SPARE = ("list", "watch", "update", "patch", "delete")


@attr.s(frozen=True, auto_attribs=True)
class Result:
    """One check's outcome.

    :param check: what was checked, in a word or two (``spool``).
    :param status: :data:`OK`, :data:`WARNING` or :data:`FAILED`.
    :param message: what was found.
    :param fix: what to do about it (for a warning or a failure).
    """

    check: str
    status: str
    message: str
    fix: str = ""

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.status:<8} {self.check}: {self.message}{fix}"


def _configure(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--kubeconfig", metavar="FILE", help="over [kubernetes] kubeconfig")
    parser.add_argument("--context", metavar="NAME", help="over [kubernetes] context")
    parser.add_argument(
        "--namespace",
        "-n",
        metavar="NAME",
        help="over [kubernetes] namespace and $BRIGADE_NAMESPACE",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    results = list(checks(args))
    failed = any(r.status == FAILED for r in results)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [attr.asdict(r) for r in results]}))
    else:
        for r in results:
            print(r.line())
    return 1 if failed else 0


def checks(args: argparse.Namespace) -> Iterator[Result]:
    """Every check, in order; those that need what failed are not run."""
    try:
        config = load_config(args, kubeconfig=args.kubeconfig, namespace=args.namespace)
    except Failed as e:
        yield Result(
            "ini", FAILED, str(e), "correct the ini (etc/brigade-crgw.ini documents every key)"
        )
        return
    if args.context is not None:
        config = attr.evolve(config, context=args.context)
    yield Result("ini", OK, f"{args.config} reads; namespace {config.namespace}")
    yield _listen(config.listen)
    yield from _kubernetes(config)
    yield from _spool(config)
    yield from _registries(config)


def _listen(listen: str) -> Result:
    """The endpoint string parses, as the daemon parses it (nothing listens)."""
    from twisted.internet.endpoints import serverFromString

    if listen.startswith("systemd:"):
        return Result("listen", OK, f"{listen}: a socket passed by systemd, checked at start")
    try:
        # Parsing needs no reactor: the endpoint only keeps it.
        serverFromString(object(), listen)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        return Result(
            "listen",
            FAILED,
            f"[server] listen: {listen!r} is not an endpoint: {e}",
            "write an endpoint string such as tcp:7744 (see etc/brigade-crgw.ini)",
        )
    return Result("listen", OK, f"{listen} is an endpoint")


def _kubernetes(config: Config) -> Iterator[Result]:
    from ..kubernetes.store import StoreConfigError, load_api_client

    try:
        api = load_api_client(config.kubeconfig, config.context, 1)
    except StoreConfigError as e:
        yield Result(
            "kubeconfig",
            FAILED,
            str(e),
            "set [kubernetes] kubeconfig (and context) to a kubeconfig holding the "
            "gateway's identity",
        )
        return
    try:
        yield from _api_server(api, config)
    finally:
        api.close()


def _api_server(api: Any, config: Config) -> Iterator[Result]:
    from kubernetes import client

    server = api.configuration.host
    yield Result("kubeconfig", OK, f"{config.kubeconfig or 'the default'} loads; server {server}")
    timeout = config.request_timeout
    try:
        version = client.VersionApi(api).get_code(_request_timeout=timeout)
    except Exception as e:
        answered = getattr(e, "status", None)
        if answered not in (401, 403):
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            yield Result(
                "API server",
                FAILED,
                f"the API server at {server} does not answer: {text}",
                "start it, or correct the server address in the kubeconfig, and check "
                "the network between the gateway and it",
            )
            return
        version = None
    shown = f" (Kubernetes {version.git_version})" if version is not None else ""
    yield Result("API server", OK, f"{server} answers{shown}")
    authorization = client.AuthorizationV1Api(api)
    for verb in NEEDED + SPARE:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=config.namespace, verb=verb, resource="secrets"
                )
            )
        )
        try:
            answer = authorization.create_self_subject_access_review(
                review, _request_timeout=timeout
            )
        except Exception as e:
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            yield Result(
                f"may {verb} secrets",
                FAILED,
                f"the API server did not say whether the identity may {verb} secrets: {text}",
                "check that the kubeconfig's credentials are valid",
            )
            continue
        allowed = bool(answer.status and answer.status.allowed)
        where = f"secrets in namespace {config.namespace}"
        if verb in NEEDED and allowed:
            yield Result(f"may {verb} secrets", OK, f"the identity may {verb} {where}")
        elif verb in NEEDED:
            yield Result(
                f"may {verb} secrets",
                FAILED,
                f"the identity may not {verb} {where}: the gateway "
                + ("cannot read projects" if verb == "get" else "cannot make builds"),
                f"grant it {verb} on secrets in {config.namespace} "
                "(etc/kubernetes/rbac.yaml: get and create, nothing more)",
            )
        elif allowed:
            yield Result(
                f"may {verb} secrets",
                WARNING,
                f"the identity may also {verb} {where}, which the gateway never does",
                f"take {verb} away for least privilege (etc/kubernetes/rbac.yaml grants get "
                "and create only)",
            )


def _spool(config: Config) -> Iterator[Result]:
    if not config.spool_path:
        yield Result("spool", OK, "none configured: during a long outage webhooks get 503")
        return
    path = config.spool_path
    if not os.path.exists(path):
        directory = os.path.dirname(os.path.abspath(path))
        if os.access(directory, os.W_OK | os.X_OK):
            yield Result("spool", OK, f"{path} does not exist yet; the gateway will create it")
        else:
            yield Result(
                "spool",
                FAILED,
                f"{path} does not exist and {directory} is not writable here",
                f"create {directory}, writable by the gateway's user, or correct [spool] path",
            )
        return
    from ..delivery.spool import Spool, SpoolError

    try:
        with Spool.open_existing(path, config.spool_max_entries) as spool:
            spool.check_writable()
            depth, rejected = spool.depth(), spool.rejected()
    except SpoolError as e:
        yield Result(
            "spool",
            FAILED,
            str(e),
            "make the file readable and writable by the gateway's user (run check as that "
            "user), or move the file aside",
        )
        return
    yield Result(
        "spool", OK, f"{path} opens and takes a write; {depth} waiting, {rejected} rejected"
    )


def _registries(config: Config) -> Iterator[Result]:
    for host, endpoint in config.registry_endpoints().items():
        url = f"{endpoint}/v2/"
        # [registry] endpoints are http:// or https:// (the ini parser checks).
        request = urllib.request.Request(url, headers={"User-Agent": "brigade-crgw check"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=config.lookup_timeout) as answer:  # noqa: S310
                status = answer.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            yield Result(
                f"registry {host}",
                FAILED,
                f"GET {url} failed: {reason}",
                "check the name in [registry] hosts (or its [registry] endpoints URL), DNS "
                "and the network, or remove the host",
            )
            continue
        if status in (200, 401):
            yield Result(f"registry {host}", OK, f"GET {url} answered {status}")
        else:
            yield Result(
                f"registry {host}",
                FAILED,
                f"GET {url} answered {status}, not 200 or 401: not a registry's API",
                "point [registry] endpoints at the registry's base URL",
            )


VERB = Verb(
    "check", "check a configuration as the gateway would at start, without serving", _configure
)
