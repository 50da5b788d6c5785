"""Message keys from columns, and provenance headers."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pytest

from pipeline.encoders.headers import HeaderBuilder
from pipeline.encoders.keys import KeyColumnError, KeyEncoder
from pipeline.positions import AvroPosition, ParquetPosition, parse_position


def _batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "id": pa.array([1, -2, None], pa.int64()),
        "region": pa.array(["eu", "us \"w\"", None]),
        "day": pa.array([dt.date(2024, 1, 2), None, dt.date(1999, 12, 31)]),
        "amount": pa.array([Decimal("12.30"), Decimal("-0.01"), None], pa.decimal128(9, 2)),
        "raw": pa.array([b"\x00\xff", b"", None]),
        "price": pa.array([1.5, 2.0, None]),
        "at": pa.array([0, 1, None], pa.timestamp("ms", tz="UTC")),
    })


def test_no_key_columns_means_no_keys() -> None:
    assert KeyEncoder([]).encode(_batch()) is None


def test_single_column_keys_are_the_values_own_text() -> None:
    batch = _batch()
    assert KeyEncoder(["id"]).encode(batch) == [b"1", b"-2", None]
    assert KeyEncoder(["region"]).encode(batch) == [b"eu", b'us "w"', None]
    assert KeyEncoder(["day"]).encode(batch) == [b"2024-01-02", None, b"1999-12-31"]
    assert KeyEncoder(["amount"]).encode(batch) == [b"12.30", b"-0.01", None]
    assert KeyEncoder(["raw"]).encode(batch) == [b"\x00\xff", b"", None]
    assert KeyEncoder(["price"]).encode(batch) == [b"1.5", b"2.0", None]
    assert KeyEncoder(["at"]).encode(batch) == [b"1970-01-01T00:00:00.000Z",
                                                b"1970-01-01T00:00:00.001Z", None]


def test_several_columns_make_a_json_array_in_configured_order() -> None:
    keys = KeyEncoder(["region", "id", "amount"]).encode(_batch())
    assert keys is not None
    assert [json.loads(k) for k in keys if k is not None] == [
        ["eu", 1, "12.30"], ['us "w"', -2, "-0.01"], [None, None, None]]


def test_sliced_batch_keys() -> None:
    assert KeyEncoder(["id"]).encode(_batch().slice(1)) == [b"-2", None]


def test_missing_key_column_is_named() -> None:
    with pytest.raises(KeyColumnError, match="'nope' not in the data"):
        KeyEncoder(["id", "nope"]).encode(_batch())


def test_parquet_headers_carry_each_rows_position() -> None:
    headers = HeaderBuilder("/data/in/part-0.parquet").parquet(ParquetPosition(3, 1000), 3)
    assert headers[0] == (("hdfs2kafka.path", b"/data/in/part-0.parquet"),
                          ("hdfs2kafka.position", b"rg:3/1000"))
    assert [parse_position(dict(h)["hdfs2kafka.position"].decode()) for h in headers] == [
        ParquetPosition(3, 1000), ParquetPosition(3, 1001), ParquetPosition(3, 1002)]


def test_avro_headers_carry_the_block_position() -> None:
    headers = HeaderBuilder("/data/é.avro").avro(AvroPosition(4096), 2)
    assert headers == [(("hdfs2kafka.path", "/data/é.avro".encode()),
                        ("hdfs2kafka.position", b"block:4096"))] * 2
