"""From a decoded unit to Kafka records, as a source asks: values (json or avro), keys from
columns, optional headers naming the file and the position."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config import SourceConfig
from pipeline.positions import AvroPosition

Headers = Sequence[tuple[str, bytes]]
Encoded = tuple[list[bytes], list[bytes | None] | None, list[Headers] | None]
UnitEncoder = Callable[[Any, str], Encoded]


def make_unit_encoder(source: SourceConfig, reader: Any, schema_registry: str | None,
                      registry_ca_file: str | None = None) -> UnitEncoder:
    """A function turning one reader unit into (values, keys, headers). An https registry is
    verified with `registry_ca_file` (None: the system's CAs)."""
    value_encoder = _value_encoder(source, reader, schema_registry, registry_ca_file)
    key_encoder = None
    if source.key:
        from pipeline.encoders.keys import KeyEncoder

        key_encoder = KeyEncoder(list(source.key))

    def encode(unit: Any, path: str) -> Encoded:
        values = value_encoder(unit)
        keys = key_encoder.encode(unit.batch) if key_encoder is not None else None
        headers: list[Any] | None = None
        if source.headers:
            from pipeline.encoders.headers import HeaderBuilder

            builder = HeaderBuilder(path)
            if isinstance(unit.start, AvroPosition):
                headers = builder.avro(unit.start, len(values))
            else:
                headers = builder.parquet(unit.start, len(values))
        return values, keys, headers

    return encode


def _value_encoder(source: SourceConfig, reader: Any, schema_registry: str | None,
                   registry_ca_file: str | None) -> Callable[[Any], list[bytes]]:
    if source.value_format == "json":
        from pipeline.encoders.json import JsonEncoder, JsonOptions

        enc = JsonEncoder(JsonOptions(timestamps=source.timestamps))  # type: ignore[arg-type]
        return lambda unit: enc.encode(unit.batch)
    if source.value_format == "avro":
        from pipeline.encoders import avro_value_encoder

        return avro_value_encoder(source, reader, schema_registry,  # type: ignore[no-any-return]
                                  ca_file=registry_ca_file)
    raise ValueError(f"source {source.name}: unknown value_format {source.value_format!r}")
