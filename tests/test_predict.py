"""`mltp predict` in this process: a model trained and registered on moto's in-process mock (ingest, the
trainer and the registry as they run for real), the command's entry point with its Prefect connection and
models bucket pointed at that mock."""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import stat
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from mltp import datasets, registry
from mltp.cli import main, predict_cmd
from mltp.errors import ConfigError
from mltp.jobs import build_job_spec, write_job
from mltp.output_file import OutputWriteError, write_output
from mltp.predict import model_inputs, read_input
from mltp.s3_json import read_json
from mltp.trainer.runner import run_job

DATA, MODELS, MODEL = "predict-data", "predict-models", "churn"
COLUMNS = ["amount", "visits", "member", "plan", "since"]
TYPES = ["float", "integer", "boolean", "string", "datetime"]  # as ingest profiles them
NULLS = ["NA", "null", "NaN", ""]  # a few of Arrow's null spellings, which ingest reads as missing


def _training_csv() -> str:
    """Numbers, booleans, text and dates, each with missing cells spelled as ingest reads them."""
    lines = ["amount,visits,member,plan,since,label"]
    for row in range(80):
        label = "yes" if row % 2 else "no"
        amount = NULLS[row % 4] if row % 9 == 0 else f"{row * 1.5 + (40 if row % 2 else 0):.1f}"
        member = NULLS[row % 4] if row % 7 == 0 else ("true" if row % 2 else "false")
        plan = NULLS[row % 4] if row % 11 == 0 else ["basic", "pro", "team"][row % 3]
        lines.append(f"{amount},{row % 5},{member},{plan},2024-01-{row % 28 + 1:02d},{label}")
    return "\n".join(lines) + "\n"


ROWS = [  # what the tests predict for: the model's input columns
    ["12.5", "3", "true", "pro", "2024-02-01"],
    ["80", "1", "false", "basic", "2024-03-05"],
    ["55.0", "4", "TRUE", "team", "2024-01-09"],
]


def _csv(rows: list[list[str]], delimiter: str = ",", columns: list[str] = COLUMNS) -> str:
    return "\n".join(delimiter.join(row) for row in [columns, *rows]) + "\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Moto's mock for the whole module, with the model `churn` version 1 registered from a real training."""
    from moto import mock_aws

    folder = tmp_path_factory.mktemp("predict-train")
    with mock_aws():
        import boto3

        session = boto3.Session(region_name="us-east-1")
        made = {}

        def clients(service: str):
            return made.setdefault(service, session.client(service))

        for bucket in (DATA, MODELS):
            clients("s3").create_bucket(Bucket=bucket)
        (folder / "churn.csv").write_text(_training_csv())
        manifest = datasets.ingest(clients, DATA, str(folder / "churn.csv"), target="label").manifest
        spec = build_job_spec(manifest, algorithm="random_forest", candidates=[{}], models_bucket=MODELS)
        status = run_job(write_job(clients, spec), clients)
        assert status["state"] == "succeeded", status
        clients.register = lambda: _register(clients, spec.job_id, status)
        clients.register()
        yield clients


def _register(clients, job_id: str, status: dict) -> registry.ModelVersion:
    s3 = clients("s3")
    written = {
        leaf: read_json(s3, MODELS, f"runs/{job_id}/{leaf}.json")[0] for leaf in ("metrics", "signature")
    }
    return registry.register_version(
        s3,
        MODELS,
        MODEL,
        model_uri=status["model_uri"],
        sha256=status["model_sha256"],
        metrics=status["metrics"],
        primary_metric=written["metrics"]["primary_metric"],
        signature=written["signature"],
        lineage={"dataset": written["metrics"]["dataset"], "job_ids": [job_id]},
        actor="test:predict",
    )


class Run:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def mltp(store, monkeypatch, capsys):
    """`mltp ARGS...` through the entry point; the sandbox's connection and blocks replaced by the mock."""
    monkeypatch.setattr(predict_cmd, "prefect_connection", contextlib.nullcontext)
    monkeypatch.setattr(predict_cmd, "models_bucket", lambda: (store("s3"), MODELS))

    def run(*args: str) -> Run:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["mltp", *map(str, args)])
        with pytest.raises(SystemExit) as done:
            main()
        out, err = capsys.readouterr()
        return Run(done.value.code, out, err)

    return run


def _predict(mltp, tmp_path: Path, name: str, content: str | bytes, *options: str) -> tuple[Run, Path]:
    inputs, out = tmp_path / name, tmp_path / f"{name}.out.csv"
    inputs.write_bytes(content.encode() if isinstance(content, str) else content)
    return mltp("predict", f"{MODEL}:1", inputs, "-o", out, *options), out


def _predicted(mltp, tmp_path: Path, name: str, content: str | bytes) -> pd.DataFrame:
    result, out = _predict(mltp, tmp_path, name, content)
    assert result.exit_code == 0, result.stderr
    return pd.read_csv(out, dtype=str, keep_default_na=False)


