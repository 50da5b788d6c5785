"""Sample rows and files: the one generator of Parquet and Avro test data for the demo, the
integration tests and the benchmarks. Deterministic (a file's contents follow from its number),
so that what arrives in Kafka can be checked against what was written.

Row ids: row `i` of file number `f` has id `f * ROWS_PER_FILE_ID + i`, so a consumer can tell
from an id alone which file and row it is, and count every row once (`demo.check`).

- `rows_for`, `parquet_bytes`, `avro_bytes`, `sample_file`, `big_row_parquet`: the checked rows
  of the integration tests (id, file_no, seq, user, amount: the order within a file shows).
- `clicks_parquet`, `orders_avro`: the demo's clicks (Hive-style `dt=` partitions) and orders.
- `reference_table`: the 12-column reference dataset of the performance targets (`bench/`).
- `events_table`: the end-to-end benchmark's rows (a JSON value of about 200 bytes each).
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import random
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROWS_PER_FILE_ID = 1_000_000  # row id = file_no * ROWS_PER_FILE_ID + row number in the file


def row_ids(file_no: int, n: int) -> list[int]:
    return [file_no * ROWS_PER_FILE_ID + i for i in range(n)]


# --------------------------------------------------------------------------- checked rows


def rows_for(file_no: int, n: int) -> dict[str, list[Any]]:
    """The columns of file `file_no`: its ids, its number and each row's place in it."""
    return {
        "id": row_ids(file_no, n),
        "file_no": [file_no] * n,
        "seq": list(range(n)),
        "user": [f"user-{(file_no * 7 + i) % 97}" for i in range(n)],
        "amount": [float(i) * 0.5 for i in range(n)],
    }


AVRO_SCHEMA = fastavro.parse_schema({
    "type": "record", "name": "Row", "fields": [
        {"name": "id", "type": "long"}, {"name": "file_no", "type": "long"},
        {"name": "seq", "type": "long"}, {"name": "user", "type": "string"},
        {"name": "amount", "type": "double"},
    ]})


def parquet_bytes(file_no: int, n: int, row_group_size: int = 5000) -> bytes:
    return _parquet(pa.table(rows_for(file_no, n)), row_group_size)


def avro_bytes(file_no: int, n: int, block_rows: int = 2000, codec: str = "deflate") -> bytes:
    cols = rows_for(file_no, n)
    records = [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]
    buf = io.BytesIO()
    fastavro.writer(buf, AVRO_SCHEMA, records, codec=codec, sync_interval=block_rows * 40)
    return buf.getvalue()


def big_row_parquet(file_no: int, n: int, big_at: int, big_bytes: int) -> bytes:
    """A Parquet file like `sample_file`'s whose row `big_at` carries `big_bytes` of padding."""
    cols = rows_for(file_no, n)
    cols["pad"] = ["x" * big_bytes if i == big_at else "" for i in range(n)]
    return _parquet(pa.table(cols), 5000)


def sample_file(file_no: int, n: int) -> tuple[str, bytes]:
    """Alternating Parquet and Avro files: (suffix, bytes)."""
    if file_no % 2:
        return ".avro", avro_bytes(file_no, n)
    return ".parquet", parquet_bytes(file_no, n)


