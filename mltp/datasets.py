"""Datasets in the data bucket: ingest (one streaming pass), list, manifests, and reading them back.

Layout (a contract other parts rely on):

    datasets/<name>/<version>/<file>            the bytes exactly as ingested
    datasets/<name>/<version>/manifest.json     what they are: sha256, rows, columns and their profile
    datasets/<name>/latest.json                 newest version + every version, updated with CAS
    staging/<uuid>/<file>                       in-flight uploads, removed on success and on failure

The version is the first 16 hex digits of the content's SHA-256, so the same bytes always get the
same version and ingesting them again changes nothing.

One streaming read, on a thread of its own, hashes the bytes and uploads them (multipart, parts in
flight), and hands them through a short queue to the CSV parser, which parses on another thread while the
profiler works on the batch before: each runs at its own pace, within bounded memory. A local file is
additionally hashed up front, at disk speed: that finds identical bytes before anything is sent, and lets
the upload go straight to the versioned key (the main read re-hashes and refuses a file that changed in
between). An S3 source is read only once: it is staged under `staging/` and
copied server-side once its hash is known.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from mltp.aws import DENIED_CODES, NOT_FOUND_CODES, ClientFactory, error_code
from mltp.dataset_catalog import (
    DEFAULT_MAX_MB,
    NOT_A_TARGET,
    FileFormat,
    check_data_file,
    column_list,
    derive_name,
    detect_format,
    get_manifest,
    manifest_or_none,
    megabytes,
    split_s3_uri,
    task_hint,
    validate_name,
)
from mltp.dataset_formats import (
    CSV_BLOCK_BYTES,
    LONG_ROW_BLOCK_BYTES,
    ReadAhead,
    RowTooLongError,
    csv_batches,
    csv_read_options,
    open_csv_stream,
    parquet_batches,
    parsed_ahead,
)
from mltp.errors import DatasetError, MltpError
from mltp.profiling import Profiler, arrow_type
from mltp.s3_json import SSE, lost_race, put_json, read_json
from mltp.s3_multipart import MultipartUpload, part_size_for

MANIFEST_SCHEMA_VERSION = 1
# Parts read but not yet parsed: how far the upload may run ahead of the parser (memory: parts x size).
# The parser sets the pace; what it still has to read when the file has been read is parsed while the
# other core idles, so one part (8 MB for files up to 80 GB) is enough.
READ_AHEAD_PARTS = 1
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Source:
    uri: str
    filename: str
    size: int | None
    open: Callable[[], BinaryIO]
    local_path: Path | None = None


@dataclass(frozen=True)
class IngestResult:
    manifest: dict[str, Any]
    created: bool  # False: these bytes were already ingested and nothing changed


def check_file_name(filename: str, source: str) -> str:
    """The file name becomes part of an S3 key and of the manifest: printable, and not too long."""
    unprintable = sorted({character for character in filename if not character.isprintable()})
    if unprintable:
        raise DatasetError(
            f"the file name {filename!r} contains control characters ({', '.join(map(repr, unprintable))}): "
            "rename the file",
            source=source,
        )
    if len(filename.encode()) > 255:
        raise DatasetError(
            f"the file name {filename[:40]!r}... is {len(filename.encode())} bytes long: rename the file to "
            "at most 255 bytes",
            source=source,
        )
    return filename


def resolve_source(clients: ClientFactory, source: str) -> Source:
    """A local path or an s3:// URI, checked to exist and to be a regular file."""
    if source.startswith("s3://"):
        bucket, key = split_s3_uri(source)
        check_file_name(Path(key).name, source)
        s3 = clients("s3")
        try:
            size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES | DENIED_CODES:
                raise DatasetError(
                    f"{source} does not exist or is not readable with our credentials"
                ) from error
            raise
        return Source(source, Path(key).name, size, lambda: s3.get_object(Bucket=bucket, Key=key)["Body"])
    path = check_data_file(Path(source).expanduser(), source)
    check_file_name(path.name, source)
    return Source(str(path.resolve()), path.name, path.stat().st_size, lambda: path.open("rb"), path)


def _profile(
    raw: ReadAhead,
    source: Source,
    file_format: FileFormat,
    target: str | None,
    report: Callable[[], None],
    block_bytes: int,
) -> tuple[Profiler, dict]:
    """Parse and profile while `raw` feeds the hash and the upload. Returns the profile and the format.

    `report` is called between batches, on this thread: the parser reads `raw` from threads of its own,
    where a progress callback that talks to an API would find none of this thread's context.
    """
    try:
        return _parse_and_profile(raw, source, file_format, target, report, block_bytes)
    except Exception:
        raw.raise_error()  # a failed read or upload is the cause; the parser only saw its stream end
        raise


