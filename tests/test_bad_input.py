"""The bad-input corpus: every bad dataset and bad parameter of the earlier issues, and fuzzed CSVs.

Every corpus case must end with a clear one-line error (`mltp: error: ...`) with the documented exit code
(2: input to fix, 1: the environment), no traceback, and nothing half-written: no new object under
`staging/`, `datasets/<its name>/`, `models/<its name>/` or `runs/`, no open multipart upload in any
bucket, no instance left running, no output file.

The cases call the command's entry point (`mltp.cli.main`, with its argv) in this process against the
shared sandbox: the very code the console script runs, through the same moto, fleet and Prefect servers,
without paying the script's 3-15 s of interpreter start-up and imports per case. One test runs the console
script itself and checks that it answers exactly like the entry point.

The fuzzed CSVs (hypothesis) go through ingest and the trainer in-process on moto's `mock_aws`.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import itertools
import math
import os
import random
import sys
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sklearn import datasets as toy

from mltp import datasets, registry
from mltp.errors import MltpError
from mltp.jobs import build_job_spec, write_job
from mltp.s3_json import read_json
from mltp.trainer.algorithms import ALGORITHMS
from mltp.trainer.errors import TrainingInputError
from mltp.trainer.runner import run_job
from tests.conftest import run_mltp

TOKEN = f"bi{uuid.uuid4().hex[:6]}"  # every dataset, model, job and file this module makes starts with it
MISSING_VERSION = "0000000000000000"


# -- the corpus ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]  # after `mltp`; placeholders: see `Corpus.placeholders`
    fragment: str  # a distinctive piece of the one-line error
    exit_code: int = 2
    reaches_compute: bool = False  # refused by the trainer: the run's record under runs/ is expected


def ingest(file: str, *options: str) -> tuple[str, ...]:
    return ("datasets", "ingest", f"{{dir}}/{file}", *options)


def train(*options: str, dataset: str = "{iris}") -> tuple[str, ...]:
    return ("train", "--dataset", dataset, "--algorithm", "knn", "--compute", "local", *options)


def predict(inputs: str, reference: str = "{model}:1", output: str = "{out}") -> tuple[str, ...]:
    return ("predict", reference, inputs, "-o", output)


INGEST_CASES = {
    "missing file": Case(ingest("{t}-nope.csv"), "does not exist: check the path"),
    "directory": Case(("datasets", "ingest", "{dir}"), "is a directory: pass a single CSV or Parquet file"),
    "empty file": Case(ingest("{t}-empty.csv"), "-empty.csv is empty"),
    "header only": Case(ingest("{t}-header-only.csv"), "has a header but no data rows"),
    "blank lines only": Case(ingest("{t}-blank-lines.csv"), "has no header row"),
    "row with more fields": Case(ingest("{t}-more-fields.csv"), "has 3 fields but the header has 2: '3,4,5'"),
    "row with fewer fields": Case(ingest("{t}-fewer-fields.csv"), "has 2 fields but the header has 3"),
    "ragged row in gzip": Case(ingest("{t}-ragged.csv.gz"), "has 3 fields but the header has 2"),
    "latin-1 row": Case(ingest("{t}-latin1-row.csv"), "is not UTF-8 text (line 2"),
    "latin-1 past the sniffed start": Case(
        ingest("{t}-latin1-late.csv"), "is not UTF-8 text: save it as UTF-8"
    ),
    "UTF-16": Case(ingest("{t}-utf16.csv"), "its bytes look like UTF-16 text: save it as UTF-8"),
    "gzip named .csv": Case(
        ingest("{t}-gzip.csv"), "its bytes look like gzip-compressed data: name it .csv.gz"
    ),
    "Parquet named .csv": Case(
        ingest("{t}-parquet.csv"), "its bytes look like a Parquet file: name it .parquet"
    ),
    "workbook named .csv": Case(ingest("{t}-workbook.csv"), "its bytes look like a ZIP archive"),
    "binary junk": Case(ingest("{t}-junk.csv"), "is not UTF-8 text"),
    "duplicate column names": Case(ingest("{t}-duplicate.csv"), "duplicate column names in the header: 'a'"),
    "empty column name": Case(ingest("{t}-blank-name.csv"), "column(s) 2 have an empty name"),
    "duplicate column names in parquet": Case(
        ingest("{t}-duplicate.parquet"), "duplicate column names in the header: 'a'"
    ),
    "empty column name in parquet": Case(ingest("{t}-blank-name.parquet"), "column(s) 1 have an empty name"),
    "parquet list column as target": Case(
        ingest("{t}-nested.parquet", "--target", "tags"),
        "target 'tags' of {t}-nested.parquet is a nested column",
    ),
    "parquet struct column as target": Case(
        ingest("{t}-nested.parquet", "--target", "point"), "target 'point' of {t}-nested.parquet is a nested"
    ),
    "file name with a newline": Case(ingest("{t}-new\nline.csv"), "contains control characters ('\\n')"),
    "file name with a tab": Case(ingest("{t}-tab\tbed.csv"), "contains control characters ('\\t')"),
    "named pipe": Case(ingest("{t}-pipe.csv"), "is not a regular file (a named pipe)"),
    "character device": Case(
        ("datasets", "ingest", "/dev/null"), "is not a regular file (a character device)"
    ),
    "the same bytes with another target": Case(
        ingest("{t}-iris.csv", "--name", "{iris}", "--target", "species"),
        "already ingested as {iris}@{iris_version} with target 'target': to train on 'species', run mltp",
    ),
    "header field over the csv module's limit": Case(ingest("{t}-huge-header.csv"), "-huge-header.csv"),
    "unsupported extension": Case(ingest("{t}-sheet.xlsx"), "unsupported file type (.xlsx)"),
    "no extension": Case(ingest("{t}-noextension"), "unsupported file type (no extension)"),
    "corrupt gzip": Case(ingest("{t}-corrupt.csv.gz"), "is not a valid gzip file"),
    "truncated gzip": Case(ingest("{t}-truncated.csv.gz"), "is not a valid gzip file"),
    "corrupt parquet": Case(ingest("{t}-corrupt.parquet"), "is not a valid Parquet file"),
    "truncated parquet": Case(ingest("{t}-truncated.parquet"), "is not a valid Parquet file"),
    "missing target": Case(ingest("{t}-targets.csv", "--target", "c"), "target 'c' is not a column"),
    "missing target in parquet": Case(
        ingest("{t}-targets.parquet", "--target", "c"), "target 'c' is not a column"
    ),
    "all-null target": Case(ingest("{t}-targets.csv", "--target", "b"), "target 'b' is empty in every row"),
    "missing target of known bytes": Case(
        ingest("{t}-iris.csv", "--target", "colour"), "target 'colour' is not a column"
    ),
    "--auto-train without --target": Case(
        ingest("{t}-ok.csv", "--auto-train"), "--auto-train needs --target"
    ),
    "over --max-size-mb": Case(
        ingest("{t}-big.csv", "--max-size-mb", "1"), "is 1.14 MB, over the maximum of 1 MB"
    ),
    "--max-size-mb 0": Case(ingest("{t}-ok.csv", "--max-size-mb", "0"), "--max-size-mb"),
    "name with a path": Case(ingest("{t}-ok.csv", "--name", "../x"), "dataset name '../x' is not allowed"),
    "uppercase name": Case(ingest("{t}-ok.csv", "--name", "Iris"), "'Iris' is not allowed"),
    "empty name": Case(ingest("{t}-ok.csv", "--name", ""), "dataset name '' is not allowed"),
    "no name in the file name": Case(ingest("---.csv"), "cannot derive a dataset name from '---.csv'"),
    "s3 URI of a bucket": Case(("datasets", "ingest", "s3://{data}"), "is not an object URI"),
    "s3 object missing": Case(
        ("datasets", "ingest", "s3://{data}/uploads/{t}/nope.csv"), "does not exist or is not readable"
    ),
    "s3 object with a ragged row": Case(
        ("datasets", "ingest", "s3://{data}/uploads/{t}/{t}-s3-ragged.csv"), "has 3 fields but the header"
    ),
    "s3 object that is not parquet": Case(
        ("datasets", "ingest", "s3://{data}/uploads/{t}/{t}-s3-corrupt.parquet"), "is not a valid Parquet"
    ),
    "s3 parquet with a list column as target": Case(
        ("datasets", "ingest", "s3://{data}/uploads/{t}/{t}-s3-nested.parquet", "--target", "tags"),
        "is a nested column",
    ),
}

DATASET_CASES = {
    "show: name not a slug": Case(("datasets", "show", "Bad Name"), "dataset name 'Bad Name' is not allowed"),
    "show: unknown dataset": Case(("datasets", "show", "{t}-ghost"), "no dataset named '{t}-ghost'"),
    "show: unknown version": Case(
        ("datasets", "show", "{iris}@" + MISSING_VERSION), f"{{iris}}@{MISSING_VERSION} does not exist"
    ),
    "show: version not 16 hex digits": Case(("datasets", "show", "{iris}@../x"), "'../x' is not a version"),
}

TRAIN_CASES = {
    "unknown algorithm": Case(
        ("train", "--dataset", "{iris}", "--algorithm", "xgboost"),
        "unknown algorithm 'xgboost': choose one of",
    ),
    "--param without =": Case(train("--param", "n_neighbors"), "--param 'n_neighbors' is not key=value"),
    "--param without a key": Case(train("--param", "=5"), "--param '=5' is not key=value"),
    "--grid without =": Case(train("--grid", "n_neighbors"), "--grid 'n_neighbors' is not key=value"),
    "--grid with an empty value": Case(train("--grid", "n_neighbors="), "Got '' instead"),
    "fixed value and grid axis": Case(
        train("--param", "n_neighbors=3", "--grid", "n_neighbors=4,5"),
        "given both as a fixed value and a grid",
    ),
    "hyperparameter out of range": Case(train("--param", "n_neighbors=-1"), "Got -1 instead"),
    "hyperparameter of the wrong type": Case(train("--param", "weights=heavy"), "Got 'heavy' instead"),
    "unknown hyperparameter": Case(train("--param", "colour=red"), "Invalid parameter 'colour'"),
    "regressor for a classification target": Case(
        ("train", "--dataset", "{iris}", "--algorithm", "ridge", "--compute", "local"),
        "'ridge' does only regression, but the task is classification",
    ),
    "classifier for a regression target": Case(
        ("train", "--dataset", "{iris}", "--algorithm", "logistic_regression", "--target", "petal_length"),
        "does only classification, but the task is regression",
    ),
    "regression on a text target": Case(
        train("--target", "species", "--task", "regression"), "regression target 'species' is not numeric"
    ),
    "unknown task": Case(train("--task", "clustering"), "clustering"),
    "missing --target column": Case(train("--target", "colour"), "target 'colour' is not a column"),
    "dataset without a target": Case(train(dataset="{t}-untargeted"), "has no target: pass --target COLUMN"),
    "constant target": Case(
        train(dataset="{t}-constant"), "classification target 'label' has a single class"
    ),
    "no usable feature": Case(
        train(dataset="{t}-id-only"), "no usable feature columns besides target 'label'"
    ),
    "metric of the other task": Case(
        train("--metric", "r2"), "'r2' is a regression metric: the classification metrics are accuracy"
    ),
    "unknown metric": Case(
        train("--metric", "bogus"), "unknown metric 'bogus': the classification metrics are accuracy"
    ),
    "constant regression target": Case(
        train(dataset="{t}-flat"), "regression target 'level' is 3.5 in every row: there is nothing to learn"
    ),
    "target empty in every row": Case(
        train("--target", "note", dataset="{t}-constant"),
        "target 'note' is empty in every row of {t}-constant",
    ),
    "nested target": Case(
        train("--target", "tags", dataset="{t}-nested"), "target 'tags' of {t}-nested is a nested"
    ),
    "quality gate on an unknown metric": Case(
        train("--min-metric", "precision>0.5"), "quality gate precision>0.5: unknown metric 'precision'"
    ),
    "model name holding the other task": Case(
        train("--target", "petal_length", "--model-name", "{model}", "--promote"),
        "model '{model}' holds classification of 'target' models, not regression of 'petal_length'",
    ),
    "model name holding another target": Case(
        train("--target", "species", "--model-name", "{model}"),
        "model '{model}' holds classification of 'target' models, not classification of 'species'",
    ),
    "model name over 64 characters": Case(
        train("--model-name", "m" * 65), "invalid model name '" + "m" * 65 + "': use 1-64 lowercase letters"
    ),
    "64-character dataset name, no --model-name": Case(
        train("--metric", "r2", dataset="{long}"), "'r2' is a regression metric"
    ),
    "--param given twice": Case(
        train("--param", "n_neighbors=3", "--param", "n_neighbors=4"), "--param n_neighbors is given twice"
    ),
    "--compute gpu": Case(train("--compute", "gpu"), "--compute 'gpu': use auto, lambda, ec2, local"),
    "--max-runtime 0": Case(train("--max-runtime", "0"), "--max-runtime"),
    "negative --max-runtime": Case(train("--max-runtime", "-5"), "--max-runtime"),
    "--heartbeat 0": Case(train("--heartbeat", "0"), "--heartbeat"),
    # The dataset version is missing so that, while nothing checks the pair, the run stops there at
    # once instead of training for real.
    "--heartbeat not below --heartbeat-timeout": Case(
        train("--heartbeat", "30", "--heartbeat-timeout", "10", dataset="{iris}@" + MISSING_VERSION),
        "--heartbeat-timeout",
    ),
    "--folds 1": Case(train("--folds", "1"), "--folds"),
    "--holdout 0.9": Case(train("--holdout", "0.9"), "--holdout"),
    "quality gate syntax": Case(train("--min-metric", "accuracy=>0.9"), "is not METRIC OP NUMBER"),
    "quality gate on a metric not measured": Case(
        train("--min-metric", "rmse<3"), "quality gate rmse<3: 'rmse' is a regression metric"
    ),
    "model name not a slug": Case(train("--model-name", "Bad_Name!"), "invalid model name 'Bad_Name!'"),
    "dataset name not a slug": Case(train(dataset="Bad Name"), "dataset name 'Bad Name' is not allowed"),
    "unknown dataset": Case(train(dataset="{t}-ghost"), "no dataset named '{t}-ghost'"),
    "dataset version not 16 hex digits": Case(train(dataset="{iris}@latest"), "'latest' is not a version"),
    "unknown dataset version": Case(
        train(dataset="{iris}@" + MISSING_VERSION), f"{{iris}}@{MISSING_VERSION} does not exist"
    ),
    "more folds than rows, on EC2": Case(
        ("train", "--dataset", "{t}-few", "--algorithm", "random_forest", "--compute", "ec2", "--folds", "5"),
        "3 rows cannot be split into 5 folds",
        reaches_compute=True,
    ),
    "too few rows per class": Case(
        ("train", "--dataset", "{t}-few", "--algorithm", "logistic_regression"),
        "training failed (user)",  # what the trainer says of data it cannot fit
        reaches_compute=True,
    ),
}

MODEL_CASES = {
    "show: name not a slug": Case(("models", "show", "Bad/../name"), "invalid model name 'Bad/../name'"),
    "show: unknown model": Case(("models", "show", "{t}-ghost"), "no model named '{t}-ghost'"),
    "show: unknown version": Case(("models", "show", "{model}:9"), "has no version 9: versions are 1, 2"),
    "show: version 0": Case(("models", "show", "{model}:0"), "must be a positive whole number"),
    "show: version not a number": Case(("models", "show", "{model}:two"), "must be a positive whole number"),
    "show: version and alias": Case(("models", "show", "{model}:1@champion"), "not both"),
    "show: unknown alias": Case(
        ("models", "show", "{model}@gold"), "has no alias 'gold': its aliases are champion=1"
    ),
    "show: alias not a slug": Case(("models", "show", "{model}@Top/../x"), "invalid alias 'Top/../x'"),
    "promote: no version": Case(
        ("models", "promote", "{model}", "--alias", "staging"), "name the version, as NAME:VERSION"
    ),
    "promote: alias not a slug": Case(
        ("models", "promote", "{model}:1", "--alias", "Top/../x"), "invalid alias 'Top/../x'"
    ),
    "promote: stale --expected-version": Case(
        ("models", "promote", "{model}:2", "--alias", "champion", "--expected-version", "2"),
        "points at version 1, not the expected version 2",
    ),
    "promote: --expected-version 0": Case(
        ("models", "promote", "{model}:2", "--alias", "champion", "--expected-version", "0"),
        "--expected-version",
    ),
    "approve: unknown version": Case(
        ("models", "approve", "{model}:9", "--reason", "r"), "has no version 9: versions are 1, 2"
    ),
    "approve: no --reason": Case(("models", "approve", "{model}:1"), "--reason"),
    "promote: a Rejected version": Case(
        ("models", "promote", "{rejected}:1", "--alias", "champion"),
        "{rejected}:1 is Rejected (corpus: failed review, by test:bad-input): approve it first",
    ),
    "reject: unknown alias": Case(
        ("models", "reject", "{model}@gold", "--reason", "r"), "has no alias 'gold'"
    ),
}

PREDICT_CASES = {
    "model name not a slug": Case(predict("{dir}/{t}-rows.csv", "Bad/../name"), "invalid model name"),
    "unknown model": Case(predict("{dir}/{t}-rows.csv", "{t}-ghost"), "no model named '{t}-ghost'"),
    "unknown version": Case(predict("{dir}/{t}-rows.csv", "{model}:9"), "has no version 9"),
    "unknown alias": Case(predict("{dir}/{t}-rows.csv", "{model}@gold"), "has no alias 'gold'"),
    "missing input file": Case(predict("{dir}/{t}-nope.csv"), "-nope.csv does not exist: check the path"),
    "input is a directory": Case(predict("{dir}"), "is a directory: pass a single CSV or Parquet file"),
    "empty input": Case(predict("{dir}/{t}-empty.csv"), "has no header row"),
    "header-only input": Case(predict("{dir}/{t}-header-only-input.csv"), "has no data rows"),
    "extra field in the first row": Case(
        predict("{dir}/{t}-shifted-input.csv"), "has 6 fields but the header has 5"
    ),
    "extra field in a later row": Case(
        predict("{dir}/{t}-ragged-input.csv"), "has 6 fields but the header has 5"
    ),
    "latin-1 input": Case(predict("{dir}/{t}-latin1-input.csv"), "is not UTF-8 text (line 2"),
    "missing columns": Case(
        predict("{dir}/{t}-missing-column.csv"), "lacks columns the model needs: sepal_length"
    ),
    "text in a numeric column": Case(
        predict("{dir}/{t}-text-in-number.csv"), "column 'sepal_length' must be float, but row 2 has 'abc'"
    ),
    "output folder missing": Case(
        predict("{dir}/{t}-rows.csv", output="{dir}/no-such-folder/out.csv"), "no-such-folder"
    ),
    "tampered model file": Case(predict("{dir}/{t}-rows.csv", "{model}:2"), "refusing to load it", 1),
    "infinite number": Case(
        predict("{dir}/{t}-inf-input.csv"), "column 'sepal_width' has an infinite number in row 3 ('inf')"
    ),
    "negative infinite number": Case(
        predict("{dir}/{t}-minus-inf-input.csv"),
        "column 'sepal_width' has an infinite number in row 3 ('-inf')",
    ),
    "number past the float range": Case(
        predict("{dir}/{t}-overflow-input.csv"),
        "column 'sepal_width' has an infinite number in row 3 ('1e309')",
    ),
    "text in a numeric column of a semicolon file": Case(
        predict("{dir}/{t}-text-in-number-semicolon.csv"),
        "column 'sepal_length' must be float, but row 2 has 'abc'",
    ),
    "text in a numeric column of a Parquet file": Case(
        predict("{dir}/{t}-text-in-number.parquet"),
        "column 'sepal_length' must be float, but row 1 has 'abc'",
    ),
    "gzip input named .csv": Case(predict("{dir}/{t}-gzip.csv"), "its bytes look like gzip-compressed data"),
    "corrupt gzip input": Case(predict("{dir}/{t}-corrupt.csv.gz"), "is not a valid gzip file"),
    "corrupt parquet input": Case(predict("{dir}/{t}-corrupt.parquet"), "is not a valid Parquet file"),
    "unsupported input type": Case(predict("{dir}/{t}-sheet.xlsx"), "unsupported file type (.xlsx)"),
    "input is a named pipe": Case(predict("{dir}/{t}-pipe.csv"), "is not a regular file (a named pipe)"),
    "input is a device": Case(predict("/dev/zero"), "is not a regular file (a character device)"),
    "prediction column in the input": Case(
        predict("{dir}/{t}-prediction-column.csv"), "has column(s) the output adds: prediction"
    ),
    "probability column in the input": Case(
        predict("{dir}/{t}-probability-column.csv"), "has column(s) the output adds: probability_0"
    ),
    "output is a directory": Case(predict("{dir}/{t}-rows.csv", output="{dir}"), "it is a directory"),
    "output the system refuses": Case(
        predict("{dir}/{t}-rows.csv", output="/dev/full"),
        "cannot write /dev/full: No space left on device",
        1,
    ),
}

CORPUS = {
    **{f"ingest: {name}": case for name, case in INGEST_CASES.items()},
    **{f"datasets {name}": case for name, case in DATASET_CASES.items()},
    **{f"train: {name}": case for name, case in TRAIN_CASES.items()},
    **{f"models {name}": case for name, case in MODEL_CASES.items()},
    **{f"predict: {name}": case for name, case in PREDICT_CASES.items()},
}


# -- running a case ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    crash: str = ""  # the traceback of an exception that escaped the command


def run_entry_point(home: Path, argv: list[str]) -> Outcome:
    """`mltp ARGV` in this process: what the console script runs, its exit code and its output.

    Prefect's flow-run heartbeat thread is off here: at the end of each run Prefect waits for it to
    notice, up to a second, and nothing a refused input leads to depends on it.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from mltp.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_environment, saved_argv = dict(os.environ), sys.argv
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["MLTP_HOME"] = str(home)
    sys.argv = ["mltp", *argv]
    exit_code, crash = 0, ""
    try:
        with (
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            main()
    except SystemExit as done:
        exit_code = done.code if isinstance(done.code, int) else int(done.code is not None)
    except Exception:  # what the console script would print as a traceback
        exit_code, crash = 1, traceback.format_exc()
    finally:  # the commands set Prefect's variables for their own process
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_environment)
    return Outcome(exit_code, out.getvalue(), err.getvalue(), crash)


