"""The reference dataset of the performance targets, as Parquet and as Avro.

1,000,000 rows x 12 mixed columns: ints, doubles, a 20-character string, a timestamp, a date,
a decimal, a bool, nullable columns, a struct and a list (the same columns as
`avro_reference.SCHEMA`). Generated column-wise with pyarrow compute, deterministically, in about
a second; the Avro copy takes longer (fastavro writes it row by row) and is cached.

    python bench/dataset.py [DIR] [--rows N]     # writes DIR/reference-N.parquet and .avro

Other benchmarks use `reference_table(n)`, `write_parquet(dir, n)` and `write_avro(dir, n)`.
"""

from __future__ import annotations

import argparse
import decimal
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROWS = 1_000_000
ROW_GROUP_ROWS = 128 * 1024
AVRO_BLOCK_RECORDS = 16_000
DEFAULT_DIR = Path(__file__).resolve().parent / "out"

_CITIES = pa.array(["Paris", "Lyon", "Berlin", "Madrid", "Oslo", "Rome", None])
_EPOCH_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
_EPOCH_DAYS = 19_723  # 2024-01-01


def _mod(a: pa.Array, m: int) -> pa.Array:
    return pc.subtract(a, pc.multiply(pc.divide(a, m), m))


def _uniform_ints(n: int, low: int, high: int, seed: int) -> pa.Array:
    """Deterministic pseudo-random ints in [low, high), vectorised."""
    x = pc.random(n, initializer=seed)
    return pc.cast(pc.floor(pc.add(pc.multiply(x, float(high - low)), float(low))), pa.int64())


def reference_table(n: int = ROWS) -> pa.Table:
    """The reference rows (columns named as in avro_reference.SCHEMA)."""
    ids = pa.array(range(n), pa.int64())
    user = _uniform_ints(n, 1, 1 << 40, 1)
    user_null = pc.equal(_mod(ids, 10), 0)
    user_id = pc.if_else(user_null, pa.scalar(None, pa.int64()), user)
    price = pc.multiply(pc.random(n, initializer=2), 1000.0)
    quantity = pc.cast(_uniform_ints(n, 0, 100, 3), pa.int32())
    digits = pc.utf8_lpad(pc.cast(_uniform_ints(n, 0, 10**11, 4), pa.string()), 11, "0")
    name = pc.binary_join_element_wise("customer-", digits, "")  # 20 characters
    city = pc.take(_CITIES, _mod(ids, 7))
    ts = pc.cast(pc.add(pc.multiply(ids, 1000), _EPOCH_US), pa.timestamp("us", tz="UTC"))
    day_of_year = _mod(ids, 365)
    day = pc.cast(pc.cast(pc.add(day_of_year, _EPOCH_DAYS), pa.int32()), pa.date32())
    cents = pc.cast(pc.cast(_uniform_ints(n, -(10**9), 10**9, 5), pa.int32()), pa.decimal128(16, 0))
    amount = pc.cast(pc.multiply(cents, pa.scalar(decimal.Decimal("0.01"), pa.decimal128(3, 2))),
                     pa.decimal128(18, 2))
    active = pc.equal(pc.bit_wise_and(ids, 1), 1)
    street = pc.binary_join_element_wise(pc.cast(_mod(ids, 500), pa.string()), " Main St", "")
    zip_code = pc.cast(pc.add(_mod(ids, 90_000), 10_000), pa.int32())
    address = pa.StructArray.from_arrays(
        [street, zip_code],
        fields=[pa.field("street", pa.string(), False), pa.field("zip", pa.int32(), False)],
    )
    tags = _tags(n)
    schema = pa.schema([
        pa.field("id", pa.int64(), False),
        pa.field("user_id", pa.int64()),
        pa.field("price", pa.float64(), False),
        pa.field("quantity", pa.int32(), False),
        pa.field("name", pa.string(), False),
        pa.field("city", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC"), False),
        pa.field("day", pa.date32(), False),
        pa.field("amount", pa.decimal128(18, 2), False),
        pa.field("active", pa.bool_(), False),
        pa.field("address", address.type, False),
        pa.field("tags", pa.list_(pa.field("item", pa.string(), False)), False),
    ])
    return pa.table([ids, user_id, price, quantity, name, city, ts, day, amount, active,
                     address, tags], schema=schema)


def _tags(n: int) -> pa.Array:
    """Row i holds i % 4 tags: t0, t1, ..."""
    counts = [i % 4 for i in range(4)]
    per_cycle = sum(counts)
    offsets = [0]
    for i in range(n):
        offsets.append(offsets[-1] + counts[i % 4])
    total = offsets[-1]
    pattern = [f"t{j}" for c in counts for j in range(c)]
    values = pa.array((pattern * (total // per_cycle + 1))[:total], pa.string())
    item = pa.field("item", pa.string(), False)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=pa.list_(item))


def write_parquet(directory: Path = DEFAULT_DIR, n: int = ROWS) -> Path:
    path = directory / f"reference-{n}.parquet"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        pq.write_table(reference_table(n), tmp, row_group_size=ROW_GROUP_ROWS)
        tmp.rename(path)
    return path


def write_avro(directory: Path = DEFAULT_DIR, n: int = ROWS, codec: str = "null") -> Path:
    """The same rows as an Avro container file, with the schema derived from the Arrow one."""
    import fastavro

    from pipeline.encoders.avro import arrow_to_avro_schema

    path = directory / f"reference-{n}-{codec}.avro"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        table = reference_table(n)
        schema = arrow_to_avro_schema(table.schema, "Reference")
        tmp = path.with_suffix(".partial")
        with tmp.open("wb") as f:
            fastavro.writer(f, fastavro.parse_schema(schema), _rows(table), codec=codec,
                            sync_interval=AVRO_BLOCK_RECORDS * 200)
        tmp.rename(path)
    return path


def _rows(table: pa.Table):  # type: ignore[no-untyped-def]
    for batch in table.to_batches(max_chunksize=65536):
        yield from batch.to_pylist()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args(argv)
    print(write_parquet(args.dir, args.rows))
    print(write_avro(args.dir, args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
