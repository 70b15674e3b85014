"""Reading dataset files as a stream: CSV dialect sniffing, and Arrow record batches from CSV (plain or
gzip) and Parquet, with every parse failure turned into a `DatasetError`. Which files we take and how
they are named is `mltp.dataset_catalog`'s."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mltp.dataset_catalog import FileFormat, megabytes
from mltp.errors import DatasetError

SAMPLE_BYTES = 64 * 1024
CSV_BLOCK_BYTES = 1024 * 1024  # bigger blocks parse no faster and hold far more memory
# A row must fit in about two of the parser's blocks. A file with a longer one is read again with these
# (the manifest records it, so the trainer reads the file the same way); longer still is refused.
LONG_ROW_BLOCK_BYTES = 64 * 1024 * 1024


class RowTooLongError(DatasetError):
    """A CSV row longer than the parser's blocks hold: read it again with bigger blocks, or refuse."""


class ReadAhead(io.RawIOBase):
    """Reads `source` once, on a thread of its own, in chunks of `chunk_bytes`: each chunk goes to `sinks`
    (hash, upload) on that thread, then waits in a queue of at most `queued` chunks for whoever reads this
    stream (the parser). The upload thus runs ahead of the parser by up to `queued` chunks instead of
    waiting on it block by block, and memory stays bounded. Once the source is read to its end, `at_end`
    is called on that thread (the upload sends its last part while the parser still works).

    Also enforces the size limit, so a stream without a known size cannot grow past it. A failure on the
    reading thread (the source, a sink, the limit) is raised to the stream's reader and by `finish()`.
    """

    def __init__(
        self,
        source: BinaryIO,
        sinks: list[Callable[[bytes], None]],
        limit: int,
        label: str,
        chunk_bytes: int,
        queued: int,
        at_end: Callable[[], None] = lambda: None,
    ) -> None:
        self.source, self.sinks, self.limit, self.label = source, sinks, limit, label
        self.at_end = at_end
        self.chunk_bytes = chunk_bytes
        self.bytes_read = 0
        self.seconds_waiting_on_consumer = 0.0  # the reading thread (so the upload) on a full queue
        self.error: BaseException | None = None
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=queued)
        self._current = memoryview(b"")
        self._ended = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read_all, name="ingest-reader", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def _read_all(self) -> None:
        try:
            while not self._stopping.is_set() and (chunk := self.source.read(self.chunk_bytes)):
                self.bytes_read += len(chunk)
                if self.bytes_read > self.limit:
                    raise DatasetError(
                        f"{self.label} is larger than the maximum of {megabytes(self.limit)}: raise "
                        "--max-size-mb (MLTP_MAX_DATASET_MB) or split the file",
                        source=self.label,
                    )
                for sink in self.sinks:
                    sink(chunk)
                self._put(chunk)
            if not self._stopping.is_set():
                self.at_end()
        except BaseException as error:  # handed to the consumer, which raises it in its own thread
            self.error = error
        finally:
            self._put(None)

    def _put(self, item: bytes | None) -> None:
        started = time.monotonic()
        _put_unless(self._stopping, self._chunks, item)
        self.seconds_waiting_on_consumer += time.monotonic() - started

    def readinto(self, buffer) -> int:
        while not self._current:
            if self._ended:
                return 0
            chunk = self._chunks.get()
            if chunk is None:
                self._ended = True
                self.raise_error()
                return 0
            self._current = memoryview(chunk)
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        """Let the reading thread read the rest (a gzip trailer, padding the parser left) so the hash
        and the upload cover every byte; raise its failure if it had one."""
        while not self._ended:
            if self._chunks.get() is None:
                self._ended = True
        self._thread.join()
        self.raise_error()

    def close(self) -> None:
        """Stop the reading thread early (the parser failed): it ends after the chunk in hand. A read still
        waiting for a chunk (Arrow reads ahead on threads of its own) gets the end of the stream."""
        self._stopping.set()
        self._thread.join()
        with contextlib.suppress(queue.Empty):
            while True:
                self._chunks.get_nowait()
        self._chunks.put_nowait(None)
        super().close()


