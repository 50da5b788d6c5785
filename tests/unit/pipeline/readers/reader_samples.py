"""Sample files for the reader tests: every column type, several row groups or blocks."""

from __future__ import annotations

import datetime as dt
import decimal
import io
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

UTC = dt.UTC


def arrow_table(n: int = 240) -> pa.Table:
    """A table with every type the readers must carry, nulls included."""
    def maybe(i: int, v: Any) -> Any:
        return None if i % 7 == 3 else v

    return pa.table({
        "id": pa.array([i * 1_000_000_007 for i in range(n)], pa.int64()),
        "big": pa.array([maybe(i, (1 << 62) - i) for i in range(n)], pa.int64()),
        "price": pa.array([maybe(i, i / 3) for i in range(n)], pa.float64()),
        "name": pa.array([maybe(i, f"name-{i}-é✓") for i in range(n)], pa.string()),
        "amount": pa.array([maybe(i, decimal.Decimal(i * 7919 - 50_000).scaleb(-4))
                            for i in range(n)], pa.decimal128(20, 4)),
        "ts": pa.array([maybe(i, dt.datetime(2024, 5, 1, tzinfo=UTC)
                              + dt.timedelta(microseconds=i * 1_234_567)) for i in range(n)],
                       pa.timestamp("us", tz="UTC")),
        "ts_ms": pa.array([dt.datetime(2020, 1, 1) + dt.timedelta(milliseconds=i)
                           for i in range(n)], pa.timestamp("ms")),
        "day": pa.array([maybe(i, dt.date(2000, 1, 1) + dt.timedelta(days=i)) for i in range(n)],
                        pa.date32()),
        "blob": pa.array([maybe(i, bytes([i % 256]) * (i % 5)) for i in range(n)], pa.binary()),
        "flag": pa.array([maybe(i, i % 2 == 0) for i in range(n)], pa.bool_()),
        "address": pa.array([maybe(i, {"street": f"{i} Main St", "zip": 10000 + i})
                             for i in range(n)],
                            pa.struct([("street", pa.string()), ("zip", pa.int32())])),
        "tags": pa.array([maybe(i, [f"t{j}" for j in range(i % 4)]) for i in range(n)],
                         pa.list_(pa.string())),
        "attrs": pa.array([maybe(i, [(f"k{j}", j * i) for j in range(i % 3)]) for i in range(n)],
                          pa.map_(pa.string(), pa.int64())),
    })


def parquet_bytes(table: pa.Table, row_group_size: int = 50, compression: str = "snappy") -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size, compression=compression)
    return buf.getvalue()


AVRO_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Sample", "namespace": "test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "big", "type": ["null", "long"]},
        {"name": "price", "type": ["null", "double"]},
        {"name": "ratio", "type": "float"},
        {"name": "count", "type": "int"},
        {"name": "name", "type": ["null", "string"]},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal",
                                    "precision": 20, "scale": 4}},
        {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
        {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "blob", "type": "bytes"},
        {"name": "flag", "type": "boolean"},
        {"name": "address", "type": ["null", {
            "type": "record", "name": "Address",
            "fields": [{"name": "street", "type": "string"}, {"name": "zip", "type": "int"}]}]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
    ],
}


def avro_records(n: int = 240) -> list[dict[str, Any]]:
    def maybe(i: int, v: Any) -> Any:
        return None if i % 7 == 3 else v

    return [{
        "id": i * 1_000_000_007,
        "big": maybe(i, (1 << 62) - i),
        "price": maybe(i, i / 3),
        "ratio": i / 4,
        "count": i - 100,
        "name": maybe(i, f"name-{i}-é✓"),
        "amount": decimal.Decimal(i * 7919 - 50_000).scaleb(-4),
        "ts": maybe(i, dt.datetime(2024, 5, 1, tzinfo=UTC) + dt.timedelta(microseconds=i * 1_234_567)),
        "ts_ms": dt.datetime(2020, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=i),
        "day": dt.date(2000, 1, 1) + dt.timedelta(days=i),
        "blob": bytes([i % 256]) * (i % 5),
        "flag": i % 2 == 0,
        "address": maybe(i, {"street": f"{i} Main St", "zip": 10000 + i}),
        "tags": [f"t{j}" for j in range(i % 4)],
        "attrs": {f"k{j}": j * i for j in range(i % 3)},
    } for i in range(n)]


def avro_bytes(records: list[dict[str, Any]], codec: str = "null", block_records: int = 30,
               schema: dict[str, Any] | None = None) -> bytes:
    """An Avro container file with a block every `block_records` records."""
    buf = io.BytesIO()
    parsed = fastavro.parse_schema(schema or AVRO_SCHEMA)
    w = fastavro.write.Writer(buf, parsed, codec=codec)
    for i, rec in enumerate(records):
        w.write(rec)
        if (i + 1) % block_records == 0:
            w.flush()
    w.flush()
    return buf.getvalue()


def normalise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrow maps come back as lists of pairs; compare them as dicts."""
    out = []
    for row in rows:
        row = dict(row)
        if isinstance(row.get("attrs"), list):
            row["attrs"] = dict(row["attrs"])
        out.append(row)
    return out


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path