def _parse_and_profile(raw, source, file_format, target, report, block_bytes) -> tuple[Profiler, dict]:
    label = source.filename
    if file_format.kind == "csv":
        dialect, stream = open_csv_stream(raw, file_format, label, block_bytes)
        _check_target(target, dialect.names, label)
        profiler = Profiler(dialect.names)
        for batch in parsed_ahead(csv_batches(stream, dialect, label)):
            profiler.update(batch)
            report()
        raw.finish()
        read_with = {"block_bytes": block_bytes} if block_bytes != CSV_BLOCK_BYTES else {}
        return profiler, {
            "kind": "csv",
            "compression": file_format.compression,
            "delimiter": dialect.delimiter,
            **read_with,
        }
    # Parquet indexes its data from a footer at the end, so it cannot be parsed front to back: the bytes
    # still stream once to the hash and the upload, and the parser reads the local file (or a spooled
    # copy of an S3 object) with random access.
    if source.local_path is not None:
        raw.finish()
        names, batches = parquet_batches(str(source.local_path), label)
        return _profile_parquet(names, batches, target, label)
    import tempfile

    with tempfile.TemporaryFile() as spool:
        while chunk := raw.read(8 * 1024 * 1024):
            spool.write(chunk)
        raw.finish()
        spool.seek(0)
        names, batches = parquet_batches(spool, label)
        return _profile_parquet(names, batches, target, label)


def _profile_parquet(names, batches, target, label) -> tuple[Profiler, dict]:
    _check_target(target, names, label)
    profiler = Profiler(names)
    for batch in batches:
        profiler.update(batch)
    return profiler, {"kind": "parquet", "compression": None, "delimiter": None}


def _check_target_values(profile: dict[str, Any], label: str) -> None:
    """A target must hold values a model can predict: some, and of a kind we train on."""
    name = profile["name"]
    if profile["type"] == "empty":
        raise DatasetError(
            f"target {name!r} is empty in every row of {label}: choose another column", source=label
        )
    if profile["type"] in NOT_A_TARGET:
        raise DatasetError(
            f"target {name!r} of {label} is a {profile['type']} column: choose a column of numbers, text, "
            "booleans or dates",
            source=label,
        )


def _check_target(target: str | None, names: list[str], label: str) -> None:
    if target is not None and target not in names:
        raise DatasetError(
            f"target {target!r} is not a column of {label} (columns: {column_list(names)})", source=label
        )


def ingest(
    clients: ClientFactory,
    bucket: str,
    source: str,
    *,
    name: str | None = None,
    target: str | None = None,
    max_bytes: int = DEFAULT_MAX_MB * 1024 * 1024,
    on_progress: ProgressCallback | None = None,
    other_target: Literal["refuse", "reuse"] = "refuse",
) -> IngestResult:
    """Stream `source` into the data bucket, hashing and profiling it in the same read.

    Every failure, whether bad input or a broken upload, leaves nothing behind: no object, no open
    multipart upload, no manifest. A CSV with a row too long for the parser's blocks is read again with
    bigger ones.

    Bytes ingested before are not ingested again, and their version keeps the target it was ingested
    with: another `target` is refused, unless the caller trains with its own (`other_target="reuse"`).
    """
    options = {
        "name": name,
        "target": target,
        "max_bytes": max_bytes,
        "on_progress": on_progress,
        "other_target": other_target,
    }
    try:
        return _ingest(clients, bucket, source, **options, block_bytes=CSV_BLOCK_BYTES)
    except RowTooLongError:
        return _ingest(clients, bucket, source, **options, block_bytes=LONG_ROW_BLOCK_BYTES)