class _Prefixed(io.RawIOBase):
    """`head` followed by the rest of `stream`: lets us look at the start before the parser does."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = memoryview(head), stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            size = min(len(buffer), len(self.head))
            buffer[:size] = self.head[:size]
            self.head = self.head[size:]
            return size
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _decompressed(raw: BinaryIO, file_format: FileFormat, label: str) -> BinaryIO:
    return gzip.GzipFile(fileobj=raw, mode="rb") if file_format.compression == "gzip" else raw


def _read_sample(stream: BinaryIO, label: str) -> bytes:
    sample = stream.read(SAMPLE_BYTES)
    while sample and b"\n" not in sample and len(sample) < 16 * SAMPLE_BYTES:
        more = stream.read(SAMPLE_BYTES)
        if not more:
            break
        sample += more
    return sample


# Bytes that start files people name `.csv` by mistake, and what to do about each.
_NOT_CSV = (
    (b"\x1f\x8b", "gzip-compressed data: name it .csv.gz"),
    (b"PAR1", "a Parquet file: name it .parquet"),
    (b"PK\x03\x04", "a ZIP archive (an Excel workbook?): export the sheet as CSV"),
    (b"BZh", "bzip2-compressed data: decompress it, or recompress it with gzip as .csv.gz"),
    (b"\xfd7zXZ\x00", "xz-compressed data: decompress it, or recompress it with gzip as .csv.gz"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data: decompress it, or recompress it with gzip as .csv.gz"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8"),
)
SNIFF_ROWS = 50


def _refuse_foreign_bytes(sample: bytes, label: str) -> None:
    for magic, what in _NOT_CSV:
        if sample.startswith(magic):
            raise DatasetError(f"{label} is not CSV text: its bytes look like {what}", source=label)


def _decoded(text: bytes, label: str) -> str:
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as error:
        line = text.count(b"\n", 0, error.start) + 1
        column = error.start - (text.rfind(b"\n", 0, error.start) + 1) + 1
        raise DatasetError(
            f"{label} is not UTF-8 text (line {line}, byte {column}): save it as UTF-8", source=label
        ) from error


def check_column_names(names: list[str], label: str) -> None:
    """Names a model's signature and a CSV can both carry: none blank, none repeated (any format)."""
    empty = [str(position + 1) for position, name in enumerate(names) if not name.strip()]
    if empty:
        raise DatasetError(
            f"{label}: column(s) {', '.join(empty)} have an empty name in the header: name every column",
            source=label,
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DatasetError(
            f"{label}: duplicate column names in the header: {', '.join(map(repr, duplicates))}: "
            "give each column its own name",
            source=label,
        )


def sniff_header(sample: bytes, label: str) -> tuple[str, list[str]]:
    """Delimiter (comma, semicolon or tab) and column names from the start of a CSV file."""
    _refuse_foreign_bytes(sample, label)
    complete = sample if b"\n" not in sample else sample[: sample.rfind(b"\n") + 1]
    text = _decoded(complete.removeprefix(b"\xef\xbb\xbf"), label)

    def rows(delimiter: str) -> list[list[str]]:
        # csv.reader, not line splitting: a quoted field (the header's too) may hold a newline.
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        filled = (row for row in reader if any(field.strip() for field in row))
        return list(itertools.islice(filled, SNIFF_ROWS))

    def shape(found: list[list[str]]) -> tuple[bool, int]:
        counts = [len(row) for row in found]
        return len(set(counts)) == 1, counts[0]

    try:
        parsed = {delimiter: rows(delimiter) for delimiter in (",", ";", "\t")}
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise DatasetError(f"{label}: the header is not readable CSV ({error})", source=label) from error
    if not parsed[","]:
        raise DatasetError(f"{label} has no header row", source=label)
    scores = {delimiter: shape(found) for delimiter, found in parsed.items()}
    delimiter = max(scores, key=lambda d: (scores[d][1] > 1, scores[d][0], scores[d][1]))
    names = parsed[delimiter][0]
    check_column_names(names, label)
    return delimiter, names


@dataclass
class CsvDialect:
    delimiter: str
    names: list[str]
    block_bytes: int = CSV_BLOCK_BYTES


def open_csv_stream(
    raw: BinaryIO, file_format: FileFormat, label: str, block_bytes: int = CSV_BLOCK_BYTES
) -> tuple[CsvDialect, BinaryIO]:
    """Sniff the dialect from the first bytes and return a stream that still starts at byte 0."""
    stream = _decompressed(raw, file_format, label)
    with translate_errors(label, file_format):
        sample = _read_sample(stream, label)
    delimiter, names = sniff_header(sample, label)
    dialect = CsvDialect(delimiter, names, block_bytes)
    return dialect, io.BufferedReader(_Prefixed(sample, stream), block_bytes)


def csv_read_options(names: list[str], block_bytes: int = CSV_BLOCK_BYTES) -> pa_csv.ReadOptions:
    """Our column names, the header row skipped as a parsed row (a quoted name may hold a newline)."""
    return pa_csv.ReadOptions(
        column_names=names, skip_rows_after_names=1, block_size=block_bytes, encoding="utf8"
    )


def csv_batches(stream: BinaryIO, dialect: CsvDialect, label: str) -> Iterator[pa.RecordBatch]:
    """All columns as strings (types are inferred by the profiler across the whole file)."""
    bad_rows: list[tuple[int, int, str]] = []

    def on_invalid_row(row) -> str:
        bad_rows.append((row.expected_columns, row.actual_columns, row.text))
        return "error"

    reader_options = csv_read_options(dialect.names, dialect.block_bytes)
    parse_options = pa_csv.ParseOptions(
        delimiter=dialect.delimiter, newlines_in_values=True, invalid_row_handler=on_invalid_row
    )
    convert_options = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in dialect.names}, strings_can_be_null=True
    )
    rows = 0
    csv_format = FileFormat("csv", None, ".csv")
    with translate_errors(label, csv_format, lambda: rows, bad_rows, dialect.block_bytes):
        reader = pa_csv.open_csv(stream, reader_options, parse_options, convert_options)
        for batch in reader:
            rows += batch.num_rows
            yield batch


