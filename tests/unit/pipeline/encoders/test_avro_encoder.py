"""Confluent-framed Avro values: decoding each value with the derived schema gives back the
source row, in order; Avro source blocks are re-framed record for record."""

from __future__ import annotations

import datetime as dt
import io
import struct
from decimal import Decimal
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from hdfswatch.framing import encode_zigzag
from pipeline.encoders import make_value_encoder
from pipeline.encoders.avro import (
    AvroBlockEncoder,
    AvroEncoder,
    AvroSchemaError,
    arrow_to_avro_schema,
    compile_avro_schema,
    encode_avro_blocks,
    read_block_head,
)

UTC = dt.UTC


def _batch() -> pa.RecordBatch:
    point = pa.struct([pa.field("x", pa.float64()), pa.field("label", pa.string(), False)])
    columns: dict[str, tuple[pa.DataType, list[Any]]] = {
        "i8": (pa.int8(), [-128, 127, None]),
        "u16": (pa.uint16(), [0, 65535, 1]),
        "i32": (pa.int32(), [-(2**31), 2**31 - 1, None]),
        "u32": (pa.uint32(), [0, 2**32 - 1, None]),
        "i64": (pa.int64(), [-(2**63), 2**63 - 1, 0]),
        "u64": (pa.uint64(), [0, 2**63 - 1, None]),
        "f32": (pa.float32(), [0.5, -2.0, None]),
        "f64": (pa.float64(), [0.1, float("inf"), None]),
        "dec": (pa.decimal128(38, 10), [Decimal("-1234567890123456789012345678.0123456789"),
                                        Decimal("0.0000000001"), Decimal("-0.0000000001")]),
        "dec2": (pa.decimal128(5, 2), [Decimal("-1.28"), Decimal("1.27"), Decimal("1.28")]),
        "s": (pa.string(), ["plain", "é 日本 🎉 \x00", None]),
        "b": (pa.binary(), [b"\x00\xff", b"", None]),
        "fb": (pa.binary(3), [b"abc", b"\x00\x01\x02", None]),
        "d32": (pa.date32(), [dt.date(1970, 1, 1), dt.date(1969, 12, 31), None]),
        "t32": (pa.time32("ms"), [dt.time(0, 0), dt.time(23, 59, 59, 999000), None]),
        "t64": (pa.time64("us"), [dt.time(12, 30, 5, 123456), None, dt.time(0, 0, 0, 1)]),
        "ts_ms": (pa.timestamp("ms", tz="UTC"), [dt.datetime(2024, 6, 1, 12, 0, 0, 1000,
                                                             tzinfo=UTC), None, None]),
        "ts_us": (pa.timestamp("us", tz="UTC"), [dt.datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
                                                 dt.datetime(2024, 1, 1, tzinfo=UTC), None]),
        "ts_local": (pa.timestamp("us"), [dt.datetime(2024, 3, 10, 2, 30), None,
                                          dt.datetime(1969, 12, 31, 23, 59, 59, 999999)]),
        "bool": (pa.bool_(), [True, False, None]),
        "nul": (pa.null(), [None, None, None]),
        "point": (point, [{"x": 1.5, "label": "a"}, None, {"x": None, "label": ""}]),
        "ints": (pa.list_(pa.int64()), [[1, None, 3], [], None]),
        "pts": (pa.large_list(point), [[{"x": 2.0, "label": "p"}, None], None, []]),
        "m": (pa.map_(pa.string(), pa.float64()), [[("k", 1.25), ("z", None)], [], None]),
        "mi": (pa.map_(pa.int32(), pa.string()), [[(1, "x"), (-2, None)], None, []]),
        "dict": (pa.dictionary(pa.int8(), pa.string()), ["red", None, "red"]),
    }
    arrays = [pa.array(values, type=t) for t, values in columns.values()]
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def _expected(value: Any, t: pa.DataType) -> Any:
    """What fastavro gives back for a source value (Avro has no time zones, maps keyed by
    non-strings become lists of {key, value} records)."""
    if value is None:
        return None
    if pa.types.is_dictionary(t):
        return _expected(value, t.value_type)
    if pa.types.is_struct(t):
        return {t.field(i).name: _expected(value[t.field(i).name], t.field(i).type)
                for i in range(t.num_fields)}
    if pa.types.is_map(t):
        if pa.types.is_string(t.key_type):
            return {k: _expected(v, t.item_type) for k, v in value}
        return [{"key": k, "value": _expected(v, t.item_type)} for k, v in value]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [_expected(v, t.value_type) for v in value]
    return value


