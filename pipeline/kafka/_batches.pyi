"""Types of the compiled Kafka batch builder (_batches.c)."""

from collections.abc import Sequence

from typing_extensions import Buffer

HEADER_SIZE: int
CRC32C_HARDWARE: bool

def murmur2(data: Buffer, /) -> int: ...
def crc32c(data: Buffer, /) -> int: ...
def _crc32c_sw(data: Buffer, /) -> int: ...
def build(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[Sequence[tuple[str, bytes | None]] | None] | None,
    partitions: int,
    null_index: int,
    max_batch_bytes: int,
    timestamp_ms: int,
) -> list[tuple[int, int, bytearray]]: ...
def finish(
    buf: bytearray,
    record_count: int,
    *,
    attributes: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    first_timestamp: int,
    max_timestamp: int,
) -> None: ...
