"""Rows to Avro Kafka values in the Confluent wire format.

A value is `0x00`, the schema's registry id as a 4-byte big-endian integer, then the row's Avro
binary encoding. The schema is registered under the topic's subject (`<topic>-value`).

Two paths:
- Parquet sources (or any Arrow batch): `arrow_to_avro_schema` derives the schema from the Arrow
  one and `AvroEncoder` writes each row's Avro binary with the compiled walker (`_rows.c`).
- Avro sources whose value schema is the file's own: the records are already Avro binary in the
  decompressed blocks, so `encode_avro_blocks` only finds where each record ends (walking the
  schema, no decoding into Python objects) and prefixes it.

Arrow type -> Avro type of `arrow_to_avro_schema` (a nullable field becomes `["null", T]` with
default null, in the same position in the union as `AvroEncoder` writes):

| Arrow                               | Avro                                                    |
| ----------------------------------- | ------------------------------------------------------- |
| null                                | "null"                                                  |
| bool                                | "boolean"                                               |
| int8, int16, int32, uint8, uint16   | "int"                                                   |
| int64, uint32, uint64               | "long" (a uint64 above 2**63-1 is an error)             |
| float32 / float64                   | "float" / "double"                                      |
| string / binary                     | "string" / "bytes"                                      |
| fixed_size_binary(n)                | fixed of size n                                         |
| decimal(p, s)                       | bytes with logicalType decimal, precision p, scale s    |
| date32, date64                      | int, logicalType date                                   |
| time32                              | int, time-millis                                        |
| time64                              | long, time-micros (nanoseconds are floored)             |
| timestamp[s, ms] (+ zone / no zone) | long, timestamp-millis / local-timestamp-millis         |
| timestamp[us]                       | long, timestamp-micros / local-timestamp-micros         |
| timestamp[ns]                       | long, timestamp-nanos / local-timestamp-nanos           |
| duration                            | long (count of the column's unit)                       |
| struct                              | record (named after its path)                           |
| list, large_list, fixed_size_list   | array                                                   |
| map with string keys                | map                                                     |
| map with other keys                 | array of records {key, value}                           |
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from hdfswatch.framing import read_zigzag
from pipeline.encoders._native import rows as _rows
from pipeline.encoders.errors import EncodeError
from pipeline.encoders.json import _plain_type

MAGIC = b"\x00"


class AvroSchemaError(EncodeError):
    """An Arrow schema with no Avro form, or an Avro schema the block splitter cannot walk."""


def confluent_prefix(schema_id: int) -> bytes:
    """The 5 bytes before every Confluent-framed Avro value: magic 0 and the schema id."""
    if not 0 <= schema_id < 2**31:
        raise ValueError(f"schema id {schema_id} out of range")
    return MAGIC + struct.pack(">I", schema_id)


# ----------------------------------------------------------------------------- Arrow -> Avro


def arrow_to_avro_schema(
    schema: pa.Schema, name: str, namespace: str | None = None
) -> dict[str, Any]:
    """The Avro record schema whose binary encoding `AvroEncoder` writes for rows of `schema`."""
    record_name = _avro_name(name)
    fields = [_avro_field(f, record_name) for f in schema]
    out: dict[str, Any] = {"type": "record", "name": record_name, "fields": fields}
    if namespace:
        out["namespace"] = namespace
    return out


def _avro_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"_{cleaned}"


def _avro_field(field: pa.Field, path: str) -> dict[str, Any]:
    avro_type = _avro_type(field.type, f"{path}_{_avro_name(field.name)}", field.name)
    if field.nullable and avro_type != "null":
        return {"name": _check_name(field.name), "type": ["null", avro_type], "default": None}
    return {"name": _check_name(field.name), "type": avro_type}


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise AvroSchemaError(
            f"column {name!r} is not a valid Avro field name ([A-Za-z_][A-Za-z0-9_]*); "
            "rename it or use the json value format"
        )
    return name


def _nullable(field: pa.Field, avro_type: Any) -> Any:
    return ["null", avro_type] if field.nullable and avro_type != "null" else avro_type


def _avro_type(t: pa.DataType, path: str, column: str) -> Any:
    t = _plain_type(t)
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_int32(t):
        return "int"
    if pa.types.is_uint8(t) or pa.types.is_uint16(t):
        return "int"
    if pa.types.is_integer(t):
        return "long"
    if pa.types.is_float32(t):
        return "float"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_fixed_size_binary(t):
        return {"type": "fixed", "name": path, "size": t.byte_width}
    if pa.types.is_decimal(t):
        if t.precision > 38:
            raise AvroSchemaError(f"column {column!r}: decimals wider than 38 digits")
        return {"type": "bytes", "logicalType": "decimal", "precision": t.precision,
                "scale": t.scale}
    if pa.types.is_date(t):
        return {"type": "int", "logicalType": "date"}
    if pa.types.is_time32(t):
        return {"type": "int", "logicalType": "time-millis"}
    if pa.types.is_time64(t):
        return {"type": "long", "logicalType": "time-micros"}
    if pa.types.is_timestamp(t):
        unit = {"s": "millis", "ms": "millis", "us": "micros", "ns": "nanos"}[t.unit]
        local = "" if t.tz else "local-"
        return {"type": "long", "logicalType": f"{local}timestamp-{unit}"}
    if pa.types.is_duration(t):
        return "long"
    if pa.types.is_struct(t):
        return {"type": "record", "name": path,
                "fields": [_avro_field(t.field(i), path) for i in range(t.num_fields)]}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        item = t.value_field
        return {"type": "array",
                "items": _nullable(item, _avro_type(item.type, f"{path}_item", column))}
    if pa.types.is_map(t):
        key, item = t.key_field, t.item_field
        value = _nullable(item, _avro_type(item.type, f"{path}_value", column))
        if pa.types.is_string(key.type) or pa.types.is_large_string(key.type):
            return {"type": "map", "values": value}
        entry = {"type": "record", "name": f"{path}_entry", "fields": [
            {"name": "key", "type": _avro_type(key.type, f"{path}_key", column)},
            {"name": "value", "type": value},
        ]}
        return {"type": "array", "items": entry}
    raise AvroSchemaError(f"column {column!r}: Arrow type {t} has no Avro form here")


class AvroEncoder:
    """Encodes each row of a record batch as a Confluent-framed Avro value, in order.

    `avro_schema` must be the schema `arrow_to_avro_schema` gives for the batches' Arrow schema
    (it is what the registry knows under `schema_id`); `check(schema)` verifies a batch schema.
    """

    def __init__(self, schema_id: int, avro_schema: dict[str, Any]) -> None:
        self.schema_id = schema_id
        self.avro_schema = avro_schema
        self._prefix = confluent_prefix(schema_id)
        self._checked: pa.Schema | None = None
        self._pins: list[bytes] = []  # see JsonEncoder

    def check(self, schema: pa.Schema) -> None:
        derived = arrow_to_avro_schema(schema, self.avro_schema.get("name", "Row"),
                                       self.avro_schema.get("namespace"))
        if derived != self.avro_schema:
            raise AvroSchemaError(
                "the batch's Arrow schema does not give the registered Avro schema "
                f"(schema id {self.schema_id}); register arrow_to_avro_schema(batch.schema)"
            )

    def encode(self, batch: pa.RecordBatch) -> list[bytes]:
        if self._checked is None or not batch.schema.equals(self._checked):
            self.check(batch.schema)
            self._checked = batch.schema
        batch = _plain_batch(batch)
        schema_capsule, array_capsule = batch.__arrow_c_array__()
        pins: list[bytes] = []
        values = _rows.avro_rows(schema_capsule, array_capsule, self._prefix, pins)
        self._pins = pins
        return values


def _plain_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Cast away dictionaries, views and other encodings the walker does not read."""
    plain = pa.schema([pa.field(f.name, _plain_type(f.type), f.nullable) for f in batch.schema])
    if plain.equals(batch.schema):
        return batch
    return batch.cast(plain)


