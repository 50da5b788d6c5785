"""Avro files with fields Arrow has no column type for (unions of several non-null types,
records that contain themselves, `duration`): every record once, in order, from every block;
such a field comes through as its own Avro encoding; bad data names the file, block and field."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from reader_samples import avro_bytes, write

from hdfsread.base import LocalFile
from pipeline.encoders.avro_json import AVRO_JSON_KEY
from pipeline.readers import CorruptFile, open_reader

SCHEMA: dict[str, Any] = {"type": "record", "name": "Row", "namespace": "t", "fields": [
    {"name": "id", "type": "long"},
    {"name": "either", "type": ["null", "string", "long"]},
    {"name": "list", "type": {"type": "record", "name": "Node", "fields": [
        {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}},
    {"name": "note", "type": ["null", "string"]},
]}


def _records(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        node: dict[str, Any] | None = None
        for v in reversed(range(i % 4)):
            node = {"v": v, "next": node}
        out.append({"id": i, "either": [None, f"s{i}", i * 1000][i % 3],
                    "list": {"v": -1, "next": node}, "note": None if i % 5 else f"n{i}"})
    return out


def _field_reader(name: str) -> Any:
    named: dict[str, Any] = {}
    fastavro.parse_schema(SCHEMA, named_schemas=named)
    field = next(f for f in SCHEMA["fields"] if f["name"] == name)
    return fastavro.parse_schema(field["type"], named_schemas=named, _write_hint=False)


def _rows(units: list[Any]) -> list[dict[str, Any]]:
    """The records back from the batches: wrapped fields decoded from their Avro bytes."""
    either, linked = _field_reader("either"), _field_reader("list")
    out = []
    for unit in units:
        for row in unit.batch.to_pylist():
            row["either"] = fastavro.schemaless_reader(io.BytesIO(row["either"]), either, None)
            row["list"] = fastavro.schemaless_reader(io.BytesIO(row["list"]), linked, None)
            out.append(row)
    return out


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy", "zstandard", "xz", "bzip2"])
def test_every_record_once_in_order(tmp_path: Path, codec: str) -> None:
    records = _records(100)
    path = write(tmp_path, "r.avro", avro_bytes(records, codec, block_records=7, schema=SCHEMA))
    with LocalFile(path) as f:
        reader = open_reader(f)
        units = list(reader.units(max_rows=15))
    assert _rows(units) == records
    schema = reader.schema
    assert schema.names == ["id", "either", "list", "note"]
    assert schema.field("id").type == pa.int64() and not schema.field("id").metadata
    assert schema.field("note").type == pa.large_string()
    for name in ("either", "list"):
        assert schema.field(name).type == pa.large_binary()
        assert AVRO_JSON_KEY in schema.field(name).metadata
    assert all(u.batch.schema.equals(schema, check_metadata=True) for u in units)
    # units chain, and the blocks passed on are the file's own
    assert [u.end for u in units[:-1]] == [u.start for u in units[1:]] and units[-1].end is None
    data = path.read_bytes()
    assert b"".join(u.avro_blocks or b"" for u in units) == data[reader.first_block.block_offset:]  # type: ignore[attr-defined]


def test_resume_from_every_block(tmp_path: Path) -> None:
    records = _records(60)
    path = write(tmp_path, "r.avro", avro_bytes(records, "deflate", block_records=9, schema=SCHEMA))
    with LocalFile(path) as f:
        reader = open_reader(f)
        blocks = list(reader.blocks())  # type: ignore[attr-defined]
        before = 0
        for position, count, _ in blocks:
            assert _rows(list(reader.units(position, max_rows=20))) == records[before:]
            before += count
    assert before == len(records)


def _container(schema: Any, blocks: list[tuple[int, bytes]]) -> bytes:
    """An Avro file made by hand: `blocks` of (record count, encoded records), no codec."""
    sync = bytes(range(16))
    buf = io.BytesIO()
    fastavro.write.schemaless_writer(buf, fastavro.read.HEADER_SCHEMA, {  # type: ignore[attr-defined]
        "magic": b"Obj\x01", "sync": sync,
        "meta": {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"null"}})
    for count, data in blocks:
        buf.write(_long(count) + _long(len(data)) + data + sync)
    return buf.getvalue()


def _long(v: int) -> bytes:
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    return bytes(out + bytes([z]))


def _record(id_: int, branch: int, tail: bytes = b"") -> bytes:
    """id (long), either (union branch and value), list {v: 0, next: null}, note null."""
    value = {0: b"", 1: _long(1) + b"x", 2: _long(5)}.get(branch, b"")
    return _long(id_) + _long(branch) + value + tail + _long(0) + _long(0) + _long(0)


def _read_all(path: Path) -> list[Any]:
    """Every unit, decoded (a unit's rows are decoded when first asked for)."""
    with LocalFile(path) as f:
        units = list(open_reader(f).units())
    for u in units:
        assert u.batch.num_rows == u.rows
    return units


def test_a_union_branch_out_of_range_names_the_file_block_and_field(tmp_path: Path) -> None:
    good = _record(1, 1)
    first_block = (2, good + _record(2, 2))
    path = write(tmp_path, "bad.avro", _container(SCHEMA, [first_block, (2, good + _record(3, 7))]))
    with LocalFile(path) as f:
        reader = open_reader(f)
        second = list(reader.blocks())[1][0]  # type: ignore[attr-defined]
    with pytest.raises(CorruptFile) as exc:
        _read_all(path)
    err = exc.value
    assert err.position == second
    assert "record 1 of the block, field 'either'" in err.reason and "branch 7" in err.reason
    assert str(path) in str(err)
    # the block before it is still read
    with LocalFile(path) as f:
        assert next(open_reader(f).units(max_rows=2)).rows == 2


def test_truncated_record_and_trailing_bytes_are_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path, "short.avro", _container(SCHEMA, [(2, _record(1, 1))]))
    with pytest.raises(CorruptFile) as exc:
        _read_all(path)
    assert "record 1 of the block, field 'id'" in exc.value.reason
    path = write(tmp_path, "long.avro", _container(SCHEMA, [(1, _record(1, 1) + b"\x00")]))
    with pytest.raises(CorruptFile) as exc:
        _read_all(path)
    assert "1 bytes after the block's 1 records" in exc.value.reason