def _ingest(
    clients: ClientFactory,
    bucket: str,
    source: str,
    *,
    name: str | None,
    target: str | None,
    max_bytes: int,
    on_progress: ProgressCallback | None,
    other_target: str,
    block_bytes: int,
) -> IngestResult:
    started = time.monotonic()
    found = resolve_source(clients, source)
    file_format = detect_format(found.filename)
    name = validate_name(name) if name is not None else derive_name(found.filename, file_format)
    if found.size == 0:
        raise DatasetError(f"{found.filename} is empty", source=found.uri)
    if found.size is not None and found.size > max_bytes:
        raise DatasetError(
            f"{found.filename} is {megabytes(found.size)}, over the maximum of {megabytes(max_bytes)}: "
            "raise --max-size-mb (MLTP_MAX_DATASET_MB) or split the file",
            source=found.uri,
        )
    s3 = clients("s3")
    expected = _sha256_of(found.local_path) if found.local_path else None
    if expected:
        existing = manifest_or_none(s3, bucket, name, expected[:16])
        if existing is not None:
            _check_target_of(existing, target, found.filename, other_target)
            return IngestResult(existing, created=False)
        upload_key = f"datasets/{name}/{expected[:16]}/{found.filename}"
    else:
        upload_key = f"staging/{uuid.uuid4().hex}/{found.filename}"
    digest = hashlib.sha256()
    part_size = part_size_for(found.size)
    upload = MultipartUpload(
        s3,
        bucket,
        upload_key,
        part_size=part_size,
        extra_args=SSE,
        sole_writer=upload_key.startswith("staging/"),
    )
    try:
        with (
            found.open() as raw_source,
            ReadAhead(
                raw_source,
                [digest.update, upload.write],
                max_bytes,
                found.filename,
                part_size,
                READ_AHEAD_PARTS,
                at_end=upload.send_rest,
            ) as reader,
        ):
            report = (lambda: on_progress(reader.bytes_read, found.size)) if on_progress else (lambda: None)
            profiler, file_info = _profile(reader, found, file_format, target, report, block_bytes)
            report()
        _check_content(profiler, target, found.filename)
        if expected and digest.hexdigest() != expected:
            raise DatasetError(
                f"{found.filename} changed while it was being read: ingest it again once it is complete",
                source=found.uri,
            )
        existing = manifest_or_none(s3, bucket, name, digest.hexdigest()[:16])
        if existing is not None:  # same bytes as an existing version: nothing to do
            upload.abort()
            _check_target_of(existing, target, found.filename, other_target)
            return IngestResult(existing, created=False)
        upload.complete()
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters; the bucket's lifecycle
            upload.abort()  # rule removes an upload the abort could not reach
        raise
    version = digest.hexdigest()[:16]
    manifest = _manifest(
        name, version, digest.hexdigest(), reader.bytes_read, found, file_info, profiler, target, bucket
    )
    manifest["ingest_seconds"] = round(time.monotonic() - started, 3)
    return _publish(s3, bucket, upload_key, manifest)


def _sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _check_target_of(manifest: dict[str, Any], target: str | None, label: str, other_target: str) -> None:
    """The checks `_profile` would have made, against the profile of bytes ingested before; and a
    version's target is the one it was ingested with: another one is named at training instead."""
    if target is None:
        return
    columns = {column["name"]: column for column in manifest["columns"]}
    _check_target(target, list(columns), label)
    _check_target_values(columns[target], label)
    if target != manifest["target"] and other_target == "refuse":
        reference = f"{manifest['name']}@{manifest['version']}"
        ingested_with = f"target {manifest['target']!r}" if manifest["target"] else "no target"
        raise DatasetError(
            f"{label} was already ingested as {reference} with {ingested_with}: to train on {target!r}, "
            f"run mltp train --dataset {reference} --target {target}",
            source=label,
        )


def _check_content(profiler: Profiler, target: str | None, label: str) -> None:
    if profiler.rows == 0:
        raise DatasetError(f"{label} has a header but no data rows", source=label)
    if target is not None:
        _check_target_values(profiler.column(target).as_dict(), label)


def _manifest(name, version, sha256, size, found, file_info, profiler, target, bucket) -> dict[str, Any]:
    prefix = f"datasets/{name}/{version}"
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "name": name,
        "version": version,
        "sha256": sha256,
        "bytes": size,
        "rows": profiler.rows,
        "file": found.filename,
        "format": file_info,
        "uri": f"s3://{bucket}/{prefix}/{found.filename}",
        "manifest_uri": f"s3://{bucket}/{prefix}/manifest.json",
        "columns": [column.as_dict() for column in profiler.columns],
        "target": target,
        "task": task_hint(profiler.column(target).as_dict()) if target else None,
        "source": found.uri,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _publish(s3, bucket: str, uploaded_key: str, manifest: dict[str, Any]) -> IngestResult:
    """Put the bytes at their versioned key (a copy when they were staged), write the manifest, then
    move `latest`. On any failure, remove what this ingest made.

    The manifest is written only if absent, so of two concurrent ingests of the same bytes one creates
    the version and the other reports it as existing.
    """
    prefix = f"datasets/{manifest['name']}/{manifest['version']}"
    data_key, manifest_key = f"{prefix}/{manifest['file']}", f"{prefix}/manifest.json"
    wrote_manifest = False
    try:
        if uploaded_key != data_key:
            _copy(s3, bucket, uploaded_key, data_key, manifest["bytes"])
        try:
            put_json(s3, bucket, manifest_key, manifest, create=True)
        except ClientError as error:
            if not lost_race(error):
                raise
            return IngestResult(manifest_or_none(s3, bucket, manifest["name"], manifest["version"]), False)
        wrote_manifest = True
        _record_version(s3, bucket, manifest)
        return IngestResult(manifest, created=True)
    except BaseException:
        if wrote_manifest:
            s3.delete_object(Bucket=bucket, Key=manifest_key)
        if wrote_manifest or manifest_or_none(s3, bucket, manifest["name"], manifest["version"]) is None:
            s3.delete_object(Bucket=bucket, Key=data_key)
        raise
    finally:
        if uploaded_key != data_key:
            s3.delete_object(Bucket=bucket, Key=uploaded_key)


