"""JSON values: every row comes back, in order, equal to the source row under the documented
mapping, for every Arrow type, nulls, nesting and sliced batches."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.encoders import JsonEncoder, JsonOptions, make_value_encoder

UTC = dt.UTC


def _all_types_batch() -> pa.RecordBatch:
    point = pa.struct([pa.field("x", pa.float64()), pa.field("label", pa.string())])
    columns: dict[str, tuple[pa.DataType, list[Any]]] = {
        "i8": (pa.int8(), [-128, 127, None]),
        "u8": (pa.uint8(), [0, 255, None]),
        "i16": (pa.int16(), [-32768, 32767, 0]),
        "i32": (pa.int32(), [-(2**31), 2**31 - 1, None]),
        "u32": (pa.uint32(), [0, 2**32 - 1, 7]),
        "i64": (pa.int64(), [-(2**63), 2**63 - 1, None]),
        "u64": (pa.uint64(), [0, 2**64 - 1, None]),
        "f32": (pa.float32(), [0.1, -3.4e38, None]),
        "f64": (pa.float64(), [0.1, 1e300, 5e-324]),
        "f64_special": (pa.float64(), [math.nan, math.inf, -math.inf]),
        "f64_whole": (pa.float64(), [1.0, -0.0, 1e16]),
        "dec": (pa.decimal128(38, 10), [Decimal("-1234567890123456789012345678.0123456789"),
                                        Decimal("0.0000000001"), None]),
        "dec0": (pa.decimal128(5, 0), [Decimal("-99999"), Decimal("0"), Decimal("42")]),
        "s": (pa.string(), ['plain', 'quote " back\\slash \n\t\x01 é 日本 🎉', None]),
        "ls": (pa.large_string(), ["large", "", None]),
        "b": (pa.binary(), [b"\x00\xff\x10", b"", None]),
        "fb": (pa.binary(3), [b"abc", b"\x00\x01\x02", None]),
        "d32": (pa.date32(), [dt.date(1970, 1, 1), dt.date(1969, 12, 31), dt.date(9999, 12, 31)]),
        "d64": (pa.date64(), [dt.date(2024, 2, 29), None, dt.date(1, 1, 1)]),
        "t32": (pa.time32("ms"), [dt.time(0, 0), dt.time(23, 59, 59, 999000), None]),
        "t64": (pa.time64("us"), [dt.time(12, 30, 5, 123456), None, dt.time(0, 0, 0, 1)]),
        "ts_s": (pa.timestamp("s", tz="UTC"), [dt.datetime(2024, 1, 1, tzinfo=UTC), None,
                                              dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)]),
        "ts_ms": (pa.timestamp("ms", tz="Europe/Paris"),
                  [dt.datetime(2024, 6, 1, 12, 0, 0, 1000, tzinfo=UTC), None, None]),
        "ts_us": (pa.timestamp("us", tz="UTC"),
                  [dt.datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
                   dt.datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC), None]),
        "ts_naive": (pa.timestamp("us"), [dt.datetime(2024, 3, 10, 2, 30), None,
                                          dt.datetime(1969, 12, 31, 23, 59, 59, 999999)]),
        "dur": (pa.duration("ms"), [dt.timedelta(milliseconds=-5), dt.timedelta(days=1), None]),
        "bool": (pa.bool_(), [True, False, None]),
        "nul": (pa.null(), [None, None, None]),
        "point": (point, [{"x": 1.5, "label": "a"}, None, {"x": None, "label": None}]),
        "ints": (pa.list_(pa.int64()), [[1, None, 3], [], None]),
        "pts": (pa.large_list(point), [[{"x": 2.0, "label": "p"}, None], None, []]),
        "fixed": (pa.list_(pa.int16(), 2), [[1, 2], None, [None, -1]]),
        "nested": (pa.list_(pa.list_(pa.string())), [[["a"], [], None], [], None]),
        "m": (pa.map_(pa.string(), pa.float64()), [[("k", 1.25), ("z", None)], [], None]),
        "mi": (pa.map_(pa.int32(), pa.list_(pa.string())), [[(1, ["x"]), (-2, None)], None, []]),
        "dict": (pa.dictionary(pa.int8(), pa.string()), ["red", None, "red"]),
    }
    arrays = [pa.array(values, type=t) for t, values in columns.values()]
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def _expected(value: Any, t: pa.DataType, opts: JsonOptions) -> Any:
    """The documented JSON mapping, written independently of the encoder."""
    if value is None:
        return None
    if pa.types.is_dictionary(t):
        return _expected(value, t.value_type, opts)
    if pa.types.is_floating(t):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if pa.types.is_float32(t):
            return value  # compared as float32 below
        return value
    if pa.types.is_integer(t):
        if opts.int64_as_string and t.bit_width == 64:
            return str(value)
        return value
    if pa.types.is_decimal(t):
        text = format(value, "f")
        if opts.decimal_as_number:
            return int(text) if t.scale <= 0 else Decimal(text)
        return text
    if pa.types.is_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_large_binary(t):
        return base64.b64encode(value).decode()
    if pa.types.is_timestamp(t):
        per = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[t.unit]
        digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[t.unit]
        naive = value.replace(tzinfo=None) if t.tz is None else value.astimezone(UTC).replace(tzinfo=None)
        count = (naive - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1) * per // 10**6
        if opts.timestamps != "iso":
            target = {"epoch_s": 1, "epoch_ms": 1000, "epoch_us": 10**6, "epoch_ns": 10**9}[opts.timestamps]
            return count * target // per
        text = naive.strftime("%Y-%m-%dT%H:%M:%S")
        if digits:
            text += "." + f"{count % per:0{digits}d}"
        return text + ("Z" if t.tz else "")
    if pa.types.is_date(t):
        return value.isoformat()
    if pa.types.is_time(t):
        digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[t.unit]
        text = value.strftime("%H:%M:%S")
        return text + ("." + f"{value.microsecond:06d}"[:digits] if digits else "")
    if pa.types.is_duration(t):
        per = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[t.unit]
        digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[t.unit]
        count = value // dt.timedelta(microseconds=1) * per // 10**6
        secs, frac = divmod(abs(count), per)
        return ("-" if count < 0 else "") + f"PT{secs}" + (f".{frac:0{digits}d}" if digits else "") + "S"
    if pa.types.is_struct(t):
        return {t.field(i).name: _expected(value[t.field(i).name], t.field(i).type, opts)
                for i in range(t.num_fields)}
    if pa.types.is_map(t):
        out = {}
        for k, v in value:
            key = _expected(k, t.key_type, opts)
            out[key if isinstance(key, str) else json.dumps(key)] = _expected(v, t.item_type, opts)
        return out
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_expected(v, t.value_type, opts) for v in value]
    return value


def _decode(data: bytes, opts: JsonOptions) -> Any:
    return json.loads(data, parse_float=Decimal if opts.decimal_as_number else float)


def _floats(value: Any) -> Any:
    """Decimals parsed from JSON numbers back to floats (for non-decimal columns)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    return value


