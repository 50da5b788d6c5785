"""Rows to JSON Kafka values: one JSON object per row, with a lossless type mapping.

The mapping (Arrow type of the column -> JSON):

| Arrow type                          | JSON                                                    |
| ----------------------------------- | ------------------------------------------------------- |
| null                                | `null`; a null value of any type is `null` too          |
| bool                                | `true` / `false`                                        |
| int8..int64, uint8..uint64          | number with every digit (`int64_as_string`: "string")   |
| float32, float64                    | number, shortest text that reads back as the same value |
|                                     | (a float always has a `.` or an exponent: `1.0`);       |
|                                     | NaN and infinities as "NaN", "Infinity", "-Infinity"    |
| decimal                             | string with the column's scale: "-12.30"                |
|                                     | (`decimal_as_number`: a JSON number with those digits)  |
| string                              | string                                                  |
| binary, fixed_size_binary           | string, standard base64 with padding                    |
| date32, date64                      | "YYYY-MM-DD"                                            |
| time32, time64                      | "HH:MM:SS[.fff|.ffffff|.fffffffff]" (digits by unit)     |
| timestamp with a time zone          | "YYYY-MM-DDTHH:MM:SS[.f...]Z", in UTC, digits by unit   |
| timestamp without a time zone       | the same without `Z` (wall-clock time, no zone)          |
|   with `timestamps="epoch_ms"` etc. | integer count since 1970-01-01 in that unit; a coarser  |
|                                     | unit than the column's floors (and so loses precision)  |
| duration                            | ISO 8601 seconds with the digits of the column's unit:  |
|                                     | "PT90S" (s), "-PT1.500S" (ms), "PT0.000001S" (us),       |
|                                     | "PT0.000000001S" (ns); the digits say the unit, so the  |
|                                     | count reads back exactly (Java `Duration.parse` reads it) |
| struct                              | object, fields in schema order                          |
| list, large_list, fixed_size_list   | array                                                   |
| map                                 | object; keys that are not strings become their JSON     |
|                                     | text in quotes (`{"1": ...}`)                           |
| dictionary                          | its values' mapping                                     |
| binary with `hdfs2kafka.avro` field | the Avro value it holds, as avro_json.py maps it (Avro   |
|   metadata (from the Avro reader)   | unions of several types as {"<branch>": value},         |
|                                     | records that contain themselves as nested objects)      |

The work is vectorised per record batch: float columns are formatted in bulk by polars, and a
small compiled walker (`_rows.c`) writes every row's bytes without building Python objects for
values; there is no Python loop per value or per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.encoders._native import rows as _rows

Timestamps = Literal["iso", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns"]

_TS_MODES: dict[str, int] = {"iso": 0, "epoch_s": 1, "epoch_ms": 2, "epoch_us": 3, "epoch_ns": 4}
_NUMBER_TEXT = {b"hdfs2kafka.json": b"number"}

# json_rows modes (see _rows.c)
MODE_OBJECT = 0
MODE_BARE = 1
MODE_ARRAY = 2


@dataclass(frozen=True)
class JsonOptions:
    """How values whose JSON form is a choice are written.

    timestamps: "iso" (default, lossless) or an integer count since the epoch in seconds,
        milliseconds, microseconds or nanoseconds.
    decimal_as_number: write decimals as JSON numbers instead of strings (exact digits, but
        many JSON readers parse numbers into binary floats).
    int64_as_string: write 64-bit integers as strings, for readers (JavaScript) whose numbers
        are doubles.
    """

    timestamps: Timestamps = "iso"
    decimal_as_number: bool = False
    int64_as_string: bool = False

    def __post_init__(self) -> None:
        if self.timestamps not in _TS_MODES:
            raise ValueError(
                f"timestamps must be one of {', '.join(_TS_MODES)}, not {self.timestamps!r}"
            )


class JsonEncoder:
    """Encodes each row of a record batch as one JSON object (UTF-8 bytes), in order."""

    def __init__(self, options: JsonOptions | None = None) -> None:
        self.options = options or JsonOptions()
        self._args = walker_args(self.options)
        # A few copies of the last batch's values, which keep the allocator's memory mapped for
        # the next batch (see PIN_EVERY in _rows.c): about 25% faster on the reference data.
        self._pins: list[bytes] = []

    def encode(self, batch: pa.RecordBatch) -> list[bytes]:
        pins: list[bytes] = []
        values = encode_rows(batch, self._args, MODE_OBJECT, pins)
        self._pins = pins
        return values  # type: ignore[return-value]


def walker_args(options: JsonOptions) -> tuple[int, int, int]:
    """The options as the compiled walker takes them."""
    return (
        _TS_MODES[options.timestamps],
        int(options.decimal_as_number),
        int(options.int64_as_string),
    )


def encode_rows(
    batch: pa.RecordBatch, args: tuple[int, int, int], mode: int,
    pins: list[bytes] | None = None,
) -> list[bytes | None]:
    """Run the compiled walker over a batch prepared for it (see `prepare`). Only MODE_BARE
    gives None (for null values)."""
    schema_capsule, array_capsule = prepare(batch).__arrow_c_array__()
    return _rows.json_rows(schema_capsule, array_capsule, *args, mode, pins)


def prepare(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Bring a batch to the Arrow types the walker reads, doing the bulk work vectorised."""
    fields = []
    columns = []
    changed = False
    for field, column in zip(batch.schema, batch.columns, strict=True):
        new_field, new_column = _prepare(field, column)
        changed |= new_column is not column
        fields.append(new_field)
        columns.append(new_column)
    if not changed:
        return batch
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def _prepare(field: pa.Field, array: pa.Array) -> tuple[pa.Field, pa.Array]:
    t = array.type
    if pa.types.is_floating(t):
        if pa.types.is_float16(t):
            array = array.cast(pa.float32())
        # polars formats floats with Ryu: shortest round-trip text, about 50 ns a value.
        text = pl.Series(array).cast(pl.String).to_arrow(compat_level=pl.CompatLevel.oldest())
        text = text.cast(pa.string())
        return pa.field(field.name, pa.string(), field.nullable, _NUMBER_TEXT), text
    if pa.types.is_dictionary(t):
        decoded = array.dictionary_decode()
        return _prepare(pa.field(field.name, decoded.type, field.nullable), decoded)
    if (
        pa.types.is_string_view(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_large_list_view(t)
        or pa.types.is_list_view(t)
        or pa.types.is_run_end_encoded(t)
    ):
        plain = array.cast(_plain_type(t))
        return _prepare(pa.field(field.name, plain.type, field.nullable), plain)
    if pa.types.is_decimal(t) and not pa.types.is_decimal128(t):
        if t.precision > 38:
            raise TypeError(f"column {field.name!r}: decimals wider than 38 digits are not supported")
        plain = array.cast(pa.decimal128(t.precision, t.scale))
        return pa.field(field.name, plain.type, field.nullable), plain
    if pa.types.is_struct(t):
        children = [array.field(i) for i in range(t.num_fields)]
        subs = [_prepare(t.field(i), child) for i, child in enumerate(children)]
        if all(sub is child for child, (_, sub) in zip(children, subs, strict=True)):
            return field, array
        mask = array.is_null() if array.null_count else None
        rebuilt = pa.StructArray.from_arrays(
            [s for _, s in subs], fields=[f for f, _ in subs], mask=mask
        )
        return pa.field(field.name, rebuilt.type, field.nullable), rebuilt
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        original = array.values
        item_field, values = _prepare(t.value_field, original)
        if values is original:
            return field, array
        cls = pa.ListArray if pa.types.is_list(t) else pa.LargeListArray
        list_type = pa.list_(item_field) if pa.types.is_list(t) else pa.large_list(item_field)
        mask = array.is_null() if array.null_count else None
        offsets = array.offsets
        if mask is not None and offsets.offset:
            offsets = pc.add(offsets, 0)  # from_arrays takes no sliced offsets with a mask
        rebuilt = cls.from_arrays(offsets, values, type=list_type, mask=mask)
        return pa.field(field.name, list_type, field.nullable), rebuilt
    if _needs_cast(t):
        array = array.cast(_plain_type(t))
        return pa.field(field.name, array.type, field.nullable), array
    return field, array


def _needs_cast(t: pa.DataType) -> bool:
    return _plain_type(t) != t


def _plain_type(t: pa.DataType) -> pa.DataType:
    """The type without views, dictionaries, run-end encoding or half floats, recursively."""
    if pa.types.is_dictionary(t):
        return _plain_type(t.value_type)
    if pa.types.is_run_end_encoded(t):
        return _plain_type(t.value_type)
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_list_view(t):
        return pa.list_(_plain_field(t.value_field))
    if pa.types.is_large_list_view(t):
        return pa.large_list(_plain_field(t.value_field))
    if pa.types.is_list(t):
        return pa.list_(_plain_field(t.value_field))
    if pa.types.is_large_list(t):
        return pa.large_list(_plain_field(t.value_field))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_plain_field(t.value_field), t.list_size)
    if pa.types.is_map(t):
        return pa.map_(_plain_field(t.key_field), _plain_field(t.item_field))
    if pa.types.is_struct(t):
        return pa.struct([_plain_field(t.field(i)) for i in range(t.num_fields)])
    if pa.types.is_decimal(t) and not pa.types.is_decimal128(t) and t.precision <= 38:
        return pa.decimal128(t.precision, t.scale)
    return t


def _plain_field(f: pa.Field) -> pa.Field:
    return pa.field(f.name, _plain_type(f.type), f.nullable, f.metadata)