def _decode(values: list[bytes], schema: dict[str, Any], schema_id: int) -> list[dict[str, Any]]:
    parsed = fastavro.parse_schema(schema)
    rows = []
    for value in values:
        assert value[0] == 0
        assert struct.unpack(">I", value[1:5])[0] == schema_id
        buf = io.BytesIO(value[5:])
        rows.append(fastavro.schemaless_reader(buf, parsed, None))
        assert buf.read() == b"", "each value holds exactly one record"
    return rows


def _assert_round_trip(batch: pa.RecordBatch) -> None:
    schema = arrow_to_avro_schema(batch.schema, "Row", "test")
    values = AvroEncoder(42, schema).encode(batch)
    rows = _decode(values, schema, 42)
    assert len(rows) == batch.num_rows
    for got, row in zip(rows, batch.to_pylist(), strict=True):
        for field in batch.schema:
            want = _expected(row[field.name], field.type)
            have = got[field.name]
            if pa.types.is_timestamp(field.type) and want is not None:
                if field.type.tz:
                    assert have == want, field.name
                else:  # local-timestamp-*: fastavro gives naive datetimes
                    assert have == want.replace(tzinfo=None), field.name
            elif field.name == "f32" and want is not None:
                assert have == pytest.approx(want), field.name
            else:
                assert have == want, (field.name, have, want)


def test_every_type_round_trips_through_the_derived_schema() -> None:
    _assert_round_trip(_batch())


def test_sliced_batches() -> None:
    batch = _batch()
    for offset in range(3):
        _assert_round_trip(batch.slice(offset, 3 - offset))


def test_schema_mapping() -> None:
    schema = pa.schema([
        pa.field("id", pa.int64(), False),
        pa.field("name", pa.string()),
        pa.field("at", pa.timestamp("us", tz="UTC"), False),
        pa.field("amount", pa.decimal128(18, 2)),
        pa.field("tags", pa.list_(pa.field("item", pa.string(), False)), False),
        pa.field("addr", pa.struct([pa.field("zip", pa.int32(), False)])),
    ])
    assert arrow_to_avro_schema(schema, "my-topic value") == {
        "type": "record",
        "name": "my_topic_value",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "name", "type": ["null", "string"], "default": None},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "amount", "type": ["null", {"type": "bytes", "logicalType": "decimal",
                                                 "precision": 18, "scale": 2}], "default": None},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "addr", "type": ["null", {"type": "record", "name": "my_topic_value_addr",
                                               "fields": [{"name": "zip", "type": "int"}]}],
             "default": None},
        ],
    }


def test_bad_names_and_schema_mismatch_are_reported() -> None:
    with pytest.raises(AvroSchemaError, match="'my col' is not a valid Avro field name"):
        arrow_to_avro_schema(pa.schema([pa.field("my col", pa.int32())]), "R")
    schema = arrow_to_avro_schema(pa.schema([pa.field("a", pa.int32())]), "R")
    encoder = make_value_encoder("avro", schema_id=1, avro_schema=schema)
    batch = pa.RecordBatch.from_pydict({"a": pa.array([1], pa.int64())})
    with pytest.raises(AvroSchemaError, match="does not give the registered Avro schema"):
        encoder.encode(batch)


def test_uint64_above_long_range_is_an_error() -> None:
    batch = pa.RecordBatch.from_pydict({"u": pa.array([2**63], pa.uint64())})
    encoder = AvroEncoder(1, arrow_to_avro_schema(batch.schema, "R"))
    with pytest.raises(OverflowError, match="does not fit an Avro long"):
        encoder.encode(batch)


# --------------------------------------------------------------------------- Avro sources

WRITER_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Event", "namespace": "src",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "score", "type": ["null", "float", "double", "string"]},
        {"name": "ok", "type": "boolean"},
        {"name": "blob", "type": "bytes"},
        {"name": "attrs", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "children", "type": {"type": "array", "items": "Event"}},
        {"name": "again", "type": ["null", "src.Kind"]},
        {"name": "nothing", "type": "null"},
    ],
}


def _records(n: int) -> list[dict[str, Any]]:
    def one(i: int, depth: int) -> dict[str, Any]:
        return {
            "id": i * 7919 - 5000, "kind": "AB"[i % 2], "digest": bytes([i % 256]) * 4,
            "score": [None, 1.5, 2.25, "x" * (i % 5)][i % 4], "ok": bool(i % 3),
            "blob": bytes(range(i % 20)), "attrs": {f"k{j}": (None if j % 2 else j) for j in range(i % 4)},
            "children": [one(i + 1, depth + 1)] if depth < 2 and i % 3 == 0 else [],
            "again": None if i % 2 else "B", "nothing": None,
        }
    return [one(i, 0) for i in range(n)]


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy", "zstandard", "bzip2", "xz"])
def test_avro_file_blocks_are_reframed_record_for_record(codec: str) -> None:
    records = _records(500)
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(WRITER_SCHEMA), records, codec=codec,
                    sync_interval=2000)
    data = buf.getvalue()
    # the file's blocks, as the Avro reader hands them over: everything after the header
    header_end = _header_end(data)
    encoder = AvroBlockEncoder(9, WRITER_SCHEMA, codec)
    values = encoder.encode(data[header_end:])
    assert len(list(encoder.blocks(data[header_end:]))) > 1
    assert _decode(values, WRITER_SCHEMA, 9) == records


