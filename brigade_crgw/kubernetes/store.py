"""The Kubernetes store: read a project Secret, create a build Secret.

A small interface (:class:`SecretStore`) with one real implementation on the
official client.  Every method blocks, so callers run them on the gateway's
thread pool.  The store knows nothing of registries or HTTP.  A failure of
Kubernetes comes out as :class:`StoreUnavailable` (try again later) or, when
the API server refuses the object itself, :class:`StoreRejected` (never
retry).

The kubernetes client loads the configuration (kubeconfig or in-cluster,
with its token refresh) and owns the connection pool; the two calls are made
on that pool directly.  The client's generated API methods validate every
argument through pydantic and built a model per call, which cost more than
the rest of a webhook, and their raw responses were never handed back to the
pool, so every call opened a new TLS connection.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import attr
import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from ..brigade import Project


class StoreUnavailable(Exception):
    """Kubernetes could not answer (unreachable, timed out, refused, 5xx)."""


class StoreForbidden(StoreUnavailable):
    """Kubernetes answered 401 or 403: the gateway's own identity lacks a
    permission.  Handled like an outage, but logged as an error."""


class StoreRejected(Exception):
    """Kubernetes refused the object itself (400, 413, 422): retrying the same
    object cannot succeed.  str() is Kubernetes' reason, safe to show."""


class StoreConfigError(Exception):
    """No usable cluster configuration (kubeconfig or in-cluster)."""


class SecretStore(Protocol):
    """What the gateway needs of Kubernetes."""

    def get_project(self, project_id: str, timeout: float | None = None) -> Project | None:
        """The project stored under ``project_id``, or None when there is none.

        :param timeout: seconds for this call, when not the store's own.
        :raises StoreUnavailable: when Kubernetes cannot say.
        """

    def get_secret(self, name: str) -> dict[str, Any] | None:
        """Any Secret of the namespace as the API returns it (``type``, base64
        ``data``), or None when there is none (a pull secret).

        :raises StoreUnavailable: when Kubernetes cannot say.
        """

    def create_build(self, secret: Mapping[str, Any], timeout: float | None = None) -> bool:
        """Create the build Secret; True if it was created, False if a Secret
        of that name already existed (a redelivery).

        :param timeout: seconds for this call, when not the store's own.

        :raises StoreUnavailable: when Kubernetes did not take it.
        :raises StoreRejected: when Kubernetes refused it as invalid.
        """


# Kubeconfig keys that name files, by section, and their inline forms (-data).
_FILE_KEYS = {
    "clusters": ("cluster", ("certificate-authority",)),
    "users": ("user", ("client-certificate", "client-key", "tokenFile")),
}


def _files_in_memory(path: str) -> dict[str, Any]:
    """The kubeconfig at ``path``, with inline certificates and keys moved to
    in-memory files.

    The kubernetes client writes a kubeconfig's ``certificate-authority-data``
    (and client certificate and key) to temporary files, which fails on a
    read-only root filesystem.  Here they become anonymous memory files
    (``memfd_create``), named ``/proc/self/fd/N``; relative file names are
    resolved against the kubeconfig's directory, as the client would.
    """
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict):
        raise ConfigException(f"{path} is not a kubeconfig")
    base = os.path.dirname(os.path.abspath(path))
    for section, (kind, keys) in _FILE_KEYS.items():
        for entry in doc.get(section) or []:
            item = entry.get(kind) if isinstance(entry, dict) else None
            if not isinstance(item, dict):
                continue
            for key in keys:
                data = item.pop(f"{key}-data", None)
                if data:
                    fd = os.memfd_create(key)
                    os.write(fd, base64.standard_b64decode(data))
                    item[key] = f"/proc/self/fd/{fd}"
                elif item.get(key):
                    item[key] = os.path.join(base, os.path.expanduser(item[key]))
    return doc


def load_api_client(kubeconfig: str = "", context: str = "", threads: int = 8) -> client.ApiClient:
    """One ApiClient for the process: from ``kubeconfig`` when given, else
    in-cluster when running in a pod, else ``$KUBECONFIG`` or ``~/.kube/config``.

    :raises StoreConfigError: when none of those works.
    """
    configuration = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config_from_dict(
                _files_in_memory(kubeconfig), context or None, configuration, persist_config=False
            )
        else:
            try:
                config.load_incluster_config(configuration)
            except ConfigException:
                config.load_kube_config(None, context or None, configuration)
    except (ConfigException, OSError, ValueError, TypeError) as e:
        where = kubeconfig or "in-cluster, $KUBECONFIG or ~/.kube/config"
        raise StoreConfigError(f"no usable Kubernetes configuration ({where}): {e}") from None
    # One connection per worker thread, kept open and reused; no silent
    # retries, which would stretch a call past its timeout.
    configuration.connection_pool_maxsize = threads
    configuration.retries = False
    return client.ApiClient(configuration)


# Kubernetes refuses these for the object itself; anything else from the API
# server is taken as an outage, to retry (401 and 403 too: the gateway's own
# identity is wrong, which an operator fixes without the sender's help).
_REJECTED = frozenset({400, 413, 422})


# The Secret the readiness check asks for: never a project ID (those are
# brigade- and 54 hex digits) nor a build; it need not exist.
READINESS_NAME = "brigade-crgw-readiness-check"