def _assert_one_line(result: Run, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.stderr
    assert len(result.lines) == 1 and result.lines[0].startswith("mltp: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.lines[0], result.lines[0]


def test_the_output_repeats_the_cells_as_written_null_spellings_too(mltp, tmp_path) -> None:
    rows = [[*row, f"note {number}"] for number, row in enumerate(ROWS)]
    rows[0][0], rows[1][5] = "NA", "null"
    result, out = _predict(mltp, tmp_path, "rows.csv", _csv(rows, columns=[*COLUMNS, "note"]))
    assert result.exit_code == 0, result.stderr
    assert result.lines == ["mltp: warning: ignoring columns the model does not use: note"]
    predicted = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(predicted.columns) == [*COLUMNS, "note", "prediction", "probability_no", "probability_yes"]
    assert predicted[[*COLUMNS, "note"]].values.tolist() == rows
    assert set(predicted["prediction"]) <= {"yes", "no"}


# -- 3: infinite numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["inf", "-inf", "1e309", "Infinity"])
@pytest.mark.parametrize("column", ["amount", "visits"])  # a float and an integer column
def test_an_infinite_number_is_one_line_naming_column_and_row(mltp, tmp_path, cell, column) -> None:
    rows = [list(row) for row in ROWS]
    rows[1][COLUMNS.index(column)] = cell
    rows[2][COLUMNS.index(column)] = cell
    result, out = _predict(mltp, tmp_path, "infinite.csv", _csv(rows))
    _assert_one_line(result, 2, f"column {column!r} has an infinite number in row 3 ({cell!r})")
    assert not out.exists()


# -- 8: the null spellings ingest reads as missing ---------------------------------------------------


@pytest.mark.parametrize("spelling", ["NA", "null", "NaN", "N/A", "#N/A", "nan"])
@pytest.mark.parametrize("column", ["amount", "visits", "member", "plan"])
def test_a_null_spelling_is_a_missing_value_in_every_column_type(mltp, tmp_path, spelling, column) -> None:
    spelled, empty = [list(row) for row in ROWS], [list(row) for row in ROWS]
    spelled[0][COLUMNS.index(column)], empty[0][COLUMNS.index(column)] = spelling, ""
    with_spelling = _predicted(mltp, tmp_path, "spelled.csv", _csv(spelled))
    with_empty = _predicted(mltp, tmp_path, "empty.csv", _csv(empty))
    assert with_spelling[column][0] == spelling  # the output repeats the cell as written
    added = ["prediction", "probability_no", "probability_yes"]
    assert with_spelling[added].equals(with_empty[added])


def test_missing_cells_reach_the_model_as_the_trainer_gives_them(tmp_path) -> None:
    rows = [[*row, "x"] for row in [["NA", "null", "NaN", "", "N/A"], *ROWS]]
    (tmp_path / "rows.csv").write_text(_csv(rows, columns=[*COLUMNS, "note"]))
    signature = {"inputs": [{"name": n, "type": t} for n, t in zip(COLUMNS, TYPES, strict=True)]}
    features, ignored = model_inputs(read_input(tmp_path / "rows.csv"), signature)
    assert features.iloc[0].isna().all(), features.iloc[0]
    assert features.dtypes.astype(str).tolist()[:3] == ["float64", "float64", "float64"]
    assert features.iloc[1].tolist()[:4] == [12.5, 3.0, 1.0, "pro"] and features.iloc[3]["member"] == 1.0
    assert ignored == ["note"]


# -- 9: the dialects and formats ingest takes ------------------------------------------------------------


PADDED = [[" 12.5 ", *ROWS[0][1:]], *ROWS[1:]]


def _parquet(rows: list[list[str]]) -> bytes:
    frame = pd.DataFrame(rows, columns=COLUMNS).astype({"amount": float, "visits": int})
    frame["member"] = frame["member"].str.lower() == "true"
    frame["since"] = pd.to_datetime(frame["since"])
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("semicolon.csv", _csv(ROWS, ";")),
        ("tab.tsv", _csv(ROWS, "\t")),
        ("semicolon.csv.gz", gzip.compress(_csv(ROWS, ";").encode(), mtime=0)),
        ("rows.parquet", _parquet(ROWS)),
        # a BOM, CRLF line ends, and blanks around a number (the trainer's CSV reader allows them)
        ("bom-crlf.csv", ("\ufeff" + _csv(PADDED, ";")).replace("\n", "\r\n").encode()),
    ],
)
def test_every_format_ingest_takes_predicts_like_the_comma_csv(mltp, tmp_path, name, content) -> None:
    expected = _predicted(mltp, tmp_path, "comma.csv", _csv(ROWS))
    predicted = _predicted(mltp, tmp_path, name, content)
    assert list(predicted.columns) == list(expected.columns)
    assert len(predicted) == len(ROWS)
    added = ["prediction", "probability_no", "probability_yes"]
    assert predicted[added].equals(expected[added])