def parsed_ahead(batches: Iterator[pa.RecordBatch], depth: int = 4) -> Iterator[pa.RecordBatch]:
    """`batches`, parsed on a thread of their own up to `depth` batches ahead: Arrow's streaming reader
    parses only when asked for the next batch, so without this the parser and the profiler, which each
    need a core, would take turns. A parse failure is raised here, in the consumer's thread."""
    ready: queue.Queue[tuple[pa.RecordBatch | None, BaseException | None]] = queue.Queue(maxsize=depth)
    stopping = threading.Event()

    def parse() -> None:
        try:
            for batch in batches:
                if not _put_unless(stopping, ready, (batch, None)):
                    return
            _put_unless(stopping, ready, (None, None))
        except BaseException as error:
            _put_unless(stopping, ready, (None, error))

    thread = threading.Thread(target=parse, name="csv-parser", daemon=True)
    thread.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is None:
                return
            yield batch
    finally:
        stopping.set()
        thread.join()


def _put_unless(stopping: threading.Event, into: queue.Queue, item) -> bool:
    """Put `item`, waiting for room until `stopping` is set; whether it was put."""
    while not stopping.is_set():
        try:
            into.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def parquet_batches(file: BinaryIO | str, label: str) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    parquet_format = FileFormat("parquet", None, ".parquet")
    with translate_errors(label, parquet_format):
        parquet = pq.ParquetFile(file)
        names = parquet.schema_arrow.names
    check_column_names(names, label)

    def batches() -> Iterator[pa.RecordBatch]:
        with translate_errors(label, parquet_format):
            yield from parquet.iter_batches(batch_size=65_536)

    return names, batches()


class translate_errors:
    """Turn the parsers' exceptions into one-line `DatasetError`s that say what is wrong with the file."""

    def __init__(
        self, label: str, file_format: FileFormat, rows=lambda: 0, bad_rows=None, block_bytes=CSV_BLOCK_BYTES
    ) -> None:
        self.label, self.format, self.rows, self.block_bytes = label, file_format, rows, block_bytes
        self.bad_rows = bad_rows if bad_rows is not None else []

    def __enter__(self) -> translate_errors:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None or isinstance(error, DatasetError):
            return False
        if "straddl" in str(error):  # Arrow: "straddling object straddles two block boundaries"
            where = f"after data row {self.rows():,}" if self.rows() else "in the first rows"
            raise RowTooLongError(
                f"{self.label}: a row {where} is longer than {self.block_bytes // 2**20} MB, the longest "
                "row mltp reads: shorten that field or store the data as Parquet",
                source=self.label,
            ) from error
        message = self._message(error)
        if message is None:
            return False
        raise DatasetError(message, source=self.label) from error

    def _message(self, error: BaseException) -> str | None:
        label = self.label
        if isinstance(error, (gzip.BadGzipFile, zlib.error, EOFError)) or (
            isinstance(error, OSError) and "gzip" in str(error).lower()
        ):
            return f"{label} is not a valid gzip file ({error}): check the file or drop the .gz extension"
        if not isinstance(error, (pa.ArrowInvalid, pa.ArrowException)):
            return None
        text = str(error)
        if self.format.kind == "parquet":
            return f"{label} is not a valid Parquet file ({text.splitlines()[0]})"
        if self.bad_rows:
            expected, actual, row = self.bad_rows[0]
            shown = row if len(row) <= 60 else row[:57] + "..."
            where = f" (after data row {self.rows():,})" if self.rows() else ""
            return f"{label}: a data row{where} has {actual} fields but the header has {expected}: {shown!r}"
        if "invalid UTF8" in text or "UTF8" in text:
            where = f" (after data row {self.rows():,})" if self.rows() else ""
            return f"{label} is not UTF-8 text{where}: save it as UTF-8"
        return f"{label} could not be parsed as CSV ({text.splitlines()[0]})"
