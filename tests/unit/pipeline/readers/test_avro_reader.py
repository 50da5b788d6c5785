"""Avro container files read back whole and from every block: every record, once, in order."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import fastavro
import pyarrow as pa
import pytest
from reader_samples import AVRO_SCHEMA, avro_bytes, avro_records, normalise, write

from hdfsread.base import LocalFile
from pipeline.positions import AvroPosition, ParquetPosition
from pipeline.readers import BadPosition, open_reader
from pipeline.readers.avro import AvroReader

RECORDS = avro_records(240)
CODECS = ["null", "deflate", "snappy", "zstandard", "xz", "bzip2"]


def _expected(data: bytes) -> list[dict]:
    return list(fastavro.reader(io.BytesIO(data)))  # type: ignore[arg-type]


def _rows(units: list) -> list[dict]:
    return normalise([row for u in units for row in u.batch.to_pylist()])


@pytest.mark.parametrize("codec", CODECS)
def test_every_record_comes_back_in_order(tmp_path: Path, codec: str) -> None:
    data = avro_bytes(RECORDS, codec, block_records=30)
    path = write(tmp_path, "t.avro", data)
    with LocalFile(path) as f:
        reader = open_reader(f)  # auto
        units = list(reader.units(max_rows=64))
    assert reader.format == "avro" and reader.total_rows is None
    assert _rows(units) == _expected(data)
    assert sum(u.rows for u in units) == len(RECORDS)
    # Blocks are never split: 30-record blocks, at most 64 rows -> 2 blocks a unit.
    assert [u.rows for u in units] == [60, 60, 60, 60]


def test_arrow_types_are_faithful(tmp_path: Path) -> None:
    path = write(tmp_path, "t.avro", avro_bytes(RECORDS))
    with LocalFile(path) as f:
        schema = open_reader(f).schema
    assert schema.field("id").type == pa.int64()
    assert schema.field("big").type == pa.int64()
    assert schema.field("count").type == pa.int32()
    assert schema.field("amount").type == pa.decimal128(20, 4)
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert schema.field("ts_ms").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("day").type == pa.date32()
    assert pa.types.is_struct(schema.field("address").type)
    assert pa.types.is_map(schema.field("attrs").type)


def test_units_chain_and_carry_their_raw_blocks(tmp_path: Path) -> None:
    data = avro_bytes(RECORDS, "deflate", block_records=30)
    path = write(tmp_path, "t.avro", data)
    with LocalFile(path) as f:
        reader = AvroReader(f)
        units = list(reader.units(max_rows=64))
        blocks = list(reader.blocks())
    assert units[0].start == reader.first_block and units[-1].end is None
    for a, b in itertools.pairwise(units):
        assert a.end == b.start
    assert len(blocks) == 8
    assert reader.avro_schema["name"] == "test.Sample" or reader.avro_schema["name"] == "Sample"
    # Header + a unit's raw blocks is a valid container file holding that unit's records.
    for u in units:
        assert u.avro_blocks is not None and len(u.avro_blocks) == u.nbytes
        assert _expected(reader.header + u.avro_blocks) == _rows([u])


def test_resume_from_every_block_gives_exactly_the_remaining_records(tmp_path: Path) -> None:
    data = avro_bytes(RECORDS, "snappy", block_records=17)
    path = write(tmp_path, "t.avro", data)
    expected = _expected(data)
    with LocalFile(path) as f:
        reader = AvroReader(f)
        blocks = list(reader.blocks())
        done = 0
        for pos, count, _ in blocks:
            assert _rows(list(reader.units(pos, max_rows=40))) == expected[done:]
            done += count
        assert list(reader.units(AvroPosition(f.size))) == []


def test_bad_positions_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "t.avro", avro_bytes(RECORDS, block_records=30))
    with LocalFile(path) as f:
        reader = AvroReader(f)
        inside = AvroPosition(reader.first_block.block_offset + 5)
        for pos in [inside, AvroPosition(3), AvroPosition(f.size + 1), ParquetPosition(0, 0)]:
            with pytest.raises(BadPosition) as exc:
                list(reader.units(pos))
            assert str(path) in str(exc.value)


def test_empty_blocks_and_header_only_files(tmp_path: Path) -> None:
    path = write(tmp_path, "t.avro", avro_bytes([]))
    with LocalFile(path) as f:
        reader = open_reader(f)
        assert list(reader.units()) == []
        assert reader.schema.names == [fld["name"] for fld in AVRO_SCHEMA["fields"]]


def test_other_avro_types(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "O", "fields": [
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "price", "type": {"type": "fixed", "name": "P", "size": 8,
                                   "logicalType": "decimal", "precision": 12, "scale": 3}},
    ]}
    import decimal
    import uuid

    records = [{"uid": str(uuid.UUID(int=i * 7919)), "color": ["RED", "BLUE"][i % 2],
                "digest": i.to_bytes(4, "big"), "price": decimal.Decimal(i).scaleb(-3)}
               for i in range(50)]
    path = write(tmp_path, "o.avro", avro_bytes(records, "deflate", 20, schema=schema))
    with LocalFile(path) as f:
        reader = open_reader(f)
        got = _rows(list(reader.units()))
    assert reader.schema.field("uid").type in (pa.string(), pa.large_string())
    assert got == records
