"""The Kubernetes store: read a project Secret, create a build Secret.

A small interface (:class:`SecretStore`) with one real implementation on the
official client.  Every method blocks, so callers run them on the gateway's
thread pool.  The store knows nothing of registries or HTTP; any failure of
Kubernetes comes out as :class:`StoreUnavailable`, which the web layer turns
into a 503 that the registry retries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import attr
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from .brigade import Project


class StoreUnavailable(Exception):
    """Kubernetes could not answer (unreachable, timed out, refused, 5xx)."""


class StoreRejected(Exception):
    """Kubernetes refused the request for good (400, 413, 422: e.g. a build
    Secret over 1 MiB); retrying or spooling it cannot help."""


class StoreConfigError(Exception):
    """No usable cluster configuration (kubeconfig or in-cluster)."""


class SecretStore(Protocol):
    """What the gateway needs of Kubernetes."""

    def get_project(self, project_id: str) -> Project | None:
        """The project stored under ``project_id``, or None when there is none.

        :raises StoreUnavailable: when Kubernetes cannot say.
        """

    def create_build(self, secret: Mapping[str, Any]) -> bool:
        """Create the build Secret; True if it was created, False if a Secret
        of that name already existed (a redelivery).

        :raises StoreUnavailable: when Kubernetes did not take it.
        """


def load_api_client(kubeconfig: str = "", context: str = "", threads: int = 8) -> client.ApiClient:
    """One ApiClient for the process: from ``kubeconfig`` when given, else
    in-cluster when running in a pod, else ``$KUBECONFIG`` or ``~/.kube/config``.

    :raises StoreConfigError: when none of those works.
    """
    configuration = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(kubeconfig, context or None, configuration)
        else:
            try:
                config.load_incluster_config(configuration)
            except ConfigException:
                config.load_kube_config(None, context or None, configuration)
    except (ConfigException, OSError, ValueError, TypeError) as e:
        where = kubeconfig or "in-cluster, $KUBECONFIG or ~/.kube/config"
        raise StoreConfigError(f"no usable Kubernetes configuration ({where}): {e}") from None
    # One connection per worker thread; no silent retries, which would
    # stretch a call past its timeout (the registry retries the delivery).
    configuration.connection_pool_maxsize = threads
    configuration.retries = False
    return client.ApiClient(configuration)


@attr.s(frozen=True, auto_attribs=True)
class KubeStore:
    """The :class:`SecretStore` backed by a real API server.

    :param api: the process's one ApiClient.
    :param namespace: Brigade's namespace.
    :param timeout: seconds allowed for each call, connect and read.
    """

    api: client.ApiClient
    namespace: str
    timeout: float

    def get_project(self, project_id: str) -> Project | None:
        try:
            # The raw JSON, not the generated model: Project reads it as data.
            response = client.CoreV1Api(self.api).read_namespaced_secret(
                project_id, self.namespace, _request_timeout=self.timeout, _preload_content=False
            )
            secret = _json(response.data)  # type: ignore[arg-type]
        except ApiException as e:
            if e.status == 404:
                return None
            raise StoreUnavailable(_describe(e)) from None
        except Exception as e:  # urllib3 and socket errors have no common base
            raise StoreUnavailable(_describe(e)) from None
        return Project.from_secret(project_id, secret)

    def create_build(self, secret: Mapping[str, Any]) -> bool:
        try:
            client.CoreV1Api(self.api).create_namespaced_secret(
                self.namespace,
                dict(secret),  # type: ignore[arg-type]
                _request_timeout=self.timeout,
                _preload_content=False,
            )
        except ApiException as e:
            if e.status == 409:
                return False
            raise StoreUnavailable(_describe(e)) from None
        except Exception as e:
            raise StoreUnavailable(_describe(e)) from None
        return True


def _json(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise StoreUnavailable("the API server answered something that is not a Secret")
    return value


def _describe(error: Exception) -> str:
    """A one-line account of a failure, without request bodies (they hold secrets)."""
    if isinstance(error, ApiException):
        return f"Kubernetes answered {error.status} {error.reason}"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
