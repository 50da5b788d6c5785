"""Kafka message keys from one or more columns of each row.

- No key columns: no keys (`encode` returns None; Kafka spreads such records over partitions).
- One column: the value's own text, UTF-8: strings as they are, binary as its raw bytes,
  numbers as digits, and other types as in the JSON mapping but without the quotes of a JSON
  string (`2024-01-01`, `12.30`, `2024-01-01T00:00:00.000000Z`); a null value gives a null key.
- Several columns: a JSON array of the values in the configured order (`[42,"eu"]`), with the
  JSON mapping of json.py. An array keeps keys short and their meaning fixed by the order.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from pipeline.encoders.errors import EncodeError
from pipeline.encoders.json import MODE_ARRAY, MODE_BARE, JsonOptions, encode_rows, walker_args


class KeyColumnError(EncodeError):
    """A key column that is not in the batch."""


class KeyEncoder:
    """Builds each row's Kafka key from `columns` (see the module docstring for the forms)."""

    def __init__(self, columns: Sequence[str], options: JsonOptions | None = None) -> None:
        self.columns = tuple(columns)
        self._args = walker_args(options or JsonOptions())

    def encode(self, batch: pa.RecordBatch) -> list[bytes | None] | None:
        if not self.columns:
            return None
        missing = [c for c in self.columns if c not in batch.schema.names]
        if missing:
            raise KeyColumnError(
                f"key column(s) {', '.join(map(repr, missing))} not in the data "
                f"(columns: {', '.join(batch.schema.names)})"
            )
        keys = batch.select(list(self.columns))
        mode = MODE_BARE if len(self.columns) == 1 else MODE_ARRAY
        return encode_rows(keys, self._args, mode)