def _assert_round_trip(batch: pa.RecordBatch, opts: JsonOptions) -> None:
    values = JsonEncoder(opts).encode(batch)
    assert len(values) == batch.num_rows
    for row, value in zip(batch.to_pylist(), values, strict=True):
        assert isinstance(value, bytes)
        got = _decode(value, opts)
        assert list(got) == batch.schema.names  # every column, in schema order
        for field in batch.schema:
            want = _expected(row[field.name], field.type, opts)
            have = _floats(got[field.name]) if not pa.types.is_decimal(field.type) else got[field.name]
            if pa.types.is_float32(field.type) and isinstance(want, float):
                assert pa.scalar(have, pa.float32()).as_py() == want, field.name
            else:
                assert have == want, (field.name, have, want)
                assert type(have) is type(want), (field.name, have, want)


@pytest.mark.parametrize("opts", [
    JsonOptions(),
    JsonOptions(timestamps="epoch_ms"),
    JsonOptions(timestamps="epoch_us", int64_as_string=True),
    JsonOptions(timestamps="epoch_ns"),
    JsonOptions(timestamps="epoch_s", decimal_as_number=True),
])
def test_every_type_round_trips(opts: JsonOptions) -> None:
    _assert_round_trip(_all_types_batch(), opts)


def test_sliced_batches_and_sliced_nested_arrays() -> None:
    batch = _all_types_batch()
    for offset in range(3):
        for length in range(3 - offset + 1):
            _assert_round_trip(batch.slice(offset, length), JsonOptions())


