"""Encoders: rows of record batches to Kafka values, keys and headers.

- json.py: `JsonEncoder`, one JSON object per row (the type mapping is in its docstring).
- avro.py: `AvroEncoder` (Confluent wire format, schema derived from Arrow), and
  `encode_avro_blocks` / `AvroBlockEncoder` for Avro sources, re-framing the file's own records.
- keys.py: `KeyEncoder`; headers.py: `HeaderBuilder`; registry.py: `SchemaRegistryClient`.
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


__all__ = ["VALUE_FORMATS", "JsonEncoder", "JsonOptions", "ValueEncoder", "make_value_encoder"]