def _parquet(table: pa.Table, row_group_size: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


# --------------------------------------------------------------------------- the demo's clicks and orders

PAGES = ("/", "/search", "/cart", "/checkout", "/product/1", "/product/2", "/help")
ITEMS = ("kettle", "lamp", "mug", "chair", "desk", "pen", "notebook", "rug")
ORDER_SCHEMA = {
    "type": "record", "name": "Order", "namespace": "demo",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "item", "type": "string"},
        {"name": "quantity", "type": "int"},
        {"name": "price", "type": "double"},
        {"name": "created", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def clicks_parquet(file_no: int, rows: int, day: dt.date) -> bytes:
    """Page views of one minute of `day`, in row groups of 2,000."""
    rnd = random.Random(file_no)
    start = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=file_no * 60)
    table = pa.table({
        "id": pa.array(row_ids(file_no, rows), pa.int64()),
        "user": [f"user-{rnd.randrange(200)}" for _ in range(rows)],
        "page": [rnd.choice(PAGES) for _ in range(rows)],
        "duration_ms": pa.array([rnd.randrange(20, 30_000) for _ in range(rows)], pa.int32()),
        "at": pa.array([start + dt.timedelta(milliseconds=i * 7) for i in range(rows)],
                       pa.timestamp("ms", tz="UTC")),
    })
    return _parquet(table, 2_000)


def orders_avro(file_no: int, rows: int) -> bytes:
    """Orders created from now on, deflated, in blocks of about 32 kB."""
    rnd = random.Random(file_no)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    records = [{"id": row_id,
                "customer": f"customer-{rnd.randrange(100)}",
                "item": rnd.choice(ITEMS),
                "quantity": rnd.randrange(1, 6),
                "price": round(rnd.uniform(1, 200), 2),
                "created": start + dt.timedelta(milliseconds=i * 11)}
               for i, row_id in enumerate(row_ids(file_no, rows))]
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(ORDER_SCHEMA), records, codec="deflate",
                    sync_interval=32_000)
    return buf.getvalue()


# --------------------------------------------------------------------------- benchmark tables
# Generated column-wise with pyarrow compute: a million rows in about a second.

REFERENCE_ROWS = 1_000_000
_CITIES = pa.array(["Paris", "Lyon", "Berlin", "Madrid", "Oslo", "Rome", None])
_EPOCH_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
_EPOCH_DAYS = 19_723  # 2024-01-01


def _mod(a: pa.Array, m: int) -> pa.Array:
    return pc.subtract(a, pc.multiply(pc.divide(a, m), m))


def _uniform_ints(n: int, low: int, high: int, seed: int) -> pa.Array:
    """Deterministic pseudo-random ints in [low, high), vectorised."""
    x = pc.random(n, initializer=seed)
    return pc.cast(pc.floor(pc.add(pc.multiply(x, float(high - low)), float(low))), pa.int64())


def reference_table(n: int = REFERENCE_ROWS) -> pa.Table:
    """The reference rows: 12 mixed columns (ints, doubles, a 20-character string, a timestamp, a
    date, a decimal, a bool, nullable columns, a struct and a list), named as in
    `bench/avro_reference.SCHEMA`."""
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


def events_table(first_id: int, n: int) -> pa.Table:
    """Rows whose JSON value is about 200 bytes (ints, a timestamp, strings, a double), with ids
    from `first_id` on."""
    ids = pa.array(range(first_id, first_id + n), pa.int64())
    rnd = pc.random(n, initializer=first_id + 1)
    user = pc.cast(pc.floor(pc.multiply(rnd, 1e9)), pa.int64())
    ts = pc.cast(pc.add(pc.multiply(ids, 1000), _EPOCH_US), pa.timestamp("us", tz="UTC"))
    session = pc.utf8_lpad(pc.cast(pc.multiply(ids, 2654435761), pa.string()), 24, "0")
    events = pa.array(["page_view", "add_to_cart", "checkout", "search", "login"])
    event = pc.take(events, pc.cast(pc.floor(pc.multiply(rnd, 5)), pa.int64()))
    path = pc.binary_join_element_wise("/catalog/item/", pc.cast(pc.floor(pc.multiply(rnd, 1e6)), pa.string()),
                                       "?ref=home", "")
    price = pc.round(pc.multiply(rnd, 1000.0), 2)
    countries = pa.array(["FR", "DE", "ES", "IT", "NO", "SE", "PL"])
    country = pc.take(countries, pc.cast(pc.floor(pc.multiply(rnd, 7)), pa.int64()))
    return pa.table({"id": ids, "user_id": user, "ts": ts, "session": session, "event": event,
                     "path": path, "price": price, "country": country,
                     "agent": pa.array(["app/1.0"] * n)})
