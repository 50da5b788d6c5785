"""Encoders: rows of record batches to Kafka values, keys and headers.

- json.py: `JsonEncoder`, one JSON object per row (the type mapping is in its docstring).
- avro_json.py: the JSON of Avro values Arrow has no type for (unions of several types,
  recursive records, Avro durations), which the Avro reader passes through as Avro bytes.
- avro.py: `AvroEncoder` (Confluent wire format, schema derived from Arrow), and
  `encode_avro_blocks` / `AvroBlockEncoder` for Avro sources, re-framing the file's own records.
- keys.py: `KeyEncoder`; headers.py: `HeaderBuilder`; registry.py: `SchemaRegistryClient`.
- errors.py: `EncodeError`, permanent: rows that cannot be encoded as the source asks.
- _rows.c: the compiled walker behind all of them (no Python work per value).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import pyarrow as pa

from pipeline.encoders.json import JsonEncoder, JsonOptions

ValueFormat = Literal["json", "avro"]
VALUE_FORMATS: tuple[str, ...] = ("json", "avro")


class ValueEncoder(Protocol):
    def encode(self, batch: pa.RecordBatch) -> list[bytes]: ...


def make_value_encoder(
    value_format: str,
    *,
    json_options: JsonOptions | None = None,
    schema_id: int | None = None,
    avro_schema: dict[str, Any] | None = None,
) -> ValueEncoder:
    """The value encoder of a source's `value_format`.

    For "avro", register the schema first (`SchemaRegistryClient.register(f"{topic}-value",
    arrow_to_avro_schema(arrow_schema, name))`) and pass its id and the schema.
    """
    if value_format == "json":
        return JsonEncoder(json_options)
    if value_format == "avro":
        if schema_id is None or avro_schema is None:
            raise ValueError("the avro value format needs a registered schema id and its schema")
        from pipeline.encoders.avro import AvroEncoder

        return AvroEncoder(schema_id, avro_schema)
    raise ValueError(f"unknown value format {value_format!r}: expected one of {', '.join(VALUE_FORMATS)}")


def avro_value_encoder(source: Any, reader: Any, schema_registry: str | None,
                       ca_file: str | None = None) -> Any:
    """The `avro` value encoder of a source for one file: a function of a reader unit giving its
    Confluent-framed values. Blocking (it registers the schema): call it where the file is
    opened, in a worker thread.

    The value schema is registered under `<topic>-value`. For an Avro file it is the file's own
    writer schema and the records are re-framed without decoding (`unit.avro_blocks`); for other
    files it is derived from the Arrow schema (`arrow_to_avro_schema`, record named after the
    topic) and each row is encoded.
    """
    from pipeline.encoders.avro import AvroBlockEncoder, AvroEncoder, arrow_to_avro_schema
    from pipeline.encoders.registry import register_blocking

    if not schema_registry:
        raise ValueError(
            f"source {source.name!r}: value_format avro needs kafka.schema_registry (the Schema "
            "Registry URL) in the config"
        )
    subject = f"{source.topic}-value"
    writer_schema = getattr(reader, "avro_schema", None)
    if getattr(reader, "format", None) == "avro" and writer_schema is not None:
        schema_id = register_blocking(schema_registry, subject, writer_schema, ca_file=ca_file)
        blocks = AvroBlockEncoder(schema_id, writer_schema, getattr(reader, "codec", "null"))

        def from_blocks(unit: Any) -> list[bytes]:
            try:
                return blocks.encode(unit.avro_blocks)
            except ValueError:
                # The records are split without being decoded; decoding the unit names the
                # block, record and field at fault (CorruptFile), where it can.
                unit.batch  # noqa: B018
                raise

        return from_blocks
    schema = arrow_to_avro_schema(reader.schema, source.topic)
    schema_id = register_blocking(schema_registry, subject, schema, ca_file=ca_file)
    rows = AvroEncoder(schema_id, schema)
    return lambda unit: rows.encode(unit.batch)


__all__ = [
    "VALUE_FORMATS",
    "JsonEncoder",
    "JsonOptions",
    "ValueEncoder",
    "avro_value_encoder",
    "make_value_encoder",
]
