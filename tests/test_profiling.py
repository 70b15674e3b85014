from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mltp.dataset_catalog import task_hint
from mltp.profiling import (
    CAST_HEAD_VALUES,
    EXACT_DISTINCT_LIMIT,
    ColumnProfile,
    HyperLogLog,
    Profiler,
    _has_leading_zeros,
    arrow_type,
)


def profile_of(*batches: list) -> ColumnProfile:
    column = ColumnProfile("c")
    for values in batches:
        column.update(pa.array(values, type=pa.string()))
    return column


@pytest.mark.parametrize(
    ("batches", "expected_type"),
    [
        ([["1", "2", "3"]], "integer"),
        ([["1", "2"], ["2.5", None]], "float"),  # widened in a later batch
        ([["1.5", "2"], ["3"]], "float"),
        ([["1", "2"], ["x"]], "string"),  # a word late in the file makes the column text
        ([["true", "false"], ["true"]], "boolean"),
        ([["2024-01-01", "2024-02-03T10:00:00"]], "datetime"),
        ([["2024-01-01"], ["soon"]], "string"),
        ([[None, None], [None]], "empty"),
        ([[None], ["7"]], "integer"),
        ([["00733", "12345"]], "string"),  # codes with leading zeros keep them
        ([["12", "13"], ["007"]], "string"),
        ([["0", "0.5", "10"]], "float"),  # a zero alone, or before a point, is a number
        ([["2024-01-01T00:00:00Z", "2024-01-02T10:00:00+02:00"]], "datetime_utc"),
        ([["2024-01-01T00:00:00Z"], ["2024-01-01"]], "string"),  # zoned and naive mixed: text
    ],
)
def test_type_inference_across_batches(batches, expected_type) -> None:
    assert profile_of(*batches).type == expected_type


def test_nulls_min_max_and_exact_distinct() -> None:
    column = profile_of(["3", None, "1"], ["2", "3", None])
    assert column.as_dict() == {
        "name": "c",
        "type": "integer",
        "nulls": 2,
        "distinct": 3,
        "distinct_exact": True,
        "min": 1,
        "max": 3,
    }


def test_widening_to_float_keeps_exact_counts_and_float_bounds() -> None:
    column = profile_of(["1", "2"], ["2.0", "2.5"])
    assert (column.type, column.distinct, column.distinct_exact) == ("float", 3, True)
    assert (column.as_dict()["min"], column.as_dict()["max"]) == (1.0, 2.5)


def test_text_has_no_bounds() -> None:
    column = profile_of(["5", "6"], ["n/a-ish"])
    assert (column.min, column.max) == (None, None)


@pytest.mark.parametrize(
    ("tail", "expected_type"),
    [(["x"], "string"), (["2.5"], "float"), (["7"], "integer"), (["2024-01-01"], "string")],
)
def test_a_value_past_the_head_the_cast_tries_first_still_decides_the_type(tail, expected_type) -> None:
    """The head of a batch is cast first to refuse a type cheaply; the rest of the batch still counts."""
    head = [str(number) for number in range(CAST_HEAD_VALUES * 3)]
    assert profile_of(head + tail).type == expected_type
    assert profile_of(tail + head).type == expected_type


def test_a_many_valued_first_batch_is_an_estimate_at_once() -> None:
    column = ColumnProfile("ids")
    column.update(pa.array(np.arange(EXACT_DISTINCT_LIMIT + 1)))
    assert not column.distinct_exact
    assert column.distinct == pytest.approx(EXACT_DISTINCT_LIMIT + 1, rel=0.03)
    exact = ColumnProfile("ids")
    exact.update(pa.array(np.arange(EXACT_DISTINCT_LIMIT) % 7))
    assert exact.distinct_exact and exact.distinct == 7


def test_many_distinct_values_become_an_estimate() -> None:
    column = ColumnProfile("ids")
    values = np.arange(EXACT_DISTINCT_LIMIT * 5)
    for chunk in np.array_split(values, 10):
        column.update(pa.array(chunk))
    assert not column.distinct_exact
    assert column.distinct == pytest.approx(len(values), rel=0.03)