# ----------------------------------------------------------------------------- Avro sources

# Opcodes of the schema program read by split_avro_block in _rows.c.
_OP_NULL, _OP_BOOL, _OP_VARINT, _OP_FLOAT, _OP_DOUBLE, _OP_BYTES, _OP_FIXED = range(7)
_OP_RECORD, _OP_ARRAY, _OP_MAP, _OP_UNION, _OP_STRING, _OP_ENUM = range(7, 13)

_PRIMITIVES = {
    "null": _OP_NULL, "boolean": _OP_BOOL, "int": _OP_VARINT, "long": _OP_VARINT,
    "float": _OP_FLOAT, "double": _OP_DOUBLE, "bytes": _OP_BYTES, "string": _OP_STRING,
}


def compile_avro_schema(schema: Any) -> bytes:
    """The schema as a flat program (int32 nodes) for the compiled record splitter."""
    nodes: list[list[int]] = []
    named: dict[str, int] = {}

    def full_name(name: str, namespace: str | None) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def node(s: Any, namespace: str | None) -> int:
        if isinstance(s, str):
            if s in _PRIMITIVES:
                return emit([_PRIMITIVES[s]])
            key = s if s in named else full_name(s, namespace)
            if key not in named:
                raise AvroSchemaError(f"unknown Avro type name {s!r}")
            return named[key]
        if isinstance(s, list):
            index = emit([_OP_UNION, len(s)] + [0] * len(s))
            for k, branch in enumerate(s):
                nodes[index][2 + k] = node(branch, namespace)
            return index
        if not isinstance(s, dict):
            raise AvroSchemaError(f"bad Avro schema element {s!r}")
        kind = s.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            ns = s.get("namespace", namespace)
            name = full_name(s["name"], ns)
            if kind == "enum":
                named[name] = emit([_OP_ENUM, len(s.get("symbols", []))])
                return named[name]
            if kind == "fixed":
                named[name] = emit([_OP_FIXED, int(s["size"])])
                return named[name]
            fields = s.get("fields", [])
            index = emit([_OP_RECORD, len(fields)] + [0] * len(fields))
            named[name] = index  # before the fields: a record may refer to itself
            inner_ns = name.rpartition(".")[0] or None
            for k, f in enumerate(fields):
                nodes[index][2 + k] = node(f["type"], inner_ns)
            return index
        if kind == "array":
            index = emit([_OP_ARRAY, 0])
            nodes[index][1] = node(s["items"], namespace)
            return index
        if kind == "map":
            index = emit([_OP_MAP, 0])
            nodes[index][1] = node(s["values"], namespace)
            return index
        return node(kind, namespace)  # {"type": "long", "logicalType": ...} and the like

    offsets: list[int] = []

    def emit(words: list[int]) -> int:
        nodes.append(words)
        offsets.append(-1)
        return len(nodes) - 1

    root = node(schema, None)
    # Lay nodes out flat, then turn node numbers into word offsets.
    position = 0
    for k, words in enumerate(nodes):
        offsets[k] = position
        position += len(words)
    flat: list[int] = []
    for words in nodes:
        op = words[0]
        if op == _OP_RECORD or op == _OP_UNION:
            flat += [op, words[1]] + [offsets[c] for c in words[2:]]
        elif op == _OP_ARRAY or op == _OP_MAP:
            flat += [op, offsets[words[1]]]
        else:
            flat += words
    if offsets[root] != 0:  # pragma: no cover - the root is always the first node emitted
        raise AvroSchemaError("internal: the schema's root is not the program's first node")
    return struct.pack(f"<{len(flat)}i", *flat)