def test_a_cell_of_the_wrong_type_names_column_row_and_cell(mltp, tmp_path) -> None:
    rows = [list(row) for row in ROWS]
    rows[2][COLUMNS.index("member")] = "yes"
    result, _ = _predict(mltp, tmp_path, "bad.csv", _csv(rows, ";"))
    _assert_one_line(result, 2, "column 'member' must be boolean, but row 4 has 'yes'")
    rows = [list(row) for row in ROWS]
    rows[0][COLUMNS.index("amount")] = "12,5"
    result, _ = _predict(mltp, tmp_path, "bad.csv", _csv(rows, ";"))
    _assert_one_line(result, 2, "column 'amount' must be float, but row 2 has '12,5'")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (_csv(ROWS)[:-1] + ",extra\n", "has 6 fields but the header has 5"),
        (b"", "has no header row"),
        (_csv([["1", "2", "true", "caf\u00e9", "2024-01-01"]]).encode("latin-1"), "is not UTF-8 text"),
    ],
)
def test_unreadable_input_is_one_line(mltp, tmp_path, content, fragment) -> None:
    result, out = _predict(mltp, tmp_path, "bad.csv", content)
    _assert_one_line(result, 2, fragment)
    assert not out.exists()


# -- 4: where the output goes ---------------------------------------------------------------------------


def test_an_output_directory_is_one_line(mltp, tmp_path) -> None:
    (tmp_path / "rows.csv").write_text(_csv(ROWS))
    result = mltp("predict", f"{MODEL}:1", tmp_path / "rows.csv", "-o", tmp_path)
    _assert_one_line(result, 2, f"cannot write {tmp_path}: it is a directory")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_write_the_system_refuses_is_one_line(mltp, tmp_path) -> None:
    (tmp_path / "rows.csv").write_text(_csv(ROWS))
    result = mltp("predict", f"{MODEL}:1", tmp_path / "rows.csv", "-o", "/dev/full")
    _assert_one_line(result, 1, "cannot write /dev/full: No space left on device")


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(mltp, tmp_path, monkeypatch) -> None:
    (tmp_path / "rows.csv").write_text(_csv(ROWS))
    out = tmp_path / "out.csv"
    out.write_text("the previous predictions\n")

    def half_then_full(frame, handle, **options):
        handle.write("prediction\n" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_full)
    result = mltp("predict", f"{MODEL}:1", tmp_path / "rows.csv", "-o", out)
    _assert_one_line(result, 1, f"cannot write {out}: No space left on device")
    assert out.read_text() == "the previous predictions\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.csv", "rows.csv"]


def test_a_regular_file_is_replaced_whole_keeping_its_permissions(tmp_path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    out.chmod(0o600)
    link = tmp_path / "link.csv"
    link.symlink_to(out)
    write_output(link, lambda handle: handle.write("new\n"))
    assert link.is_symlink() and out.read_text() == "new\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.csv", "out.csv"]

    def fails(handle) -> None:
        handle.write("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_output(out, fails)
    assert out.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "link.csv",
        "out.csv",
    ]


def test_devices_and_fifos_are_written_directly(tmp_path) -> None:
    write_output(Path("/dev/null"), lambda handle: handle.write("gone\n"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # written to, not renamed over
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    write_output(fifo, lambda handle: handle.write("streamed\n"))
    reader.join(10)
    assert received == ["streamed\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_write_failures_say_whose_they_are(tmp_path, monkeypatch) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="Not a directory"):
        write_output(tmp_path / "file" / "out.csv", lambda handle: handle.write("x"))

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "open", refused)
    with pytest.raises(OutputWriteError, match="Permission denied"):
        write_output(tmp_path / "out.csv", lambda handle: handle.write("x"))


# -- 25: output columns in the input, a rejected version ------------------------------------------------


@pytest.mark.parametrize("column", ["prediction", "probability_yes"])
def test_an_input_column_the_output_adds_is_refused_before_the_model_loads(
    mltp, tmp_path, monkeypatch, column
) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(registry, "load_model", no_loading)
    rows = [[*row, "old"] for row in ROWS]
    content = "\n".join(",".join(row) for row in [[*COLUMNS, column], *rows]) + "\n"
    result, out = _predict(mltp, tmp_path, "collides.csv", content)
    _assert_one_line(result, 2, f"has column(s) the output adds: {column}: rename or drop them")
    assert not out.exists()


def test_a_rejected_version_predicts_with_a_warning(store, mltp, tmp_path) -> None:
    version = store.register().version
    registry.set_approval(store("s3"), MODELS, MODEL, version, "Rejected", actor="test", reason="drifts")
    (tmp_path / "rows.csv").write_text(_csv(ROWS))
    result = mltp("predict", f"{MODEL}:{version}", tmp_path / "rows.csv", "-o", tmp_path / "out.csv")
    assert result.exit_code == 0, result.stderr
    assert result.lines == [
        f"mltp: warning: {MODEL}:{version} is Rejected (drifts, by test); predicting with it anyway"
    ]
    assert len(pd.read_csv(tmp_path / "out.csv")) == len(ROWS)
