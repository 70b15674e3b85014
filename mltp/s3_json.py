"""Small JSON documents in S3 with conditional writes: the building block of our pointers and manifests.

`If-None-Match: *` creates only if absent; `If-Match: <etag>` replaces only what we read (compare-and-
swap). A lost race is a `PreconditionFailed` (412) or `ConditionalRequestConflict` (409).

Every JSON the platform hands out (these documents, the CLI's `--json`, event payloads) is strict: JSON
has no NaN or Infinity (strict parsers refuse them), so a metric that could not be measured (roc_auc on
a split with one class) or an infinite maximum is null there. Readers take null as they take NaN: not
measured.
"""

from __future__ import annotations

import json
import math
from typing import Any

from botocore.exceptions import ClientError

from mltp.aws import error_code

SSE = {"ServerSideEncryption": "AES256"}
_LOST_RACE = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


def lost_race(error: ClientError) -> bool:
    return error_code(error) in _LOST_RACE


def finite(value: Any) -> Any:
    """`value` with every NaN and infinite float, at any depth of dicts, lists and tuples, made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def strict_dumps(value: Any, **options: Any) -> str:
    """JSON with null for every non-finite float; one left where `finite` does not reach is an error,
    never a document that strict parsers refuse."""
    return json.dumps(finite(value), allow_nan=False, **options)


def read_json(s3, bucket: str, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """The document and its ETag, or (None, None) when there is no such key."""
    try:
        found = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) == "NoSuchKey":
            return None, None
        raise
    return json.loads(found["Body"].read()), found["ETag"]


def put_json(
    s3, bucket: str, key: str, document: dict[str, Any], *, etag: str | None = None, create: bool = False
):
    """Write encrypted JSON; `create` only if absent, `etag` only if unchanged. Raises `ClientError`.

    A conditional write whose answer was lost (a 5xx or a dropped connection after S3 stored it) is
    retried by botocore, and the retry fails its condition against our own first attempt: when the stored
    bytes are exactly ours, the write succeeded. Our documents carry timestamps and owners, so another
    writer's bytes never equal ours."""
    body = strict_dumps(document, indent=2).encode()
    condition = {"IfNoneMatch": "*"} if create else {"IfMatch": etag} if etag else {}
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition, **SSE)
    except ClientError as error:
        if not (condition and lost_race(error) and _stored_bytes(s3, bucket, key) == body):
            raise


def _stored_bytes(s3, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error_code(error) == "NoSuchKey":
            return None
        raise
