"""A read_committed consumer of the demo's topics: decodes each value (JSON, or Avro framed with
a Schema Registry id), counts its row id in `demo.check.Seen` and passes a sample on."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from demo.check import Seen
from pipeline.encoders.registry import SchemaRegistryClient
from pipeline.kafka.client import committed_consumer

OnSample = Callable[[str, str, int, int, bytes | None, Any], None]
"""(source, topic, partition, offset, key, value) of one row in every `sample_every`."""


class Consumer:
    """`settings` are the daemon's Kafka client settings (`KafkaConfig.client`: security,
    SASL, TLS); `registry_ca_file` verifies an https registry."""

    def __init__(self, bootstrap: str, topics: dict[str, str], registry: str | None,
                 sample_every: int, on_sample: OnSample, *,
                 settings: Mapping[str, Any] | None = None,
                 registry_ca_file: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = topics  # topic -> source
        self.sample_every = sample_every
        self.on_sample = on_sample
        self.settings = settings
        self.seen = {s: Seen() for s in topics.values()}
        self._consumer: Any = None
        self._registry = (SchemaRegistryClient(registry, ca_file=registry_ca_file)
                          if registry else None)
        self._schemas: dict[int, Any] = {}

    async def start(self) -> None:
        self._consumer = committed_consumer(self.bootstrap, *self.topics, settings=self.settings)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self, timeout_ms: int = 300) -> int:
        """Count what arrived within `timeout_ms`; the number of records."""
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=20_000)
        got = 0
        for tp, messages in batch.items():
            source = self.topics[tp.topic]
            seen = self.seen[source]
            for m in messages:
                value = await self._decode(m.value)
                row_id = value.get("id") if isinstance(value, dict) else None
                seen.add(row_id if isinstance(row_id, int) else -1)
                if (seen.rows - 1) % self.sample_every == 0:
                    self.on_sample(source, tp.topic, tp.partition, m.offset, m.key, value)
            got += len(messages)
        return got

    async def _decode(self, raw: bytes | None) -> Any:
        if raw is None:
            return None
        if raw[:1] == b"\0" and len(raw) > 5 and self._registry is not None:
            import fastavro

            (schema_id,) = struct.unpack(">I", raw[1:5])
            schema = self._schemas.get(schema_id)
            if schema is None:
                schema = fastavro.parse_schema(await self._registry.get_by_id(schema_id))
                self._schemas[schema_id] = schema
            return fastavro.schemaless_reader(io.BytesIO(raw[5:]), schema, None)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    async def caught_up_to_end(self) -> bool:
        """Whether every partition has been read to its (last stable) end offset."""
        parts = self._consumer.assignment()
        if not parts:
            return False
        ends = await self._consumer.end_offsets(list(parts))
        for tp in parts:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True