@pytest.mark.parametrize(
    "values",
    [
        ["0", "10", "0.5", "-07", "", "a0"],  # none: a lone zero, a decimal, a sign, empty, not first
        ["1", "", "07"],  # after an empty value
        ["07", "1"],
        ["1", "00"],
        ["é0", "09x"],  # multi-byte text before it
    ],
)
@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string()])
def test_leading_zeros_are_read_from_every_value_of_a_slice(values, text_type) -> None:
    def regex(array) -> bool:
        return any(re.match(r"0[0-9]", value) for value in array.to_pylist())

    array = pa.array(["09", *values, "08"], type=text_type)  # codes at both ends, cut off by the slice
    for sliced in (array[1:-1], array[2:-1], array[1:-2]):
        assert _has_leading_zeros(sliced) == regex(sliced)


def test_nan_is_no_bound() -> None:
    column = profile_of(["1.5", "nan"], ["NaN", "-2"])
    assert (column.type, column.min, column.max) == ("float", -2.0, 1.5)


def test_hyperloglog_registers_hold_the_leftmost_one_bit() -> None:
    sketch = HyperLogLog(p=4)  # 4 index bits, 60 bits ranked
    sketch.add(np.array([(1 << 60) + (1 << 59), (2 << 60) + 1, 3 << 60], dtype=np.uint64))
    assert sketch.registers[1:4].tolist() == [1, 60, 61]  # leftmost bit first, last bit, none at all


@pytest.mark.parametrize("true_count", [10, 1_000, 100_000, 1_000_000])
def test_hyperloglog_error_is_small(true_count) -> None:
    sketch = HyperLogLog()
    sketch.add(pd.util.hash_array(np.arange(true_count)))
    assert sketch.estimate() == pytest.approx(true_count, rel=0.03)


def test_typed_parquet_columns_keep_their_type() -> None:
    profiler = Profiler(["n", "f", "b", "t", "s"])
    profiler.update(
        pa.record_batch(
            [
                pa.array([1, 2, None]),
                pa.array([0.5, None, 1.5]),
                pa.array([True, False, True]),
                pa.array(pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"])),
                pa.array(["a", "b", "a"]).dictionary_encode(),
            ],
            names=["n", "f", "b", "t", "s"],
        )
    )
    assert [c.type for c in profiler.columns] == ["integer", "float", "boolean", "datetime", "string"]
    assert profiler.rows == 3
    assert profiler.column("s").distinct == 2


@pytest.mark.parametrize(
    ("values", "hint"),
    [
        (["a", "b", "a"], "classification"),
        (["true", "false"], "classification"),
        (["0", "1", "1", "0"], "classification"),
        ([str(i) for i in range(500)], "regression"),
        (["0.5", "1.25"], "regression"),
    ],
)
def test_task_hint(values, hint) -> None:
    assert task_hint(profile_of(values).as_dict()) == hint


def test_zoned_timestamps_are_reported_as_utc_dates() -> None:
    profile = profile_of(["2024-01-01T00:00:00Z"]).as_dict()
    assert (profile["type"], profile["timezone"]) == ("datetime", "UTC")
    assert arrow_type(profile) == pa.timestamp("us", tz="UTC")
    assert arrow_type(profile_of(["2024-01-01"]).as_dict()) == pa.timestamp("us")


@pytest.mark.parametrize(
    "values",
    [
        pa.array([[1, 2], None, [3]]),
        pa.array([{"x": 1}, {"x": 2}, None]),
        pa.array([[("k", 1)], None, []], type=pa.map_(pa.string(), pa.int64())),
    ],
    ids=["list", "struct", "map"],
)
def test_nested_columns_are_counted_not_hashed(values) -> None:
    profiler = Profiler(["n"])
    profiler.update(pa.record_batch([values], names=["n"]))
    profile = profiler.column("n").as_dict()
    assert (profile["type"], profile["nulls"], profile["distinct"]) == ("nested", 1, None)