@dataclass(frozen=True)
class Footprint:
    keys: frozenset[str]  # bucket/key under the prefixes a refused input must leave alone
    uploads: frozenset[str]  # bucket/key/upload id of every open multipart upload
    instances: frozenset[str]  # pending, running, stopping or stopped


LIVE = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]


def _watched_keys(s3, watched: list[tuple[str, str]]) -> frozenset[str]:
    return frozenset(
        f"{bucket}/{entry['Key']}"
        for bucket, prefix in watched
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for entry in page.get("Contents", [])
    )


def _open_uploads(s3, buckets: list[str]) -> frozenset[str]:
    return frozenset(
        f"{bucket}/{upload['Key']}/{upload['UploadId']}"
        for bucket in buckets
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    )


def _live_instances(ec2) -> frozenset[str]:
    return frozenset(
        instance["InstanceId"]
        for page in ec2.get_paginator("describe_instances").paginate(Filters=LIVE)
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    )


def footprint(clients, buckets: list[str], data: str, models: str) -> Footprint:
    """What a refused input must not add to, looked at in parallel (it runs twice per case)."""
    watched = [
        (data, "staging/"),
        (data, f"datasets/{TOKEN}"),
        (models, f"models/{TOKEN}"),
        (models, f"runs/{TOKEN}"),
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        keys = pool.submit(_watched_keys, clients("s3"), watched)
        uploads = pool.submit(_open_uploads, clients("s3"), buckets)
        instances = pool.submit(_live_instances, clients("ec2"))
        return Footprint(keys.result(), uploads.result(), instances.result())


def assert_clear_refusal(outcome: Outcome, case: Case, fragment: str) -> None:
    assert not outcome.crash, outcome.crash
    assert "Traceback" not in outcome.stdout + outcome.stderr, outcome.stdout + outcome.stderr
    assert outcome.exit_code == case.exit_code, outcome
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"not one line:\n{outcome.stderr}"
    assert lines[0].startswith("mltp: error: "), lines[0]
    assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def _run_record(key: str, case: Case) -> bool:
    """A job refused on the compute leaves its spec, run record and status (but no model) under runs/."""
    return case.reaches_compute and "/runs/" in key and not key.endswith(".skops")


def assert_nothing_half_written(before: Footprint, after: Footprint, case: Case) -> None:
    added = [key for key in sorted(after.keys - before.keys) if not _run_record(key, case)]
    assert not added, added
    assert not after.uploads - before.uploads, sorted(after.uploads - before.uploads)
    assert not after.instances - before.instances, sorted(after.instances - before.instances)


# -- the corpus's data, made once --------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    home: Path
    clients: Callable[[str], Any]  # the sandbox's AWS clients, one per service
    buckets: list[str]  # every bucket of the sandbox
    placeholders: dict[str, str]

    def fill(self, text: str) -> str:
        return text.format(**self.placeholders)

    def footprint(self) -> Footprint:
        return footprint(self.clients, self.buckets, self.placeholders["data"], self.placeholders["models"])

    def run(self, argv: tuple[str, ...]) -> Outcome:
        return run_entry_point(self.home, [self.fill(arg) for arg in argv])


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def _parquet_table(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


NESTED = pa.table(
    {
        "tags": [["a", "b"], ["c"], None, ["a"]] * 10,
        "point": [{"x": 1, "y": 2}, {"x": 3, "y": 4}] * 20,
        "x": list(range(40)),
        "label": ["a", "b"] * 20,
    }
)


def _iris() -> pd.DataFrame:
    frame = toy.load_iris(as_frame=True).frame
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width", "target"]
    return frame.assign(species=frame["target"].map(dict(enumerate(["setosa", "versicolor", "virginica"]))))


def _input_files(features: pd.DataFrame) -> dict[str, bytes]:
    """Files given to `mltp predict`."""
    text_in_number = features.head(5).astype(str)
    text_in_number.loc[0, "sepal_length"] = "abc"
    return {
        "{t}-rows.csv": features.head(5).to_csv(index=False).encode(),
        "{t}-missing-column.csv": features.head(5).drop(columns="sepal_length").to_csv(index=False).encode(),
        "{t}-text-in-number.csv": text_in_number.to_csv(index=False).encode(),
        "{t}-header-only-input.csv": (",".join(features.columns) + "\n").encode(),
        "{t}-shifted-input.csv": (",".join(features.columns) + "\n1,2,3,4,setosa,extra\n").encode(),
        "{t}-ragged-input.csv": (
            ",".join(features.columns) + "\n1,2,3,4,setosa\n1,2,3,4,setosa,extra\n"
        ).encode(),
        "{t}-latin1-input.csv": (",".join(features.columns) + "\n1,2,3,4,s\u00e9tosa\n").encode("latin-1"),
        "{t}-inf-input.csv": _with_cell(features, "sepal_width", 1, "inf"),
        "{t}-minus-inf-input.csv": _with_cell(features, "sepal_width", 1, "-inf"),
        "{t}-overflow-input.csv": _with_cell(features, "sepal_width", 1, "1e309"),
        "{t}-text-in-number-semicolon.csv": text_in_number.to_csv(index=False, sep=";").encode(),
        "{t}-text-in-number.parquet": _parquet(text_in_number),
        "{t}-prediction-column.csv": features.head(5).assign(prediction="x").to_csv(index=False).encode(),
        "{t}-probability-column.csv": features.head(5).assign(probability_0=0.5).to_csv(index=False).encode(),
    }


def _with_cell(features: pd.DataFrame, column: str, row: int, cell: str) -> bytes:
    """The first five rows as text, one cell replaced."""
    frame = features.head(5).astype(str)
    frame.loc[row, column] = cell
    return frame.to_csv(index=False).encode()


def corpus_files(iris: pd.DataFrame) -> dict[str, bytes]:
    """Every file a case names, by file name (`{t}`: the module's token)."""
    late = b"a,b\n" + b"1,x\n" * 40_000 + "2,caf\u00e9\n".encode("latin-1")  # past the 64 KiB sniffed
    return {
        "{t}-empty.csv": b"",
        "{t}-header-only.csv": b"a,b\n",
        "{t}-blank-lines.csv": b"\n\n\n",
        "{t}-more-fields.csv": b"a,b\n1,2\n3,4,5\n",
        "{t}-fewer-fields.csv": b"a,b,c\n1,2,3\n4,5\n",
        "{t}-ragged.csv.gz": gzip.compress(b"a,b\n1,2\n3,4,5\n"),
        "{t}-latin1-row.csv": "a,b\n1,caf\u00e9\n".encode("latin-1"),
        "{t}-latin1-late.csv": late,
        "{t}-utf16.csv": "a,b\n1,2\n".encode("utf-16"),
        "{t}-gzip.csv": gzip.compress(b"a,b\n1,2\n"),
        "{t}-parquet.csv": _parquet(pd.DataFrame({"a": [1]})),
        "{t}-workbook.csv": b"PK\x03\x04\x14\x00\x06\x00",
        "{t}-duplicate.parquet": _parquet_table(
            pa.table([pa.array([1, 2]), pa.array([3, 4])], names=["a", "a"])
        ),
        "{t}-blank-name.parquet": _parquet_table(
            pa.table([pa.array([1, 2]), pa.array([3, 4])], names=["", "a"])
        ),
        "{t}-nested.parquet": _parquet_table(NESTED),
        "{t}-new\nline.csv": b"a\n1\n",
        "{t}-tab\tbed.csv": b"a\n1\n",
        "{t}-junk.csv": b"\xff\xd8\xff\xe0" + random.Random(8).randbytes(4096),
        "{t}-duplicate.csv": b"a,a\n1,2\n",
        "{t}-blank-name.csv": b"a,,c\n1,2,3\n",
        "{t}-huge-header.csv": b"a" * 200_000 + b",b\n1,2\n",
        "{t}-sheet.xlsx": b"PK\x03\x04",
        "{t}-noextension": b"a\n1\n",
        "{t}-corrupt.csv.gz": b"a,b\n1,2\n",
        "{t}-truncated.csv.gz": gzip.compress(b"a,b\n" + b"1,2\n" * 50_000)[:-40],
        "{t}-corrupt.parquet": b"PAR1 not really",
        "{t}-truncated.parquet": _parquet(iris)[:-100],
        "{t}-targets.csv": b"a,b\n1,\n2,\n",
        "{t}-targets.parquet": _parquet(pd.DataFrame({"a": [1, 2], "b": [3, 4]})),
        "{t}-iris.csv": iris.to_csv(index=False).encode(),
        "{t}-ok.csv": b"a\n1\n",
        "{t}-big.csv": b"a,b\n" + b"1,2\n" * 300_000,
        "---.csv": b"a\n1\n",
        **_input_files(iris.drop(columns="target")),
    }


S3_OBJECTS = {
    "uploads/{t}/{t}-s3-ragged.csv": b"a,b\n1,2\n3,4,5\n",
    "uploads/{t}/{t}-s3-corrupt.parquet": b"PAR1 not really",
    "uploads/{t}/{t}-s3-nested.parquet": _parquet_table(NESTED),
}


def _training_datasets() -> dict[str, tuple[str, pd.DataFrame, str | None]]:
    """Datasets that ingest accepts and training must refuse: name -> (file, frame, target)."""
    rows = 40
    return {
        "constant": (
            "constant.csv",
            pd.DataFrame({"x": range(rows), "label": ["yes"] * rows, "note": [None] * rows}),
            "label",
        ),
        "flat": ("flat.csv", pd.DataFrame({"x": range(rows), "level": [3.5] * rows}), "level"),
        "id-only": (
            "id-only.csv",
            pd.DataFrame({"row_id": range(rows), "label": ["a", "b"] * (rows // 2)}),
            "label",
        ),
        "few": ("few.csv", pd.DataFrame({"x": [1, 2, 3], "label": ["a", "a", "b"]}), "label"),
    }


def _ingest_in_process(clients, bucket: str, path: Path, name: str, target: str | None) -> dict:
    return datasets.ingest(clients, bucket, str(path), name=name, target=target).manifest


def _register_model(clients, sandbox, manifest: dict, name: str) -> None:
    """Train in-process (the trainer against the sandbox), register it twice, make version 1 champion
    and replace version 2's file with other bytes."""
    models = sandbox.status["buckets"]["models"]
    spec = build_job_spec(manifest, algorithm="knn", candidates=[{}], models_bucket=models)
    status = run_job(write_job(clients, spec), clients)
    assert status["state"] == "succeeded", status
    s3 = clients("s3")
    written = {
        leaf: read_json(s3, models, f"runs/{spec.job_id}/{leaf}.json")[0] for leaf in ("metrics", "signature")
    }
    for _ in range(2):
        registry.register_version(
            s3,
            models,
            name,
            model_uri=status["model_uri"],
            sha256=status["model_sha256"],
            metrics=status["metrics"],
            primary_metric=written["metrics"]["primary_metric"],
            signature=written["signature"],
            lineage={"dataset": written["metrics"]["dataset"], "job_ids": [spec.job_id]},
            actor="test:bad-input",
        )
    registry.set_alias(s3, models, name, "champion", 1, actor="test:bad-input", reason="corpus")
    s3.put_object(Bucket=models, Key=f"models/{name}/versions/2/model.skops", Body=b"not the model")


LONG_NAME = f"{TOKEN}_" + "x" * (63 - len(TOKEN))  # the longest dataset name, with an underscore


def _register_rejected(clients, sandbox, model: str, name: str) -> None:
    """Version 1 of `model` registered again as `name`, and Rejected."""
    s3, models = clients("s3"), sandbox.status["buckets"]["models"]
    source = registry.get_version(s3, models, model, 1)
    registry.register_version(
        s3,
        models,
        name,
        model_uri=source.model_uri,
        sha256=source.sha256,
        metrics=source.metrics,
        primary_metric=source.primary_metric,
        signature=source.signature,
        lineage=source.lineage,
        actor="test:bad-input",
    )
    registry.set_approval(
        s3, models, name, 1, "Rejected", actor="test:bad-input", reason="corpus: failed review"
    )


@pytest.fixture(scope="module")
def corpus(sandbox, tmp_path_factory) -> Corpus:
    folder = tmp_path_factory.mktemp("bad-inputs")
    iris = _iris()
    for name, content in corpus_files(iris).items():
        (folder / name.format(t=TOKEN)).write_bytes(content)
    clients = functools.cache(sandbox.client)  # one client per service
    s3, data = clients("s3"), sandbox.status["buckets"]["data"]
    for key, content in S3_OBJECTS.items():
        s3.put_object(Bucket=data, Key=key.format(t=TOKEN), Body=content)
    iris_path = folder / f"{TOKEN}-iris.csv"
    manifest = _ingest_in_process(clients, data, iris_path, f"{TOKEN}-iris", "target")
    _ingest_in_process(clients, data, iris_path, f"{TOKEN}-untargeted", None)
    for name, (file, frame, target) in _training_datasets().items():
        frame.to_csv(folder / file, index=False)
        _ingest_in_process(clients, data, folder / file, f"{TOKEN}-{name}", target)
    _ingest_in_process(clients, data, folder / f"{TOKEN}-nested.parquet", f"{TOKEN}-nested", "label")
    os.mkfifo(folder / f"{TOKEN}-pipe.csv")
    _register_model(clients, sandbox, manifest, f"{TOKEN}-model")
    _ingest_in_process(clients, data, iris_path, LONG_NAME, "target")
    _register_rejected(clients, sandbox, f"{TOKEN}-model", f"{TOKEN}-rejected")
    placeholders = {
        "t": TOKEN,
        "dir": str(folder),
        "data": data,
        "models": sandbox.status["buckets"]["models"],
        "iris": f"{TOKEN}-iris",
        "iris_version": manifest["version"],
        "long": LONG_NAME,
        "rejected": f"{TOKEN}-rejected",
        "model": f"{TOKEN}-model",
        "out": str(folder / f"{TOKEN}-predicted.csv"),
    }
    buckets = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    return Corpus(sandbox.home, clients, buckets, placeholders)


@pytest.mark.servers
@pytest.mark.parametrize("case_id", list(CORPUS))
def test_bad_input_is_a_clear_error_and_leaves_nothing(corpus, case_id) -> None:
    case = CORPUS[case_id]
    before = corpus.footprint()
    outcome = corpus.run(case.argv)
    after = corpus.footprint()
    assert_clear_refusal(outcome, case, corpus.fill(case.fragment))
    assert_nothing_half_written(before, after, case)
    output = Path(corpus.placeholders["out"])
    assert not output.exists(), f"{output} was written"


@pytest.mark.servers
def test_the_console_script_answers_like_the_entry_point(sandbox, corpus) -> None:
    argv = MODEL_CASES["show: unknown version"].argv
    script = run_mltp(*[corpus.fill(arg) for arg in argv], env=sandbox.env)
    in_process = corpus.run(argv)
    assert (script.returncode, script.stderr) == (in_process.exit_code, in_process.stderr)


# -- fuzzed CSVs ----------------------------------------------------------------------------------------

DATA, MODELS = "fuzz-data", "fuzz-models"
SAFE_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
ODD_NAMES = st.one_of(
    st.sampled_from(["", " ", "\u00e9", "\u540d\u524d", "a b", '"q"', "x\ny", "row_id", "target"]),
    st.text(st.characters(codec="utf-8"), max_size=6),
)
CELLS = {
    "integer": st.integers(-1000, 1000).map(str),
    "float": st.floats(-1e4, 1e4).map(lambda value: f"{value:.4g}"),
    "boolean": st.sampled_from(["true", "false", "True", "FALSE", "1", "0"]),
    "category": st.sampled_from(["red", "green", "blue"]),
    "date": st.dates(date(1990, 1, 1), date(2030, 12, 31)).map(date.isoformat),
    "text": st.text(st.characters(codec="utf-8"), max_size=6),
}
# Cells the parsers and the type inference may trip over: nulls spelled out, non-finite and huge numbers,
# quotes, delimiters and a newline inside a cell, an impossible date.
ODD_WORDS = ["NA", "null", "nan", "inf", "-inf", "1e308", "1,5", "2024-02-30"]
ODD_CELLS = st.sampled_from([*ODD_WORDS, "", " ", '"', "'", ",", ";", "\t", "\n"])


@dataclass(frozen=True)
class FuzzedCsv:
    text: str
    names: list[str]
    target: str | None
    bom: bool

    def encoded(self) -> bytes:
        return ("\ufeff" if self.bom else "").encode() + self.text.encode("utf-8")


def _cell(draw, kind: str) -> str:
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return ""
    if roll == 1:
        return draw(ODD_CELLS)
    return draw(CELLS[kind])


def _render(rows: list[list[str]], delimiter: str, quoting: int, newline: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator=newline).writerows(rows)
    return out.getvalue()


def _names(draw, width: int) -> list[str]:
    """Mostly plain distinct names; now and then an odd one (blank, unicode, quoted, a newline) or a
    duplicate."""
    names = draw(st.lists(SAFE_NAMES, min_size=width, max_size=width, unique=True))
    for position in range(width):
        if draw(st.integers(0, 9)) == 0:
            names[position] = draw(ODD_NAMES)
    if width > 1 and draw(st.integers(0, 19)) == 0:
        names[-1] = names[0]
    return names


def _target(draw, names: list[str], with_target: bool) -> str | None:
    roll = draw(st.integers(0, 9))
    if with_target or roll > 1:
        return draw(st.sampled_from(names))
    return None if roll == 0 else draw(ODD_NAMES)


@st.composite
def fuzzed_csvs(draw, with_target: bool = False) -> FuzzedCsv:
    width = draw(st.integers(1, 5))
    names = _names(draw, width)
    kinds = draw(st.lists(st.sampled_from(sorted(CELLS)), min_size=width, max_size=width))
    rows = [[_cell(draw, kind) for kind in kinds] for _ in range(draw(st.integers(0, 40)))]
    if rows and draw(st.integers(0, 9)) == 0:  # now and then a ragged row
        row = draw(st.sampled_from(rows))
        if draw(st.booleans()) or len(row) == 1:
            row.append("extra")
        else:
            row.pop()
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines = _render(
        [names, *rows],
        draw(st.sampled_from([",", ";", "\t"])),
        draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        newline,
    )
    if draw(st.integers(0, 9)) == 0:  # now and then empty lines
        lines = lines.replace(newline, newline * 2, draw(st.integers(1, 3)))
    return FuzzedCsv(lines, names, _target(draw, names, with_target), draw(st.booleans()))


FUZZ_SETTINGS = {
    "deadline": None,
    "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no explain: minutes per failure
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
_numbers = itertools.count()


@pytest.fixture
def fuzz_clients(mock_clients):
    for bucket in (DATA, MODELS):
        mock_clients("s3").create_bucket(Bucket=bucket)
    return mock_clients


def _place(clients, folder: Path, fuzzed: FuzzedCsv, name: str, from_s3: bool) -> str:
    """The fuzzed file as a local path or, to go through staging, an s3:// URI."""
    if from_s3:
        clients("s3").put_object(Bucket=DATA, Key=f"uploads/{name}.csv", Body=fuzzed.encoded())
        return f"s3://{DATA}/uploads/{name}.csv"
    path = folder / f"{name}.csv"
    path.write_bytes(fuzzed.encoded())
    return str(path)


def _left_behind(clients, name: str) -> list[str]:
    s3 = clients("s3")
    keys = [
        entry["Key"]
        for prefix in ("staging/", f"datasets/{name}/")
        for entry in s3.list_objects_v2(Bucket=DATA, Prefix=prefix).get("Contents", [])
    ]
    return keys + [upload["Key"] for upload in s3.list_multipart_uploads(Bucket=DATA).get("Uploads", [])]


def _assert_one_line_user_error(error: MltpError) -> None:
    message = str(error)
    assert error.exit_code == 2, (type(error), message)
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)


def _ingest_or_refuse(clients, folder: Path, fuzzed: FuzzedCsv, from_s3: bool) -> dict | None:
    """The manifest, or None after a clean refusal (one line, exit code 2, nothing left behind)."""
    name = f"fuzz-{next(_numbers)}"
    source = _place(clients, folder, fuzzed, name, from_s3)
    try:
        manifest = datasets.ingest(clients, DATA, source, name=name, target=fuzzed.target).manifest
    except MltpError as error:
        _assert_one_line_user_error(error)
        assert not _left_behind(clients, name)
        return None
    frame = datasets.read_dataframe(clients, DATA, name)  # what the trainer reads back
    assert len(frame) == manifest["rows"] > 0
    assert list(frame.columns) == [column["name"] for column in manifest["columns"]]
    return manifest


@settings(max_examples=60, **FUZZ_SETTINGS)
@given(fuzzed=fuzzed_csvs(), from_s3=st.booleans())
# a quoted header name holding newlines, and a target that is not it: the message names the columns
@example(fuzzed=FuzzedCsv('"x\n\ny"\n""\n', ["x\ny"], "x\ny", bom=True), from_s3=False)
def test_fuzzed_csv_is_ingested_or_refused_cleanly(fuzz_clients, tmp_path, fuzzed, from_s3) -> None:
    _ingest_or_refuse(fuzz_clients, tmp_path, fuzzed, from_s3)


METRIC_RANGES = {
    "accuracy": (0.0, 1.0),
    "balanced_accuracy": (0.0, 1.0),
    "f1_macro": (0.0, 1.0),
    "roc_auc": (0.0, 1.0),
    "r2": (-math.inf, 1.0),
    "rmse": (0.0, math.inf),
    "mae": (0.0, math.inf),
}


def _assert_valid_metrics(metrics: dict[str, float], primary: str) -> None:
    low, high = METRIC_RANGES[primary]
    assert math.isfinite(metrics[primary]) and low <= metrics[primary] <= high, metrics
    for name, value in metrics.items():
        undefined = name == "roc_auc" and math.isnan(value)  # documented: one class in the holdout
        assert undefined or METRIC_RANGES[name][0] <= value <= METRIC_RANGES[name][1], metrics


def _hand_made(text: str, target: str) -> FuzzedCsv:
    return FuzzedCsv(text, text.split("\n", 1)[0].split(","), target, bom=False)


# Each example trains a model, so shrinking a failure would take minutes: failures are reported as found.
@settings(max_examples=20, **{**FUZZ_SETTINGS, "phases": [Phase.explicit, Phase.reuse, Phase.generate]})
@given(fuzzed=fuzzed_csvs(with_target=True), algorithm=st.sampled_from(sorted(ALGORITHMS)))
@example(fuzzed=_hand_made("x,y\n1,a\n2,b\n3,a\n4,b\n5,a\n", "y"), algorithm="knn")  # 4 rows, 5 neighbours
@example(fuzzed=_hand_made("x,y\n1,a\n2,a\n3,b\n", "y"), algorithm="logistic_regression")  # 1 class left
@example(fuzzed=_hand_made("x,y\ninf,a\n1,b\n2,a\n3,b\n4,a\n5,b\n", "y"), algorithm="random_forest")
@example(fuzzed=_hand_made("x,y\n1,1.5\n", "y"), algorithm="ridge")  # nothing left to train on
@example(fuzzed=_hand_made("x,y\n1,1.5\n2,2.5\n", "y"), algorithm="ridge")  # r2 of one row: undefined
def test_fuzzed_csv_trains_or_fails_as_a_user_error(fuzz_clients, tmp_path, fuzzed, algorithm) -> None:
    manifest = _ingest_or_refuse(fuzz_clients, tmp_path, fuzzed, from_s3=False)
    if manifest is None:
        return
    try:
        spec = build_job_spec(manifest, algorithm=algorithm, candidates=[{}], models_bucket=MODELS)
    except TrainingInputError as error:  # refused before launch
        _assert_one_line_user_error(error)
        return
    status = run_job(write_job(fuzz_clients, spec), fuzz_clients)
    if status["state"] == "failed":
        assert status["kind"] == "user", status
        assert status["message"].strip() and "\n" not in status["message"], status
        return
    _assert_valid_metrics(status["metrics"], spec.primary_metric)
