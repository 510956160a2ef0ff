"""Who talks to the cluster: kubeconfigs, and the gateway's least-privilege identity.

The gateway's rights are exactly ``etc/kubernetes/rbac.yaml`` (:data:`RBAC_FILE`):
a ServiceAccount, a Role and its RoleBinding, applied to whichever namespace
the gateway serves.  Its credentials are a TokenRequest token of that account.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devtools import ROOT

from .errors import PlaneError

# The one place that names the RBAC the gateway gets.
RBAC_FILE = ROOT / "etc" / "kubernetes" / "rbac.yaml"
GATEWAY_ACCOUNT = "brigade-crgw"
# A token for a development plane; long enough for a working day.
TOKEN_SECONDS = 7 * 24 * 3600


def b64(path: Path) -> str:
    """A file's bytes in base64, as kubeconfigs embed certificates and keys."""
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path, server: str, ca_data: str | None, user: dict[str, str], namespace: str
) -> None:
    """Write a one-context kubeconfig (JSON, which every YAML reader reads).

    :param ca_data: the cluster's CA (base64 PEM); None trusts the system's.
    """
    cluster = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "plane", "cluster": cluster}],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {
                "name": "plane",
                "context": {"cluster": "plane", "user": "user", "namespace": namespace},
            }
        ],
        "current-context": "plane",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


def apply_rbac(api: Any, namespace: str) -> None:
    """Create (or keep) :data:`RBAC_FILE`'s objects in ``namespace``."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    creators: dict[str, Callable[[str, Any], Any]] = {
        "ServiceAccount": core.create_namespaced_service_account,
        "Role": rbac.create_namespaced_role,
        "RoleBinding": rbac.create_namespaced_role_binding,
    }
    for doc in yaml.safe_load_all(RBAC_FILE.read_text()):
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
        try:
            creators[doc["kind"]](namespace, doc)
        except ApiException as e:
            if e.status != 409:
                raise


def gateway_token(api: Any, namespace: str, seconds: int = TOKEN_SECONDS) -> str:
    """A token for the gateway's ServiceAccount, from the TokenRequest API."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    answer = client.CoreV1Api(api).create_namespaced_service_account_token(
        GATEWAY_ACCOUNT, namespace, request
    )
    if answer.status is None:
        raise PlaneError(f"the TokenRequest for {GATEWAY_ACCOUNT} came back without a token")
    return str(answer.status.token)


def gateway_identity(api: Any, namespace: str, path: Path, seconds: int = TOKEN_SECONDS) -> None:
    """Give the gateway its identity in ``namespace`` of the cluster ``api``
    talks to: apply the RBAC, and write a kubeconfig holding a token of its
    ServiceAccount at ``path``."""
    apply_rbac(api, namespace)
    token = gateway_token(api, namespace, seconds)
    configuration = api.configuration
    ca = b64(Path(configuration.ssl_ca_cert)) if configuration.ssl_ca_cert else None
    write_kubeconfig(path, configuration.host, ca, {"token": token}, namespace)
