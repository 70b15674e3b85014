"""S3 ObjectCreated notifications -> Prefect events `mltp.incoming.created` (stdlib only).

Env: PREFECT_API_URL; PREFECT_API_KEY (Bearer) or PREFECT_API_AUTH_STRING (Basic, self-hosted);
MLTP_INCOMING_PREFIX (default incoming/). A failed POST raises, so Lambda's async retries apply.
"""

import base64
import json
import logging
import os
import urllib.parse
import urllib.request
import uuid

EVENT = "mltp.incoming.created"
DEFAULT_PREFIX = "incoming/"
log = logging.getLogger("mltp.s3_forwarder")
log.setLevel(logging.INFO)  # Lambda's handler sits on the root logger, whose level is WARNING


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirected POST would be resent as a GET: fail instead


def _records(event):
    for record in event.get("Records", []):
        if "Sns" in record:  # S3 -> SNS -> Lambda wraps the S3 event in the message
            yield from json.loads(record["Sns"]["Message"]).get("Records", [])
        else:
            yield record


def to_events(event, prefix):
    events = []
    for record in _records(event):
        if not record.get("eventName", "").startswith("ObjectCreated:"):
            continue
        bucket = record["s3"]["bucket"]["name"]
        found = record["s3"]["object"]
        key = urllib.parse.unquote_plus(found["key"])  # S3 sends keys URL-encoded, spaces as '+'
        if not key.startswith(prefix) or key.endswith("/"):
            continue
        events.append(
            {
                "id": _event_id(bucket, key, found.get("sequencer", "")),
                "occurred": record["eventTime"],
                "event": EVENT,
                "resource": {
                    "prefect.resource.id": f"mltp.incoming.{bucket}/{key}",
                    "prefect.resource.name": key,
                },
                "payload": {
                    "bucket": bucket,
                    "key": key,
                    "size": int(found.get("size", 0)),
                    "etag": found.get("eTag", ""),
                    "event_time": record["eventTime"],
                },
                "related": [],
            }
        )
    return events


def _event_id(bucket, key, sequencer):
    """The same notification retried keeps its id, so Prefect takes it as one event, not two."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"s3://{bucket}/{key}#{sequencer}"))


def _headers():
    headers = {"Content-Type": "application/json"}
    if os.environ.get("PREFECT_API_KEY"):
        headers["Authorization"] = "Bearer " + os.environ["PREFECT_API_KEY"]
    elif os.environ.get("PREFECT_API_AUTH_STRING"):
        token = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
        headers["Authorization"] = "Basic " + token
    return headers


def handler(event, context):
    events = to_events(event, os.environ.get("MLTP_INCOMING_PREFIX") or DEFAULT_PREFIX)
    if not events:
        return {"forwarded": 0}
    url = os.environ["PREFECT_API_URL"].rstrip("/") + "/events"
    request = urllib.request.Request(url, json.dumps(events).encode(), _headers(), method="POST")
    # urlopen raises HTTPError on 4xx/5xx (and on any 3xx here) and URLError when unreachable
    with urllib.request.build_opener(_NoRedirect).open(request, timeout=20) as response:
        status = response.status
    for item in events:
        log.info(
            "forwarded %s (%d bytes): HTTP %s",
            item["resource"]["prefect.resource.id"],
            item["payload"]["size"],
            status,
        )
    return {"forwarded": len(events)}