def test_nesting_is_bounded(tmp_path: Path) -> None:
    def linked(n: int) -> bytes:  # {v: 0, next: ...} n deep
        return (_long(0) + _long(1)) * n + _long(0) + _long(0)

    ok = _long(1) + _long(0) + linked(1900) + _long(0)
    path = write(tmp_path, "deep.avro", _container(SCHEMA, [(1, ok)]))
    assert sum(u.rows for u in _read_all(path)) == 1
    hostile = _long(1) + _long(0) + linked(100_000) + _long(0)
    path = write(tmp_path, "hostile.avro", _container(SCHEMA, [(1, hostile)]))
    with pytest.raises(CorruptFile) as exc:
        _read_all(path)
    assert "field 'list'" in exc.value.reason and "4000 levels" in exc.value.reason
    with LocalFile(path) as f:
        assert exc.value.position == open_reader(f).first_block  # type: ignore[attr-defined]


def test_duration_fields_come_through(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "D", "fields": [
        {"name": "id", "type": "int"},
        {"name": "d", "type": {"type": "fixed", "name": "Dur", "size": 12,
                               "logicalType": "duration"}}]}
    buf = io.BytesIO()
    values = [struct.pack("<III", i, i + 1, i + 2) for i in range(3)]
    fastavro.writer(buf, schema, [{"id": i, "d": v} for i, v in enumerate(values)])
    path = write(tmp_path, "d.avro", buf.getvalue())
    units = _read_all(path)
    assert [r["d"] for u in units for r in u.batch.to_pylist()] == values


@pytest.mark.parametrize("value,reason", [
    (_long(1) + _long(5), "enum index out of range"),
    (_long(2) + b"\x02", "boolean that is neither 0 nor 1"),
    (_long(3) + _long(17) + b"\x01" * 17, "decimal wider than 128 bits"),
])
def test_values_the_json_encoder_would_refuse_are_refused_when_read(tmp_path: Path, value: bytes,
                                                                    reason: str) -> None:
    """Checked where the error can name the file, block and field, not later in the encoder."""
    schema = {"type": "record", "name": "E", "fields": [
        {"name": "id", "type": "long"},
        {"name": "u", "type": ["null", {"type": "enum", "name": "Color", "symbols": ["A", "B"]},
                               "boolean",
                               {"type": "bytes", "logicalType": "decimal", "precision": 38,
                                "scale": 0}]}]}
    path = write(tmp_path, "e.avro", _container(schema, [(1, _long(1) + value)]))
    with pytest.raises(CorruptFile) as exc:
        _read_all(path)
    assert "record 0 of the block, field 'u'" in exc.value.reason and reason in exc.value.reason