def test_iso_text_is_exact() -> None:
    batch = pa.RecordBatch.from_pydict({
        "ts": pa.array([0, -1, 1_700_000_000_123_456_789], pa.timestamp("ns", tz="UTC")),
        "f": pa.array([1.0, 0.30000000000000004, 123456789012345680.0]),
    })
    values = JsonEncoder().encode(batch)
    assert values == [
        b'{"ts":"1970-01-01T00:00:00.000000000Z","f":1.0}',
        b'{"ts":"1969-12-31T23:59:59.999999999Z","f":0.30000000000000004}',
        b'{"ts":"2023-11-14T22:13:20.123456789Z","f":1.2345678901234568e+17}',
    ]


def test_large_batches_keep_order() -> None:
    n = 200_000
    batch = pa.RecordBatch.from_pydict({"i": pa.array(range(n)),
                                        "s": pa.array([f"r{i}" for i in range(n)])})
    values = JsonEncoder().encode(batch)
    assert [json.loads(v)["i"] for v in values] == list(range(n))
    assert json.loads(values[-1]) == {"i": n - 1, "s": f"r{n - 1}"}


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="timestamps must be one of"):
        JsonOptions(timestamps="local")  # type: ignore[arg-type]


def test_factory() -> None:
    assert isinstance(make_value_encoder("json"), JsonEncoder)
    with pytest.raises(ValueError, match="unknown value format 'xml'"):
        make_value_encoder("xml")
    with pytest.raises(ValueError, match="registered schema id"):
        make_value_encoder("avro")


def test_unsupported_type_names_the_column() -> None:
    union = pa.UnionArray.from_sparse(pa.array([0, 1], pa.int8()),
                                      [pa.array([1, 2]), pa.array(["a", "b"])])
    batch = pa.RecordBatch.from_arrays([union], names=["u"])
    with pytest.raises(TypeError, match="column 'u'"):
        JsonEncoder().encode(batch)


@settings(max_examples=60, deadline=None)
@given(
    floats=st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.none(), min_size=1,
                    max_size=50),
    texts=st.lists(st.text() | st.none(), min_size=50, max_size=50),
    ints=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=50, max_size=50),
)
def test_random_values_round_trip_exactly(
    floats: list[float | None], texts: list[str | None], ints: list[int]
) -> None:
    n = len(floats)
    batch = pa.RecordBatch.from_pydict({
        "f": pa.array(floats, pa.float64()),
        "s": pa.array(texts[:n], pa.string()),
        "i": pa.array(ints[:n], pa.int64()),
        "nested": pa.array([{"f": [x], "s": t} for x, t in zip(floats, texts[:n], strict=True)]),
    })
    values = JsonEncoder().encode(batch)
    decoded = [json.loads(v) for v in values]
    for got, f, s, i in zip(decoded, floats, texts, ints, strict=False):
        assert got["f"] == f and (f is None or math.copysign(1, got["f"]) == math.copysign(1, f))
        assert got["s"] == s
        assert got["i"] == i
        assert got["nested"] == {"f": [f], "s": s}