class AvroBlockEncoder:
    """Confluent-framed values from the raw blocks of an Avro container file whose writer schema
    is the value schema registered under `schema_id`: no record is decoded.

    `encode` takes blocks as they are in the file (count, size, compressed data, sync marker;
    `Unit.avro_blocks` of the Avro reader) and the file's `codec`.
    """

    def __init__(self, schema_id: int, writer_schema: Any, codec: str = "null") -> None:
        self.schema_id = schema_id
        self._prefix = confluent_prefix(schema_id)
        self._program = compile_avro_schema(writer_schema)
        self.codec = codec
        self._decompress = _decompressor(codec)

    def encode(self, avro_blocks: bytes | memoryview) -> list[bytes]:
        return encode_avro_blocks(self._program, self.blocks(avro_blocks), self._prefix)

    def blocks(self, avro_blocks: bytes | memoryview) -> Iterator[tuple[bytes, int]]:
        """(decompressed data, record count) of each block in file framing."""
        view = memoryview(avro_blocks)
        for at, count, lo, hi in iter_blocks(view):  # the reader checked the sync markers
            try:
                data = self._decompress(bytes(view[lo:hi]))
            except Exception as exc:  # zlib.error, cramjam's DecompressionError, ...
                raise ValueError(f"the block at byte {at} of the unit does not decompress "
                                 f"({self.codec}): {type(exc).__name__}: {exc}") from None
            yield data, count