def _copy(s3, bucket: str, source_key: str, key: str, size: int) -> None:
    """Server-side copy: one CopyObject up to its 5 GB limit, a multipart copy beyond.

    The copy gets a checksum of its own: the source's is the composite of its upload parts, which a
    plain copy carries over (moto then fails every read of the copy with a checksum mismatch).
    """
    extra = {**SSE, "ChecksumAlgorithm": "CRC32"}
    if size < 5 * 1024**3:
        s3.copy_object(CopySource={"Bucket": bucket, "Key": source_key}, Bucket=bucket, Key=key, **extra)
    else:
        s3.copy({"Bucket": bucket, "Key": source_key}, bucket, key, ExtraArgs=extra)


def _record_version(s3, bucket: str, manifest: dict[str, Any], attempts: int = 30) -> None:
    """Append the version to `latest.json` with compare-and-swap, so no concurrent ingest is lost."""
    key = f"datasets/{manifest['name']}/latest.json"
    entry = {field: manifest[field] for field in ("version", "sha256", "rows", "bytes", "created_at")}
    for attempt in range(attempts):
        pointer, etag = read_json(s3, bucket, key)
        pointer = pointer or {"name": manifest["name"], "versions": []}
        pointer["versions"] = [v for v in pointer["versions"] if v["version"] != entry["version"]] + [entry]
        pointer["latest"] = entry["version"]
        try:
            put_json(s3, bucket, key, pointer, etag=etag, create=etag is None)
            return
        except ClientError as error:
            if not lost_race(error):
                raise
            time.sleep(random.uniform(0, 0.05 * 2 ** min(attempt, 5)))  # someone else moved it: re-read
    raise MltpError(
        f"could not update s3://{bucket}/{key} after {attempts} attempts: too many concurrent ingests"
    )


def read_table(clients: ClientFactory, bucket: str, name: str, version: str | None = None) -> pa.Table:
    """The dataset as an Arrow table, with the column types its profile inferred."""
    manifest = get_manifest(clients, bucket, name, version)
    if manifest["format"]["kind"] == "parquet":
        data_bucket, key = split_s3_uri(manifest["uri"])
        return pq.read_table(
            pa.BufferReader(clients("s3").get_object(Bucket=data_bucket, Key=key)["Body"].read())
        )
    columns = manifest["columns"]
    # Numbers convert while parsing (multi-threaded, no text copy; the CSV reader accepts every number
    # the profile's cast did). Other types go through the profile's own casts, to read back exactly.
    direct = {c["name"]: arrow_type(c) for c in columns if c["type"] in ("integer", "float")}
    table = _read_csv(clients, manifest, {**{c["name"]: pa.string() for c in columns}, **direct})
    return pa.table({c["name"]: pc.cast(table[c["name"]], arrow_type(c)) for c in columns})


def _read_csv(clients: ClientFactory, manifest: dict[str, Any], types: dict[str, pa.DataType]) -> pa.Table:
    data_bucket, key = split_s3_uri(manifest["uri"])
    body = clients("s3").get_object(Bucket=data_bucket, Key=key)["Body"]
    stream = gzip.GzipFile(fileobj=body) if manifest["format"]["compression"] == "gzip" else body
    return pa_csv.read_csv(
        stream,
        csv_read_options(list(types), manifest["format"].get("block_bytes", CSV_BLOCK_BYTES)),
        pa_csv.ParseOptions(delimiter=manifest["format"]["delimiter"], newlines_in_values=True),
        pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True),
    )


def read_dataframe(clients: ClientFactory, bucket: str, name: str, version: str | None = None):
    """The dataset as a pandas DataFrame."""
    return read_table(clients, bucket, name, version).to_pandas()
