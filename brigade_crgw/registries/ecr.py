"""Amazon ECR events, delivered by EventBridge (an API destination).

``detail-type`` ``ECR Image Action`` with ``detail.action-type`` ``PUSH`` and
``detail.result`` ``SUCCESS`` is the image push; a failed result and the
other detail types (scans, replication...) keep their own words.
"""

from __future__ import annotations

from brigade_crgw.events import IMAGE_DELETE, IMAGE_PUSH, ImageEvent
from brigade_crgw.registries._common import Delivery, Headers, Obj, PayloadError, timestamp, word
from brigade_crgw.registries._registry import Registry
from brigade_crgw.registries._setup import Setup

NAME = "ecr"

_IMAGE_ACTIONS = {"PUSH": IMAGE_PUSH, "DELETE": IMAGE_DELETE}


def looks_like(doc: object) -> bool:
    """An EventBridge event from ``aws.ecr``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("detail"), dict):
        return False
    detail_type = doc.get("detail-type")
    return doc.get("source") == "aws.ecr" or (
        isinstance(detail_type, str) and detail_type.startswith("ECR ")
    )


def decode(doc: object, body: bytes, headers: Headers) -> Delivery:
    """Decode one EventBridge event.

    :raises PayloadError: for a body without ``detail-type`` or with fields
        of the wrong type.
    """
    root = Obj.root(doc)
    detail_type = root.text("detail-type")
    if not detail_type:
        raise PayloadError("detail-type: missing; not an EventBridge event")
    detail = root.obj("detail")
    account = root.text("account")
    region = root.text("region")
    event = ImageEvent(
        registry=NAME,
        action=_action(detail_type, detail),
        repository=detail.text("repository-name"),
        host=f"{account}.dkr.ecr.{region}.amazonaws.com" if account and region else "",
        tag=detail.text("image-tag"),
        digest=detail.text("image-digest"),
        timestamp=timestamp(root.raw("time")),
        delivery_id=root.text("id"),
        payload=body,
    )
    return Delivery(NAME, (event,))


def _action(detail_type: str, detail: Obj) -> str:
    if detail_type != "ECR Image Action":
        return word(detail_type.removeprefix("ECR "))
    action = detail.text("action-type")
    result = detail.text("result")
    if result in ("", "SUCCESS"):
        return _IMAGE_ACTIONS.get(action) or word(action)
    return word(f"{action}_{result}")  # e.g. push_failure: no image to build


SETUP = Setup(
    title="Amazon ECR",
    where="an EventBridge rule on ECR's image actions, whose target is an API destination",
    url="<url>",
    placement="in the API destination's connection: API key, header Authorization, "
    "value Bearer <token>",
    events="source aws.ecr, detail-type ECR Image Action, action-type PUSH, result SUCCESS",
    content_type="application/json, which EventBridge sends",
    auth="bearer",
    command="aws events create-connection --name brigade --authorization-type API_KEY \\\n"
    '  --auth-parameters \'{"ApiKeyAuthParameters": {"ApiKeyName": "Authorization",\n'
    '                       "ApiKeyValue": "Bearer <token>"}}\'\n'
    "aws events create-api-destination --name brigade \\\n"
    "  --connection-arn <connection ARN> \\\n"
    "  --invocation-endpoint '<url>' --http-method POST\n"
    "aws events put-rule --name brigade-ecr-push --event-pattern '{\n"
    '    "source": ["aws.ecr"], "detail-type": ["ECR Image Action"],\n'
    '    "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"]}}\'\n'
    "aws events put-targets --rule brigade-ecr-push \\\n"
    "  --targets 'Id=brigade,Arn=<API destination ARN>,RoleArn=<role ARN>'",
    language="shell",
    notes=("The role must allow events:InvokeApiDestination on the API destination.",),
    sample="ecr.json",
    headers={
        "Content-Type": "application/json",
        "User-Agent": "Amazon/EventBridge/ApiDestinations",
    },
)


REGISTRY = Registry(name=NAME, setup=SETUP, decode=decode, looks_like=looks_like)
