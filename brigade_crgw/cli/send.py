"""``brigade-crgw send REGISTRY URL [--token T]``: a registry's sample push,
posted to a gateway as that registry would post it.

The sample and its headers ship in the package (each registry's
:class:`~brigade_crgw.registries._setup.Setup`), and the token goes where
that registry puts it: in the URL, a header, or a signature of the body.
Exit 0 on a 2xx answer.  A sample sent twice is a redelivery for the
registries whose pushes carry an identity: the second answer names the same
build, and no second build is made.
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import sys
from urllib.parse import quote, urlsplit, urlunsplit

from ._verb import Failed, Verb

TIMEOUT = 30.0


def _configure(parser: argparse.ArgumentParser) -> None:
    from ..registries import NAMES

    parser.add_argument("registry", metavar="REGISTRY", choices=NAMES, help=", ".join(NAMES))
    parser.add_argument(
        "url",
        metavar="URL",
        help="the project's webhook URL (http://127.0.0.1:7744/events/webhook/acme/app)",
    )
    parser.add_argument("--token", metavar="T", help="the project's token")
    parser.add_argument(
        "--body", metavar="FILE", help="send this file instead of the registry's sample"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify the gateway's TLS certificate"
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from ..delivery.auth import present
    from ..registries import REGISTRIES

    setup = next(r for r in REGISTRIES if r.name == args.registry).setup
    if args.body:
        try:
            with open(args.body, "rb") as f:
                body = f.read()
        except OSError as e:
            raise Failed(f"cannot read {args.body}: {e.strerror or e}") from None
    else:
        body = setup.sample_body()
    headers = dict(setup.headers)
    query_token = None
    if args.token:
        more, query_token = present(setup.auth, args.token, body)
        headers.update(more)
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Failed(f"{args.url!r} is not an http:// or https:// URL")
    query = parts.query
    if query_token is not None:
        query = f"{query}&" if query else ""
        query += f"token={quote(query_token, safe='')}"
    target = urlunsplit(("", "", parts.path or "/", query, ""))
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if args.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=TIMEOUT, context=context
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    try:
        connection.request("POST", target, body=body, headers=headers)
        answer = connection.getresponse()
        text = answer.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as e:
        raise Failed(f"no answer from {parts.netloc}: {e}") from None
    finally:
        connection.close()
    print(f"{answer.status} {answer.reason}")
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return 0 if 200 <= answer.status < 300 else 1


VERB = Verb(
    "send", "post a registry's sample push to a gateway, as that registry would", _configure
)