# How long the credential header is reused.  Asking the client for it runs
# its refresh hook, which re-resolves the proxy from the environment each
# time: that was a sixth of a webhook's CPU.  A token the hook renews (an
# in-cluster ServiceAccount token is renewed long before it expires) is
# picked up within this time, and at once after a 401.
CREDENTIAL_SECONDS = 10.0


@attr.s(auto_attribs=True)
class _Credentials:
    """The ``Authorization`` header the client would send, remembered briefly."""

    api: client.ApiClient
    seconds: float = CREDENTIAL_SECONDS
    clock: Callable[[], float] = time.monotonic
    _header: dict[str, str] = attr.ib(factory=dict, init=False)
    _expires: float = attr.ib(default=float("-inf"), init=False)
    _lock: threading.Lock = attr.ib(factory=threading.Lock, init=False)

    def header(self) -> dict[str, str]:
        with self._lock:
            now = self.clock()
            if now >= self._expires:
                header: dict[str, str] = {}
                # A bearer token (refreshed when the configuration has a hook),
                # or nothing when the client authenticates with a certificate.
                self.api.update_params_for_auth(header, [], ["BearerToken"], "", "GET", None)
                self._header, self._expires = header, now + self.seconds
            return self._header

    def forget(self) -> None:
        """Ask the client again next time (the API server refused the token)."""
        with self._lock:
            self._expires = float("-inf")


@attr.s(frozen=True, auto_attribs=True)
class KubeStore:
    """The :class:`SecretStore` backed by a real API server.

    :param api: the process's one ApiClient (configuration and connection pool).
    :param namespace: Brigade's namespace.
    :param timeout: seconds allowed for each call, connect and read.
    """

    api: client.ApiClient
    namespace: str
    timeout: float
    _secrets: str = attr.ib(init=False)
    _timeout: urllib3.Timeout = attr.ib(init=False)
    _credentials: _Credentials = attr.ib(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_credentials", _Credentials(self.api))
        path = f"/api/v1/namespaces/{quote(self.namespace, safe='')}/secrets"
        object.__setattr__(self, "_secrets", self.api.configuration.host.rstrip("/") + path)
        object.__setattr__(self, "_timeout", urllib3.Timeout(total=self.timeout))

    def get_project(self, project_id: str, timeout: float | None = None) -> Project | None:
        secret = self.get_secret(project_id, timeout)
        return None if secret is None else Project.from_secret(project_id, secret)

    def get_secret(self, name: str, timeout: float | None = None) -> dict[str, Any] | None:
        url = f"{self._secrets}/{quote(name, safe='')}"
        status, body = self._call("GET", url, timeout=timeout)
        if status == 404:
            return None
        if status != 200:
            raise _unavailable("get", status, body)
        try:
            secret = json.loads(body)
        except ValueError:
            raise StoreUnavailable("the API server answered something that is not JSON") from None
        if not isinstance(secret, dict):
            raise StoreUnavailable("the API server answered something that is not a Secret")
        return secret

    def create_build(self, secret: Mapping[str, Any], timeout: float | None = None) -> bool:
        body = json.dumps(secret).encode("utf-8")
        status, body = self._call("POST", self._secrets, body, timeout)
        if status == 201 or status == 200:
            return True
        if status == 409:
            return False
        if status in _REJECTED:
            raise StoreRejected(_status_message(body) or f"Kubernetes answered {status}")
        raise _unavailable("create", status, body)

    def check_access(self) -> None:
        """Get a Secret that need not exist: the API server answering 404 or
        200 shows that it is up and that the gateway may read Secrets here.

        :raises StoreUnavailable: naming the failure (a 403 says which
            permission is missing).
        """
        status, body = self._call("GET", f"{self._secrets}/{READINESS_NAME}")
        if status not in (200, 404):
            raise _unavailable("get", status, body)

    def _call(
        self, method: str, url: str, body: bytes | None = None, timeout: float | None = None
    ) -> tuple[int, bytes]:
        """One request on the shared pool; the connection always goes back to it."""
        headers = {"Accept": "application/json", "User-Agent": "brigade-crgw"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        headers.update(self._credentials.header())
        try:
            response = self.api.rest_client.pool_manager.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=self._timeout if timeout is None else urllib3.Timeout(total=timeout),
                retries=False,
                preload_content=False,
            )
        except Exception as e:  # urllib3 and socket errors have no common base
            raise StoreUnavailable(_describe(e)) from None
        try:
            status, data = response.status, response.read()
        except Exception as e:
            raise StoreUnavailable(_describe(e)) from None
        finally:
            response.release_conn()
        if status == 401:
            self._credentials.forget()
        return status, data


def _status_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status answer, or empty."""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return str(message)[:500] if message else ""


def _unavailable(verb: str, status: int, body: bytes) -> StoreUnavailable:
    kind = StoreForbidden if status in (401, 403) else StoreUnavailable
    return kind(_describe_status(verb, status, body))


def _describe_status(verb: str, status: int, body: bytes) -> str:
    """One line for the operator; names the verb and resource when the
    gateway's own identity lacks a permission."""
    if status in (401, 403):
        return (
            f"Kubernetes answered {status} to {verb} secrets: the gateway's identity "
            f"lacks a permission ({_status_message(body) or 'no reason given'})"
        )
    return f"Kubernetes answered {status} to {verb} secrets"


def _describe(error: Exception) -> str:
    """A one-line account of a failure, without request bodies (they hold secrets)."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"
