"""``brigade-crgw filter test PROJECT --payload FILE``: a project's
``crGatewayFilter`` tried on a sample payload, before a registry sends one.

The payload is decoded as the gateway decodes it, and each image it names
is judged as the gateway judges it (:mod:`brigade_crgw.delivery.filters`),
with the same ``image`` and ``request`` variables.  No lookup is made:
what one would find (``--platform``, ``--label``, ``--digest``) is given on
the command line.  The expression is the project's (read with your own
identity, as ``kubectl`` finds it), or ``--expression`` to try one before
setting it.  Exit 0 when the filter lets at least one image through, 1 when
it lets none, 2 when the expression cannot be used.
"""

from __future__ import annotations

import argparse
import sys

from ._kube import add_kubernetes_options, connect
from ._verb import Failed, Verb


def _configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    test = actions.add_parser(
        "test",
        help="judge a sample payload's images with the project's crGatewayFilter",
        description="Decode a payload as the gateway would and judge each image it names "
        "with the project's crGatewayFilter (or --expression); no lookup is made.",
    )
    test.add_argument("project", metavar="PROJECT", help="its name (acme/app) or its ID")
    test.add_argument(
        "--payload", required=True, metavar="FILE", help="the webhook's body ('-': stdin)"
    )
    test.add_argument("--expression", metavar="CEL", help="try this expression, not the project's")
    test.add_argument("--registry", metavar="NAME", help="as ?registry= in the URL")
    test.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeat); Content-Type is application/json unless given",
    )
    test.add_argument(
        "--query", action="append", default=[], metavar="NAME=VALUE", help="a query parameter"
    )
    test.add_argument("--commit", default="", help="the URL's commit-ish")
    test.add_argument(
        "--platform", action="append", default=[], help="a platform a lookup would find"
    )
    test.add_argument(
        "--label", action="append", default=[], metavar="NAME=VALUE", help="a label (short name)"
    )
    test.add_argument("--digest", default="", help="the digest a lookup would find")
    add_kubernetes_options(test)
    test.set_defaults(run=_test)


def _pairs(values: list[str], separator: str, what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, found, rest = value.partition(separator)
        if not found or not name.strip():
            raise Failed(f"{what} {value!r} is not NAME{separator}VALUE", 2)
        pairs[name.strip()] = rest.strip() if separator == ":" else rest
    return pairs


def _expression(args: argparse.Namespace) -> str:
    """The expression to try: --expression, else the project's."""
    if args.expression is not None:
        return str(args.expression)
    from ..brigade import FILTER_KEY
    from .token import read_project, secret_text

    text = secret_text(read_project(connect(args), args.project).secret, FILTER_KEY)
    if not text:
        raise Failed(f"project {args.project} has no {FILTER_KEY}: every image is built", 0)
    return text


def _test(args: argparse.Namespace) -> int:
    from .. import registries
    from ..brigade import FILTER_KEY
    from ..delivery import enrich, filters
    from ..events import ImageFacts

    try:
        if args.payload == "-":
            body = sys.stdin.buffer.read()
        else:
            with open(args.payload, "rb") as f:
                body = f.read()
    except OSError as e:
        raise Failed(f"cannot read {args.payload}: {e.strerror or e}", 2) from None
    headers = {"content-type": "application/json"}
    headers.update({k.lower(): v for k, v in _pairs(args.header, ":", "header").items()})
    query = _pairs(args.query, "=", "query parameter")
    labels = _pairs(args.label, "=", "label")
    text = _expression(args)
    try:
        rule = filters.compile_filter(text)
    except filters.InvalidFilter as e:
        raise Failed(str(e), 2) from None
    try:
        delivery = registries.decode(body, headers, args.registry)
    except registries.PayloadError as e:
        raise Failed(f"the gateway would refuse this payload (400): {e}", 2) from None
    if not delivery.events:
        raise Failed(f"{delivery.registry} sent no image in this payload", 1)
    found = bool(args.platform or labels or args.digest)
    facts = ImageFacts(args.digest, "", tuple(args.platform), labels) if found else None
    request = filters.request_variable(args.commit, headers, query)
    print(f"{FILTER_KEY}: {text}")
    print(f"judged {'early, needing no lookup' if not rule.needs_lookup else 'after lookups'}")
    if rule.needs_lookup and not found:
        print(
            "  (it reads what a lookup finds, which the gateway has only with [registry] "
            "hosts; here none: give --platform, --label, --digest)"
        )
    passed = 0
    for event in delivery.events:
        image = enrich.normalised(event, facts, "found" if found else "off")
        verdict = rule.judge(image, request)
        name = filters.image_name(event)
        if verdict.passed:
            passed += 1
            print(f"true    {name} ({event.action})")
        elif verdict.error:
            print(f"error   {name} ({event.action}), which counts as false: {verdict.error}")
        else:
            print(f"false   {name} ({event.action})")
    return 0 if passed else 1


VERB = Verb("filter", "try a project's crGatewayFilter on a sample payload", _configure)
