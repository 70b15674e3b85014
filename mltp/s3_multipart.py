"""Streaming bytes into one S3 object as a multipart upload with several parts in flight.

Memory stays bounded: at most `max_in_flight` parts are being sent while one more fills. Either
`complete()` makes the object appear, or `abort()` leaves nothing behind (no object, no open upload), even
when answers were lost and botocore retried the calls that create and complete the upload.
"""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from mltp.aws import error_code

MIN_PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000


def part_size_for(expected_bytes: int | None) -> int:
    """Parts big enough that even the largest expected object fits in S3's 10,000 parts."""
    if not expected_bytes:
        return MIN_PART_SIZE
    return max(MIN_PART_SIZE, -(-expected_bytes // (MAX_PARTS - 100)))


class MultipartUpload:
    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        part_size: int = MIN_PART_SIZE,
        max_in_flight: int = 4,
        extra_args: dict[str, str] | None = None,
        sole_writer: bool = False,
    ) -> None:
        """`sole_writer`: no one else uploads to `key` (a fresh staging key), so any other upload of it is a
        stray our own retried create left, aborted when we finish."""
        self.s3, self.bucket, self.key, self.sole_writer = s3, bucket, key, sole_writer
        self.part_size, self.max_in_flight = part_size, max_in_flight
        # CRC32 per part, as boto3's own transfers do: S3 verifies each part and the whole object.
        self.upload_id = s3.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32", **(extra_args or {})
        )["UploadId"]
        self._buffer = bytearray()
        self._pending: deque[tuple[int, Future]] = deque()
        self._parts: list[dict[str, Any]] = []
        self._next_part = 1
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="s3-part")

    def write(self, data: bytes) -> None:
        if not self._buffer and len(data) == self.part_size:  # a whole part: sent as is, not copied
            self._submit(data)
            return
        self._buffer += data
        while len(self._buffer) >= self.part_size:
            self._submit(bytes(self._buffer[: self.part_size]))
            del self._buffer[: self.part_size]

    def _submit(self, body: bytes) -> None:
        while len(self._pending) >= self.max_in_flight:
            self._collect_oldest()
        number = self._next_part
        self._next_part += 1
        future = self._pool.submit(
            self.s3.upload_part,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="CRC32",
        )
        self._pending.append((number, future))

    def _collect_oldest(self) -> None:
        number, future = self._pending.popleft()
        sent = future.result()
        self._parts.append(
            {"PartNumber": number, "ETag": sent["ETag"], "ChecksumCRC32": sent["ChecksumCRC32"]}
        )

    def send_rest(self) -> None:
        """Send what is buffered as the last part: no more `write`s follow."""
        if self._buffer or (not self._parts and not self._pending):  # S3 needs at least one part
            self._submit(bytes(self._buffer))
            self._buffer.clear()

    def complete(self) -> None:
        self.send_rest()
        while self._pending:
            self._collect_oldest()
        try:
            self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except ClientError as error:
            # A completion whose answer was lost and was retried finds its upload gone: it succeeded
            # when the object is there with the ETag S3 gives exactly these parts.
            if error_code(error) != "NoSuchUpload" or self._stored_etag() != self._expected_etag():
                raise
        self._pool.shutdown(wait=True)
        self._abort_strays()

    def abort(self) -> None:
        """Stop sending, wait for parts already on the wire, then drop the upload and its parts."""
        for _, future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._pending.clear()
        self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        self._abort_strays()

    def _abort_strays(self) -> None:
        """Abort every other upload of our key: a CreateMultipartUpload whose answer was lost and was
        retried left one we never knew the id of. Only for a sole writer: a concurrent writer's upload of
        the same key must not be touched (the bucket's lifecycle rule removes a stray there)."""
        if not self.sole_writer:
            return
        listed = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.key)
        for upload in listed.get("Uploads", []):
            if upload["Key"] == self.key and upload["UploadId"] != self.upload_id:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload["UploadId"])

    def _expected_etag(self) -> str:
        digests = b"".join(bytes.fromhex(part["ETag"].strip('"')) for part in self._parts)
        return f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(self._parts)}"'

    def _stored_etag(self) -> str | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=self.key)["ETag"]
        except ClientError as error:
            if error_code(error) in ("404", "NoSuchKey"):
                return None
            raise
