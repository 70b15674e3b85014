"""What the data bucket says about its datasets, read without touching their bytes: dataset names and
versions, the file types we take, manifests and the catalog.

No Arrow and no pandas here (they cost every process that imports them most of a second): commands,
flows and the watcher import this; only ingest and the readers in `mltp.datasets` need the data stack.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltp.aws import ClientFactory
from mltp.errors import DatasetError, DatasetNotFoundError
from mltp.s3_json import read_json

DEFAULT_MAX_MB = 20480  # the CLI reads MLTP_MAX_DATASET_MB
CLASSIFICATION_MAX_CLASSES = 50
NOT_A_TARGET = ("nested", "other")  # profiled column types no model is trained to predict
NAME_RULE = "1-64 characters: lowercase letters, digits, '-' or '_', starting with a letter or digit"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SUFFIXES = {
    ".csv": ("csv", None),
    ".tsv": ("csv", None),
    ".txt": ("csv", None),
    ".csv.gz": ("csv", "gzip"),
    ".tsv.gz": ("csv", "gzip"),
    ".txt.gz": ("csv", "gzip"),
    ".parquet": ("parquet", None),
    ".pq": ("parquet", None),
}
_VERSION = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class FileFormat:
    kind: str  # csv | parquet
    compression: str | None  # gzip | None
    suffix: str


def detect_format(filename: str) -> FileFormat:
    lowered = filename.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix):
            kind, compression = _SUFFIXES[suffix]
            return FileFormat(kind, compression, suffix)
    found = "".join(re.findall(r"\.[A-Za-z0-9]+", filename)[-2:]) or "no extension"
    raise DatasetError(
        f"unsupported file type ({found}) for {filename}: use CSV (.csv, .tsv, .txt, optionally .gz) "
        "or Parquet (.parquet)",
        source=filename,
    )


def megabytes(size: int) -> str:
    """A size in the unit of --max-size-mb (MiB), precise enough that two different sizes differ."""
    value = size / 2**20
    return f"{value:,.0f} MB" if value >= 100 or value == int(value) else f"{value:,.2f} MB"


def distinct_shown(column: dict[str, Any], estimate_mark: str) -> str:
    """A profile's distinct count for people: `-` where none is kept (nested columns)."""
    if column["distinct"] is None:
        return "-"
    return f"{column['distinct']:,}" + ("" if column["distinct_exact"] else estimate_mark)


def column_name_shown(name: str) -> str:
    return name if name.isprintable() else repr(name)


def column_list(names: list[str], limit: int = 20) -> str:
    """Column names for a one-line message: a name with a newline or another control character is
    shown quoted and escaped, and a long list is cut."""
    shown = [column_name_shown(name) for name in names[:limit]]
    return ", ".join(shown) + (", ..." if len(names) > limit else "")


def check_data_file(path: Path, source: str) -> Path:
    """A local data file that exists, is a regular file (not a folder, a pipe or a device: those have no
    size and may never end) and can be read; a one-line error otherwise."""
    if not path.exists():
        raise DatasetError(f"{source} does not exist: check the path", source=source)
    if path.is_dir():
        raise DatasetError(f"{source} is a directory: pass a single CSV or Parquet file", source=source)
    if not path.is_file():
        raise DatasetError(
            f"{source} is not a regular file ({_file_kind(path)}): save the data to a file and pass that",
            source=source,
        )
    if not os.access(path, os.R_OK):
        raise DatasetError(f"{source} is not readable by this user: check its permissions", source=source)
    return path


def _file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    kinds = [
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((kind for test, kind in kinds if test(mode)), "not a file")


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise DatasetError(f"dataset name {name!r} is not allowed: use {NAME_RULE}")
    return name


def derive_name(filename: str, file_format: FileFormat) -> str:
    stem = filename[: -len(file_format.suffix)].lower()
    slug = re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")[:64]
    if not slug:
        raise DatasetError(
            f"cannot derive a dataset name from {filename!r}: pass one with --name ({NAME_RULE})"
        )
    return slug


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); a one-line error for anything else."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key or key.endswith("/"):
        raise DatasetError(f"{uri} is not an object URI: use s3://bucket/path/to/file.csv", source=uri)
    return bucket, key


def manifest_or_none(s3, bucket: str, name: str, version: str) -> dict[str, Any] | None:
    return read_json(s3, bucket, f"datasets/{name}/{version}/manifest.json")[0]


def parse_reference(reference: str) -> tuple[str, str | None]:
    """`name` or `name@version`."""
    name, _, version = reference.partition("@")
    return validate_name(name), validate_version(version) if version else None


def validate_version(version: str) -> str:
    """A version is the first 16 hex digits of the data's SHA-256: nothing else may reach a key."""
    if not _VERSION.fullmatch(version):
        raise DatasetError(
            f"dataset version {version!r} is not a version: use the 16 hex digits `mltp datasets show NAME` "
            "lists, or leave it out for the latest"
        )
    return version


def list_datasets(clients: ClientFactory, bucket: str) -> list[dict[str, Any]]:
    """Every dataset with its latest version and version count, sorted by name."""
    s3 = clients("s3")
    names = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="datasets/", Delimiter="/"
    ):
        names += [entry["Prefix"].split("/")[1] for entry in page.get("CommonPrefixes", [])]
    summaries = []
    for name in sorted(names):
        pointer, _ = read_json(s3, bucket, f"datasets/{name}/latest.json")
        if pointer is None:
            continue
        latest = next(v for v in pointer["versions"] if v["version"] == pointer["latest"])
        summaries.append(
            {
                "name": name,
                "latest": pointer["latest"],
                "versions": len(pointer["versions"]),
                **{field: latest[field] for field in ("rows", "bytes", "created_at")},
            }
        )
    return summaries


def get_manifest(
    clients: ClientFactory, bucket: str, name: str, version: str | None = None
) -> dict[str, Any]:
    s3 = clients("s3")
    validate_name(name)
    if version is None:
        pointer, _ = read_json(s3, bucket, f"datasets/{name}/latest.json")
        if pointer is None:
            raise DatasetNotFoundError(
                f"no dataset named {name!r} in s3://{bucket}: `mltp datasets list` shows what there is",
                s3_uri=f"s3://{bucket}/datasets/{name}/",
            )
        version = pointer["latest"]
    manifest = manifest_or_none(s3, bucket, name, validate_version(version))
    if manifest is None:
        raise DatasetNotFoundError(
            f"dataset {name}@{version} does not exist in s3://{bucket}: "
            f"`mltp datasets show {name}` lists its versions",
            s3_uri=f"s3://{bucket}/datasets/{name}/{version}/",
        )
    return manifest


def versions(clients: ClientFactory, bucket: str, name: str) -> list[dict[str, Any]]:
    pointer, _ = read_json(clients("s3"), bucket, f"datasets/{name}/latest.json")
    return pointer["versions"] if pointer else []


def task_hint(target: dict[str, Any]) -> str:
    """classification or regression, from a target column's profile (`ColumnProfile.as_dict()`)."""
    if target["type"] == "float":
        return "regression"
    if target["type"] == "integer" and not (
        target["distinct_exact"] and target["distinct"] <= CLASSIFICATION_MAX_CLASSES
    ):
        return "regression"
    return "classification"
