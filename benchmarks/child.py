"""One measured operation, run in a fresh process: `python -m benchmarks.child ours|boto3 ENDPOINT BUCKET
FILE KEY`. Prints JSON with the wall time of the operation alone (imports and client set-up excluded);
the parent reads this process's peak RSS from `os.wait4`."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import boto3

from mltp.aws import botocore_config


def s3_client(endpoint: str) -> Any:
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
    return session.client("s3", endpoint_url=endpoint, config=botocore_config())


def ours(endpoint: str, bucket: str, path: str, name: str) -> dict[str, Any]:
    from mltp import datasets

    s3 = s3_client(endpoint)  # built before the clock starts, as for the baseline
    started = time.perf_counter()
    result = datasets.ingest(lambda service: s3, bucket, path, name=name, target="label")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "created": result.created, "rows": result.manifest["rows"]}


def boto3_upload_file(endpoint: str, bucket: str, path: str, key: str) -> dict[str, Any]:
    s3 = s3_client(endpoint)
    started = time.perf_counter()
    s3.upload_file(path, bucket, key)
    return {"seconds": time.perf_counter() - started}


if __name__ == "__main__":
    operation, *arguments = sys.argv[1:]
    run = {"ours": ours, "boto3": boto3_upload_file}[operation]
    print(json.dumps(run(*arguments)))