def test_blocks_with_the_wrong_record_count_are_refused() -> None:
    program = compile_avro_schema("long")
    block = b"\x02\x04\x06"  # three longs: 1, 2, 3
    assert encode_avro_blocks(program, [(block, 3)], b"") == [b"\x02", b"\x04", b"\x06"]
    with pytest.raises(ValueError, match="1 bytes after its 2 records"):
        encode_avro_blocks(program, [(block, 2)], b"")
    with pytest.raises(ValueError, match=r"ends inside a value|malformed"):
        encode_avro_blocks(program, [(block, 4)], b"")


@pytest.mark.parametrize("codec", ["deflate", "snappy", "zstandard"])
def test_a_block_that_does_not_decompress_is_a_value_error_naming_it(codec: str) -> None:
    """An encode error (the file is quarantined, named), not an unknown one retried."""
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(WRITER_SCHEMA), _records(50), codec=codec)
    data = bytearray(buf.getvalue())
    header_end = _header_end(bytes(data))
    blocks = data[header_end:]
    _, start, size = read_block_head(bytes(blocks))
    blocks[start:start + size] = bytes(size)  # the compressed data zeroed, the framing kept
    with pytest.raises(ValueError, match=f"block at byte 0 of the unit does not decompress \\({codec}\\)"):
        AvroBlockEncoder(9, WRITER_SCHEMA, codec).encode(bytes(blocks))


def _header_end(data: bytes) -> int:
    buf = io.BytesIO(data)
    fastavro.schemaless_reader(buf, fastavro.read.HEADER_SCHEMA, None)  # type: ignore[attr-defined]
    return buf.tell()


def test_an_array_count_past_the_bytes_left_is_refused_not_looped_over() -> None:
    """A corrupt count of items that take no bytes (here nulls) would keep the split busy for
    ages; a count past the bytes left of items that do take bytes is corrupt at once."""
    nulls = compile_avro_schema({"type": "array", "items": "null"})
    longs = compile_avro_schema({"type": "array", "items": "long"})
    huge = encode_zigzag(1 << 60) + b"\x00"  # 2**60 items, then the end of the array
    with pytest.raises(ValueError, match="array of 1152921504606846976 items"):
        encode_avro_blocks(nulls, [(huge, 1)], b"")
    with pytest.raises(ValueError, match="array of 5 items in 3 bytes"):
        encode_avro_blocks(longs, [(encode_zigzag(5) + b"\x02\x04\x00", 1)], b"")
    ok = encode_zigzag(3) + b"\x00"  # three nulls: no bytes each
    assert encode_avro_blocks(nulls, [(ok, 1)], b"") == [ok]
    three = encode_zigzag(3) + b"\x02\x04\x06\x00"
    assert encode_avro_blocks(longs, [(three, 1)], b"") == [three]



@pytest.mark.parametrize("field_type,value,reason", [
    ("string", encode_zigzag(2) + b"\xc3\x28", "string that is not UTF-8"),
    ("string", encode_zigzag(3) + b"\xed\xa0\x80", "string that is not UTF-8"),  # a surrogate
    ("boolean", b"\x02", "boolean that is neither 0 nor 1"),
    ({"type": "enum", "name": "Color", "symbols": ["A", "B"]}, encode_zigzag(2), "enum index 2 out of range"),
])
def test_records_split_without_decoding_are_still_checked_as_a_decoder_would(
        field_type: Any, value: bytes, reason: str) -> None:
    """Avro-to-Avro records reach Kafka without being decoded: what a decoder refuses is
    refused by the split too, so a corrupt record quarantines its file instead of reaching the
    consumers."""
    program = compile_avro_schema({"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"}, {"name": "f", "type": field_type}]})
    with pytest.raises(ValueError, match=reason):
        encode_avro_blocks(program, [(encode_zigzag(7) + value, 1)], b"")
    fine = {"string": encode_zigzag(3) + "né".encode(), "boolean": b"\x01"}.get(
        field_type if isinstance(field_type, str) else "", encode_zigzag(1))
    record = encode_zigzag(7) + fine
    assert encode_avro_blocks(program, [(record, 1)], b"") == [record]