# ----------------------------------------------------------------------------- container blocks

SYNC_SIZE = 16
"""Bytes of the sync marker after every block of an Avro object container file."""
BLOCK_HEAD_MAX = 20
"""Bytes a block header (two zig-zag varint longs) takes at most."""


def read_block_head(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int, int]:
    """(record count, where the data starts, data length) of the container block whose header
    is at `pos` of `buf`: the one parser of Avro block headers.

    Raises IndexError when `buf` ends inside the header, ValueError when the header is not one
    (a varint longer than 10 bytes, a negative count or length).
    """
    count, p = read_zigzag(buf, pos)
    size, p = read_zigzag(buf, p)
    if count < 0 or size < 0:
        raise ValueError(f"{count} records, {size} bytes")
    return count, p, size


def iter_blocks(buf: bytes | memoryview, pos: int = 0) -> Iterator[tuple[int, int, int, int]]:
    """(block start, record count, data start, data end) of each block of `buf` from `pos`,
    blocks in file framing (count, size, data, sync marker) up to the end of `buf`. The sync
    markers are not checked. Raises ValueError when a block is malformed or runs past the end."""
    end = len(buf)
    while pos < end:
        try:
            count, p, size = read_block_head(buf, pos)
        except IndexError:
            raise ValueError(f"bad Avro block header at byte {pos}: it runs past the end") from None
        except ValueError as exc:
            raise ValueError(f"bad Avro block header at byte {pos}: {exc}") from None
        if p + size + SYNC_SIZE > end:
            raise ValueError(f"bad Avro block header at byte {pos}: {size} bytes of data run "
                             "past the end")
        yield pos, count, p, p + size
        pos = p + size + SYNC_SIZE


def _decompressor(codec: str) -> Callable[[bytes], bytes]:
    if codec == "null":
        return lambda data: data
    if codec == "deflate":
        return lambda data: zlib.decompress(data, -15)
    if codec == "bzip2":
        return bz2.decompress
    if codec == "xz":
        return lzma.decompress
    if codec == "snappy":
        import cramjam

        # Avro's snappy blocks end with a CRC-32 of the uncompressed data
        return lambda data: bytes(cramjam.snappy.decompress_raw(data[:-4]))
    if codec == "zstandard":
        import cramjam

        return lambda data: bytes(cramjam.zstd.decompress(data))
    raise ValueError(f"unknown Avro codec {codec!r}")


def encode_avro_blocks(
    program: bytes, blocks: Iterable[tuple[bytes | memoryview, int]], prefix: bytes
) -> list[bytes]:
    """`prefix` + each record of each (decompressed block bytes, record count), in order.

    `program` comes from `compile_avro_schema(writer_schema)`. Raises ValueError when a block
    does not hold exactly `count` records of that schema.
    """
    out: list[bytes] = []
    for block, count in blocks:
        out += _rows.split_avro_block(program, block, count, prefix)
    return out
