"""Avro files whose values have no Arrow column type (unions of several non-null types, records
that contain themselves, `duration`) and Parquet durations, as the JSON a consumer reads back.

Files are written by fastavro and pyarrow, read by the readers and encoded by the encoders the
daemon uses; each expected value is written out by hand from the documented mapping.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import math
import struct
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdfsread.base import LocalFile
from pipeline.encoders.avro import AvroBlockEncoder
from pipeline.encoders.json import JsonEncoder, JsonOptions
from pipeline.encoders.keys import KeyEncoder
from pipeline.readers import open_reader

UTC = dt.UTC


def _avro_file(tmp_path: Path, schema: Any, records: list[Any], codec: str = "null",
               block_records: int = 2) -> Path:
    buf = io.BytesIO()
    w = fastavro.write.Writer(buf, fastavro.parse_schema(schema), codec=codec)
    for i, rec in enumerate(records):
        w.write(rec)
        if (i + 1) % block_records == 0:
            w.flush()
    w.flush()
    path = tmp_path / "f.avro"
    path.write_bytes(buf.getvalue())
    return path


def _json_rows(path: Path, options: JsonOptions | None = None, max_rows: int = 3) -> list[bytes]:
    with LocalFile(path) as f:
        reader = open_reader(f)
        enc = JsonEncoder(options)
        return [v for unit in reader.units(max_rows=max_rows) for v in enc.encode(unit.batch)]


def _read_back(path: Path, options: JsonOptions | None = None) -> list[Any]:
    return [json.loads(v) for v in _json_rows(path, options)]


UNION3 = {"type": "record", "name": "R", "fields": [
    {"name": "id", "type": "long"},
    {"name": "u", "type": ["null", "string", "long"]},
    {"name": "tag", "type": ["null", "string"]},
]}


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy", "zstandard"])
def test_union_of_several_types_is_branch_wrapped_and_null_stays_null(tmp_path: Path,
                                                                       codec: str) -> None:
    records = [{"id": 1, "u": "a", "tag": "x"}, {"id": 2, "u": None, "tag": None},
               {"id": 3, "u": 5, "tag": "y"}, {"id": 4, "u": "", "tag": None},
               {"id": 5, "u": -(2**63), "tag": "z"}]
    path = _avro_file(tmp_path, UNION3, records, codec)
    assert _json_rows(path) == [
        b'{"id":1,"u":{"string":"a"},"tag":"x"}',
        b'{"id":2,"u":null,"tag":null}',
        b'{"id":3,"u":{"long":5},"tag":"y"}',
        b'{"id":4,"u":{"string":""},"tag":null}',
        b'{"id":5,"u":{"long":-9223372036854775808},"tag":"z"}',
    ]
    # The options apply inside unions as to every column.
    assert _json_rows(path, JsonOptions(int64_as_string=True))[2] == (
        b'{"id":"3","u":{"long":"5"},"tag":"y"}')


def test_union_branches_a_plain_value_would_confuse(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": ["int", "string"]},
        {"name": "b", "type": ["string", "bytes"]},
        {"name": "c", "type": ["int", "long", "float", "double", "boolean"]},
        {"name": "d", "type": [{"type": "enum", "name": "Color", "symbols": ["RED"]}, "string"]},
    ]}
    records = [
        {"a": 1, "b": "aGk=", "c": ("int", 1), "d": "RED"},
        {"a": "1", "b": b"hi", "c": ("long", 1), "d": ("string", "RED")},
        {"a": 2, "b": "", "c": 1.5, "d": "RED"},
        {"a": "x", "b": b"", "c": True, "d": "RED"},
    ]
    path = _avro_file(tmp_path, schema, records)
    assert _read_back(path) == [
        {"a": {"int": 1}, "b": {"string": "aGk="}, "c": {"int": 1}, "d": {"Color": "RED"}},
        {"a": {"string": "1"}, "b": {"bytes": "aGk="}, "c": {"long": 1}, "d": {"string": "RED"}},
        {"a": {"int": 2}, "b": {"string": ""}, "c": {"double": 1.5}, "d": {"Color": "RED"}},
        {"a": {"string": "x"}, "b": {"bytes": ""}, "c": {"boolean": True}, "d": {"Color": "RED"}},
    ]


def test_unions_of_records_name_the_record_by_its_full_name(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "Event", "namespace": "com.acme", "fields": [
        {"name": "id", "type": "int"},
        {"name": "payload", "type": [
            "null",
            {"type": "record", "name": "Click", "fields": [{"name": "x", "type": "int"}]},
            {"type": "record", "name": "View", "namespace": "com.other",
             "fields": [{"name": "x", "type": "int"}]},
        ]},
        # a record defined inside the union, used again by a field Arrow can hold
        {"name": "last_click", "type": ["null", "Click"]},
    ]}
    records = [{"id": 1, "payload": ("com.acme.Click", {"x": 1}), "last_click": {"x": 9}},
               {"id": 2, "payload": ("com.other.View", {"x": 1}), "last_click": None},
               {"id": 3, "payload": None, "last_click": None}]
    path = _avro_file(tmp_path, schema, records)
    assert _read_back(path) == [
        {"id": 1, "payload": {"com.acme.Click": {"x": 1}}, "last_click": {"x": 9}},
        {"id": 2, "payload": {"com.other.View": {"x": 1}}, "last_click": None},
        {"id": 3, "payload": None, "last_click": None},
    ]


def test_nested_unions(tmp_path: Path) -> None:
    inner = {"type": "record", "name": "Inner", "fields": [
        {"name": "v", "type": ["null", "int", "string"]}]}
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "list", "type": {"type": "array", "items": ["null", "long", "string"]}},
        {"name": "map", "type": {"type": "map", "values": ["boolean", "double"]}},
        {"name": "deep", "type": ["null", inner, {"type": "array", "items": "Inner"},
                                  {"type": "map", "values": "string"}]},
        {"name": "rec", "type": {"type": "record", "name": "Outer", "fields": [
            {"name": "i", "type": "Inner"}, {"name": "n", "type": "int"}]}},
    ]}
    records = [
        {"list": [1, None, "two"], "map": {"t": True, "d": 0.25},
         "deep": ("Inner", {"v": None}), "rec": {"i": {"v": 7}, "n": 1}},
        {"list": [], "map": {}, "deep": [{"v": "s"}, {"v": 3}], "rec": {"i": {"v": "q"}, "n": 2}},
        {"list": [None], "map": {"k": False}, "deep": {"a": "b"}, "rec": {"i": {"v": None}, "n": 3}},
        {"list": ["x"], "map": {"x": 1e300}, "deep": None, "rec": {"i": {"v": -1}, "n": 4}},
    ]
    path = _avro_file(tmp_path, schema, records)
    assert _read_back(path) == [
        {"list": [{"long": 1}, None, {"string": "two"}], "map": {"t": {"boolean": True},
                                                               "d": {"double": 0.25}},
         "deep": {"Inner": {"v": None}}, "rec": {"i": {"v": {"int": 7}}, "n": 1}},
        {"list": [], "map": {}, "deep": {"array": [{"v": {"string": "s"}}, {"v": {"int": 3}}]},
         "rec": {"i": {"v": {"string": "q"}}, "n": 2}},
        {"list": [None], "map": {"k": {"boolean": False}}, "deep": {"map": {"a": "b"}},
         "rec": {"i": {"v": None}, "n": 3}},
        {"list": [{"string": "x"}], "map": {"x": {"double": 1e300}}, "deep": None,
         "rec": {"i": {"v": {"int": -1}}, "n": 4}},
    ]


def _linked(values: list[int]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = None
    for v in reversed(values):
        node = {"value": v, "next": node}
    return node


def test_recursive_records_a_list_and_a_tree(tmp_path: Path) -> None:
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "value", "type": "long"}, {"name": "next", "type": ["null", "Node"]}]}
    path = _avro_file(tmp_path, node, [_linked([1, 2, 3]), _linked([4]), _linked(list(range(300)))])
    rows = _read_back(path)
    assert rows[:2] == [{"value": 1, "next": {"value": 2, "next": {"value": 3, "next": None}}},
                        {"value": 4, "next": None}]
    assert rows[2] == _linked(list(range(300)))  # deep nesting, every link

    tree = {"type": "record", "name": "Tree", "fields": [
        {"name": "label", "type": "string"},
        {"name": "children", "type": {"type": "array", "items": "Tree"}},
        {"name": "attrs", "type": {"type": "map", "values": "Tree"}}]}
    schema = {"type": "record", "name": "Doc", "fields": [
        {"name": "id", "type": "int"}, {"name": "root", "type": tree},
        {"name": "alt", "type": ["null", "Tree"]}]}
    leaf = {"label": "leaf", "children": [], "attrs": {}}
    records = [{"id": 1, "root": {"label": "r", "children": [leaf, leaf], "attrs": {"k": leaf}},
                "alt": None},
               {"id": 2, "root": leaf, "alt": {"label": "a", "children": [leaf], "attrs": {}}}]
    path = _avro_file(tmp_path, schema, records, "deflate")
    assert _read_back(path) == records


def test_mutually_recursive_records(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "A", "fields": [
        {"name": "n", "type": "int"},
        {"name": "b", "type": ["null", {"type": "record", "name": "B", "fields": [
            {"name": "a", "type": ["null", "A"]}]}]}]}
    records = [{"n": 1, "b": {"a": {"n": 2, "b": {"a": None}}}}, {"n": 3, "b": None}]
    path = _avro_file(tmp_path, schema, records)
    assert _read_back(path) == records


def test_logical_types_inside_read_as_they_do_in_plain_columns(tmp_path: Path) -> None:
    """A value inside a union gives the same JSON text as the same value in a column of its
    own (read through Arrow), with the options too."""
    types: dict[str, Any] = {
        "ts_ms": {"type": "long", "logicalType": "timestamp-millis"},
        "ts_us": {"type": "long", "logicalType": "timestamp-micros"},
        "local_ms": {"type": "long", "logicalType": "local-timestamp-millis"},
        "day": {"type": "int", "logicalType": "date"},
        "t_ms": {"type": "int", "logicalType": "time-millis"},
        "t_us": {"type": "long", "logicalType": "time-micros"},
        "dec": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 3},
        "decf": {"type": "fixed", "name": "F9", "size": 9, "logicalType": "decimal",
                 "precision": 20, "scale": 2},
        "uid": {"type": "string", "logicalType": "uuid"},
        "color": {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]},
        "digest": {"type": "fixed", "name": "Digest", "size": 3},
        "raw": "bytes",
        "f32": "float",
        "f64": "double",
        "text": "string",
    }
    values = [{
        "ts_ms": dt.datetime(2024, 2, 29, 23, 59, 58, 123000, tzinfo=UTC),
        "ts_us": dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "local_ms": dt.datetime(2024, 1, 2, 3, 4, 5, 6000),
        "day": dt.date(1900, 1, 1), "t_ms": dt.time(1, 2, 3, 456000),
        "t_us": dt.time(23, 59, 59, 999999), "dec": decimal.Decimal("-123456789.123"),
        "decf": decimal.Decimal("0.05"), "uid": str(uuid.UUID(int=2**127 + 5)), "color": "BLUE",
        "digest": b"\x00\xff\x10", "raw": b"\x00\x01\xfe", "f32": 0.1, "f64": 1e-310,
        "text": 'quote " back \\ nl \n tab \t ctl \x01 é 😀',
    }, {
        "ts_ms": dt.datetime(1, 1, 1, tzinfo=UTC), "ts_us": dt.datetime(9999, 12, 31, tzinfo=UTC),
        "local_ms": dt.datetime(1970, 1, 1), "day": dt.date(9999, 12, 31), "t_ms": dt.time(0),
        "t_us": dt.time(0, 0, 0, 1), "dec": decimal.Decimal("0.000"), "decf": decimal.Decimal("-1"),
        "uid": str(uuid.UUID(int=0)), "color": "RED", "digest": b"abc", "raw": b"",
        "f32": float("-inf"), "f64": float("nan"), "text": "",
    }]
    plain = {"type": "record", "name": "P", "fields": [
        {"name": k, "type": t} for k, t in types.items()]}
    # the same types, each in a union with a second non-null branch
    unioned = {"type": "record", "name": "U", "fields": [
        {"name": k, "type": ["null", t, {"type": "array", "items": "int"}]}
        for k, t in types.items()]}
    for options in (JsonOptions(), JsonOptions(timestamps="epoch_ms", decimal_as_number=True,
                                               int64_as_string=True)):
        p = _avro_file(tmp_path, plain, values)
        want = [json.loads(v, parse_float=decimal.Decimal) for v in _json_rows(p, options)]
        u = _avro_file(tmp_path, unioned, values)
        got = [json.loads(v, parse_float=decimal.Decimal) for v in _json_rows(u, options)]
        names = {k: (t if isinstance(t, str) else t.get("name", t["type"]))
                 for k, t in types.items()}
        wrapped = [{k: {names[k]: v} for k, v in row.items()} for row in want]
        assert got == wrapped
    # and the texts are the documented ones
    first = json.loads(_json_rows(u)[0])
    assert first["ts_ms"] == {"long": "2024-02-29T23:59:58.123Z"}
    assert first["local_ms"] == {"long": "2024-01-02T03:04:05.006"}
    assert first["t_ms"] == {"int": "01:02:03.456000000"}
    assert first["dec"] == {"bytes": "-123456789.123"}
    assert first["decf"] == {"F9": "0.05"}
    assert first["uid"] == {"string": str(uuid.UUID(int=2**127 + 5))}
    assert first["digest"] == {"Digest": "AP8Q"}
    assert first["f32"] == {"float": 0.1}
    second = json.loads(_json_rows(u)[1])
    assert second["f32"] == {"float": "-Infinity"} and second["f64"] == {"double": "NaN"}
    assert second["ts_ms"] == {"long": "0001-01-01T00:00:00.000Z"}


def _duration(months: int, days: int, millis: int) -> bytes:
    return struct.pack("<III", months, days, millis)


def test_avro_duration_is_iso_8601_with_its_three_parts(tmp_path: Path) -> None:
    d = {"type": "fixed", "name": "Dur", "size": 12, "logicalType": "duration"}
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "d", "type": d}, {"name": "maybe", "type": ["null", "Dur"]}]}
    records = [{"d": _duration(1, 2, 3), "maybe": None},
               {"d": _duration(0, 0, 0), "maybe": _duration(14, 0, 90061001)},
               {"d": _duration(2**32 - 1, 2**32 - 1, 2**32 - 1), "maybe": None}]
    path = _avro_file(tmp_path, schema, records)
    assert _read_back(path) == [
        {"d": "P1M2DT0.003S", "maybe": None},
        {"d": "P0M0DT0.000S", "maybe": "P14M0DT90061.001S"},
        {"d": "P4294967295M4294967295DT4294967.295S", "maybe": None},
    ]


def test_keys_from_a_plain_column_of_such_a_file(tmp_path: Path) -> None:
    records = [{"id": 7, "u": 1, "tag": "a"}, {"id": 8, "u": "s", "tag": None}]
    path = _avro_file(tmp_path, UNION3, records)
    with LocalFile(path) as f:
        unit = next(open_reader(f).units())
    assert KeyEncoder(["id"]).encode(unit.batch) == [b"7", b"8"]
    assert KeyEncoder(["tag", "u"]).encode(unit.batch) == [b'["a",{"long":1}]',
                                                           b'[null,{"string":"s"}]']


def test_value_format_avro_re_frames_the_records_unchanged(tmp_path: Path) -> None:
    """value_format = "avro" sends the file's own records: they decode with the writer schema
    to what was written, unions and recursion included."""
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "u", "type": ["null", "string", "long", "Node"]},
        {"name": "next", "type": ["null", "Node"]}]}
    records = [{"u": "a", "next": {"u": 1, "next": None}}, {"u": None, "next": None},
               {"u": {"u": 5, "next": None}, "next": {"u": "x", "next": {"u": None, "next": None}}}]
    path = _avro_file(tmp_path, node, records, "deflate")
    with LocalFile(path) as f:
        reader = open_reader(f)
        enc = AvroBlockEncoder(42, reader.avro_schema, reader.codec)  # type: ignore[attr-defined]
        values = [v for unit in reader.units(max_rows=2) for v in enc.encode(unit.avro_blocks or b"")]
    parsed = fastavro.parse_schema(node)
    assert all(v[:5] == b"\x00\x00\x00\x00\x2a" for v in values)
    assert [fastavro.schemaless_reader(io.BytesIO(v[5:]), parsed, None) for v in values] == records


@pytest.mark.parametrize("unit,values,texts", [
    ("s", [0, 90, -1, 2**40], ["PT0S", "PT90S", "-PT1S", "PT1099511627776S"]),
    ("ms", [1500, -5, 0, 86_400_000], ["PT1.500S", "-PT0.005S", "PT0.000S", "PT86400.000S"]),
    ("us", [1, -1_000_001, 2**63 - 1],
     ["PT0.000001S", "-PT1.000001S", "PT9223372036854.775807S"]),
    ("ns", [1, -(2**63), 123_456_789_012],
     ["PT0.000000001S", "-PT9223372036.854775808S", "PT123.456789012S"]),
])
def test_parquet_duration_names_its_unit(tmp_path: Path, unit: str, values: list[int],
                                         texts: list[str]) -> None:
    table = pa.table({"d": pa.array([*values, None], pa.int64()).cast(pa.duration(unit))})
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    with LocalFile(path) as f:
        reader = open_reader(f)
        got = [json.loads(v) for u in reader.units() for v in JsonEncoder().encode(u.batch)]
    assert reader.schema.field("d").type == pa.duration(unit)
    assert got == [{"d": t} for t in texts] + [{"d": None}]
    # lossless: the text gives back the count of the unit
    per = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[unit]
    for text, value in zip(texts, values, strict=True):
        sign = -1 if text.startswith("-") else 1
        secs = decimal.Decimal(text.lstrip("-")[2:-1])
        assert sign * secs * per == value and not math.isnan(float(secs))
