"""``brigade-crgw token add|list|revoke PROJECT``: a project's gateway tokens.

Tokens live in the project's Secret, under ``crGatewayToken`` (or ``--key``,
one of ``[auth] token_keys``), separated by spaces: the gateway accepts each
of them, so a new token can be added, given to the registry, and the old one
revoked, with no webhook refused in between.  Every change is a read and a
replace that names the Secret's resourceVersion, so two operators at once
cannot lose each other's change.  A token is shown once, when it is made;
after that only its fingerprint.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import attr

from ..brigade import TOKEN_KEY
from ._kube import TIMEOUT, Cluster, add_kubernetes_options, api_failure, connect
from ._verb import Failed, Verb

# 32 random bytes, URL-safe: it goes in a URL, a header or an HMAC key alike.
TOKEN_BYTES = 32
# Replaces tried when another writer changed the Secret in between.
_ATTEMPTS = 5


def fingerprint(token: str) -> str:
    """A short name for a token that does not reveal it: 12 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


def webhook_url(base: str, project: str) -> str:
    """The project's webhook URL under the gateway's ``base`` URL."""
    return f"{base.rstrip('/')}/events/webhook/{quote(project, safe='/')}"


def _configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser(
        "add",
        help="make a new token and add it beside the project's others",
        description="Make a strong token, add it beside the project's other tokens, "
        "and print it with the webhook URL.  The token is shown only this once.",
    )
    _project_arguments(add)
    add.add_argument(
        "--base",
        metavar="URL",
        help="the gateway's URL: the project's webhook URL is printed under it",
    )
    add.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: project, project_id, token, url",
    )
    add.set_defaults(run=_add)

    listing = actions.add_parser(
        "list",
        help="each token's fingerprint (never the token)",
        description="Print a short fingerprint of each of the project's tokens, never the token.",
    )
    _project_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(run=_list)

    revoke = actions.add_parser(
        "revoke",
        help="remove one token, named by itself or by its fingerprint",
        description="Remove one token from the project.  The gateway refuses it once its "
        "project cache expires ([kubernetes] project_cache_seconds, 5 s by default).",
    )
    _project_arguments(revoke)
    revoke.add_argument("token", metavar="TOKEN-OR-FINGERPRINT")
    revoke.set_defaults(run=_revoke)


def _project_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", metavar="PROJECT", help="its name (acme/app) or its ID")
    parser.add_argument(
        "--key",
        default=TOKEN_KEY,
        help=f"the project Secret's key that holds the tokens (default {TOKEN_KEY})",
    )
    add_kubernetes_options(parser)


def _add(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    project = _change(args, lambda tokens: [*tokens, token])
    url = webhook_url(args.base, project.name) if args.base else ""
    if args.json:
        doc = {"project": project.name, "project_id": project.id, "token": token}
        print(json.dumps({**doc, "url": url} if url else doc))
    else:
        print(f"Added a token to {project.name} ({project.id}), which now has {project.count}:")
        print(f"  token {token}")
        print(f"  fingerprint {fingerprint(token)}")
        if url:
            print(f"  webhook URL {url}")
            print(f"  with the token in it {url}?token={token}")
        print("Where the token goes for each registry: brigade-crgw url --help")
    return 0


def _list(args: argparse.Namespace) -> int:
    cluster = connect(args)
    project = read_project(cluster, args.project)
    tokens = _tokens(project.secret, args.key)
    if args.json:
        listed = [{"fingerprint": fingerprint(t)} for t in tokens]
        print(json.dumps({"project": project.name, "project_id": project.id, "tokens": listed}))
        return 0
    print(f"{project.name} ({project.id}): {len(tokens)} token(s) in {args.key}")
    for t in tokens:
        print(f"  {fingerprint(t)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    gone: list[str] = []

    def without(tokens: list[str]) -> list[str]:
        named = [t for t in tokens if t == args.token] or [
            t for t in tokens if fingerprint(t) == args.token.lower()
        ]
        if not named:
            raise Failed(f"no token or fingerprint {_shown(args.token)} in {args.key}")
        if len(set(named)) > 1:
            raise Failed(f"{args.token} is the fingerprint of several tokens; give the token")
        gone[:] = named[:1]
        return [t for t in tokens if t != named[0]]

    project = _change(args, without)
    print(
        f"Revoked {fingerprint(gone[0])} from {project.name} ({project.id}); "
        f"{project.count} token(s) left."
    )
    if not project.count:
        print(
            "The project has no token now: under [auth] require = always "
            "the gateway refuses every webhook for it."
        )
    return 0


def _shown(text: str) -> str:
    # Whatever was typed may be a token: shown only when it has a
    # fingerprint's shape, else by its own fingerprint.
    if re.fullmatch(r"[0-9a-f]{12}", text.lower()):
        return text
    return f"(fingerprint {fingerprint(text)})"


@attr.s(auto_attribs=True)
class _Project:
    """A project's Secret as read, its ID and name, and its token count
    once changed."""

    secret: Any
    id: str
    name: str
    count: int = 0


def read_project(cluster: Cluster, project: str) -> _Project:
    from kubernetes import client

    from ..brigade import PROJECT_TYPE, project_id

    name = project_id(project)
    try:
        secret = client.CoreV1Api(cluster.api).read_namespaced_secret(
            name, cluster.namespace, _request_timeout=TIMEOUT
        )
    except Exception as e:
        if getattr(e, "status", None) == 404:
            raise Failed(
                f"no project {project} in namespace {cluster.namespace} (no Secret {name}); "
                "create it with brig project create, or give --namespace"
            ) from None
        raise api_failure(e, "get", f"Secret {name}", cluster) from None
    if secret.type != PROJECT_TYPE:
        raise Failed(f"Secret {name} is not a Brigade project (its type is {secret.type})")
    annotations = (secret.metadata and secret.metadata.annotations) or {}
    return _Project(secret, name, annotations.get("projectName") or project)


def secret_text(secret: Any, key: str) -> str:
    """One key of a Secret, decoded ("" when it has none)."""
    raw = (secret.data or {}).get(key) or ""
    return base64.b64decode(raw).decode("utf-8", "replace")


def _tokens(secret: Any, key: str) -> list[str]:
    return secret_text(secret, key).split()


def _change(args: argparse.Namespace, change: Callable[[list[str]], list[str]]) -> _Project:
    """Read the project, change its token list, and replace the Secret,
    again from the start when someone else changed it in between."""
    from kubernetes import client

    cluster = connect(args)
    core = client.CoreV1Api(cluster.api)
    for _ in range(_ATTEMPTS):
        project = read_project(cluster, args.project)
        tokens = change(_tokens(project.secret, args.key))
        secret = project.secret
        secret.data = dict(secret.data or {})
        secret.data[args.key] = base64.b64encode(" ".join(tokens).encode()).decode()
        try:
            core.replace_namespaced_secret(
                project.id, cluster.namespace, secret, _request_timeout=TIMEOUT
            )
        except Exception as e:
            if getattr(e, "status", None) == 409:
                continue  # changed since it was read: read it again
            raise api_failure(e, "update", f"Secret {project.id}", cluster) from None
        project.count = len(tokens)
        return project
    raise Failed(f"the Secret {project.id} kept changing while it was being updated; try again")


VERB = Verb("token", "add, list or revoke a project's gateway tokens", _configure)
