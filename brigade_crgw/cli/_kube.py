"""The operator's own way into Kubernetes, found as ``kubectl`` finds it.

``--kubeconfig``, else ``$KUBECONFIG`` (a list of files, merged), else
``~/.kube/config``, else the pod's service account; ``--context``, else the
current context.  The namespace: ``--namespace``, else ``$BRIGADE_NAMESPACE``
(as Brigade's own ``brig`` reads it), else the context's namespace, else
``default``.  Never the gateway's ini or identity: an operator's verbs do
what the gateway may not (update a project's Secret).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import attr

from ._verb import Failed

# Seconds for each call to the API server.
TIMEOUT = 15.0
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def add_kubernetes_options(parser: argparse.ArgumentParser) -> None:
    """``--kubeconfig``, ``--context`` and ``--namespace``, as kubectl has them."""
    group = parser.add_argument_group("Kubernetes (your own identity, found as kubectl finds it)")
    group.add_argument(
        "--kubeconfig", metavar="FILE", help="default: $KUBECONFIG, else ~/.kube/config"
    )
    group.add_argument("--context", metavar="NAME", help="default: the current context")
    group.add_argument(
        "--namespace",
        "-n",
        metavar="NAME",
        help="Brigade's namespace; default: $BRIGADE_NAMESPACE, else the context's, else default",
    )


@attr.s(frozen=True, auto_attribs=True)
class Cluster:
    """An API client in the operator's name, and Brigade's namespace."""

    api: Any
    namespace: str

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)


def connect(args: argparse.Namespace) -> Cluster:
    """The operator's cluster, from the Kubernetes options.

    :raises Failed: when no configuration can be loaded.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    context_namespace = ""
    # Named here: the client reads $KUBECONFIG once, when it is imported.
    files = args.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        if args.kubeconfig or _default_kubeconfig_exists():
            config.load_kube_config(files, args.context, configuration, persist_config=False)
            contexts, current = config.list_kube_config_contexts(files)
            chosen = next((c for c in contexts if c["name"] == args.context), current)
            context_namespace = ((chosen or {}).get("context") or {}).get("namespace") or ""
        else:
            config.load_incluster_config(configuration)
            if _SERVICE_ACCOUNT_NAMESPACE.exists():
                context_namespace = _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except (ConfigException, OSError, ValueError, TypeError) as e:
        raise Failed(
            f"no usable Kubernetes configuration in {files}: {e}; "
            "give --kubeconfig, or set $KUBECONFIG"
        ) from None
    # One quick failure, not the client's silent retries.
    configuration.retries = False
    namespace = (
        args.namespace or os.environ.get("BRIGADE_NAMESPACE") or context_namespace or "default"
    )
    return Cluster(client.ApiClient(configuration), namespace)


def _default_kubeconfig_exists() -> bool:
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        return any(Path(p).expanduser().is_file() for p in listed.split(os.pathsep) if p)
    return (Path.home() / ".kube" / "config").is_file()


def api_failure(error: Exception, verb: str, what: str, cluster: Cluster) -> Failed:
    """One line for a failed call: the API server's answer, or why there was none.

    :param verb: the Kubernetes verb (``get``, ``update``).
    :param what: the object (``secrets``, ``Secret brigade-…``).
    """
    from kubernetes.client.exceptions import ApiException

    if isinstance(error, ApiException):
        reason = _status_message(error.body) or error.reason or ""
        if error.status in (401, 403):
            return Failed(
                f"your identity may not {verb} {what} in namespace {cluster.namespace} "
                f"(the API server answered {error.status}: {reason})"
            )
        return Failed(f"the API server answered {error.status} to {verb} {what}: {reason}")
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return Failed(f"the API server at {cluster.server} did not answer: {text}")


def _status_message(body: object) -> str:
    import json

    try:
        status = json.loads(body) if isinstance(body, (str, bytes)) else None
    except ValueError:
        return ""
    return str(status.get("message", "")) if isinstance(status, dict) else ""
