"""Kafka record batches built in bulk, handed to aiokafka ready to send.

aiokafka builds a batch one `append` at a time, each a Python call on the event loop, and places
keyed rows with a pure-Python murmur2: at tens of thousands of rows per unit, that was the
daemon's ceiling. Here a worker thread builds a unit's batches in one call into the compiled
`_batches` module (rows placed as Kafka's default partitioner places them, split at the
producer's batch size, records written, compressed as aiokafka would); the event loop only
submits them with `producer.send_batch(batch, topic, partition=p)` and, when the sender drains
a batch, writes its 61-byte header (producer id, epoch, sequence, CRC): a few tens of
microseconds for 512 KiB.

A `PrebuiltBatch` stands where aiokafka expects its own `BatchBuilder`: the accumulator and the
sender call `record_count()`, `closed()`, `close()`, `append()` (refused: the batch is closed),
`size()`, `_set_producer_state()` and `_build()`, and nothing else (aiokafka 0.14,
producer/message_accumulator.py and producer/sender.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import codec

from pipeline.kafka import _batches

HEADER_SIZE = _batches.HEADER_SIZE
TRANSACTIONAL = 0x10

# aiokafka's `compression_type` names, their codec bits in the batch attributes and the
# encoders aiokafka's own batch builder uses for them (with their default levels).
CODECS: dict[str, tuple[int, Callable[[bytes], bytes], Callable[[], bool]]] = {
    "gzip": (0x01, codec.gzip_encode, codec.has_gzip),
    "snappy": (0x02, codec.snappy_encode, codec.has_snappy),
    "lz4": (0x03, codec.lz4_encode, codec.has_lz4),
    "zstd": (0x04, codec.zstd_encode, codec.has_zstd),
}

Headers = Sequence[Sequence[tuple[str, bytes | None]] | None]


class PrebuiltBatch:
    """One record batch, records written (and compressed), header written when sent.

    The header waits for `_build` because aiokafka sets the producer's id, epoch and the
    partition's sequence number only when its sender takes the batch; a retry sends the same
    buffer again, with the same sequence, so `_build` writes the header once (again only if
    the producer state changed in between, which aiokafka does not do).
    """

    __slots__ = ("_attributes", "_buf", "_built", "_producer", "_record_count", "_timestamp_ms")

    def __init__(self, buf: bytearray, record_count: int, *, timestamp_ms: int,
                 compression: str | None, transactional: bool) -> None:
        if record_count < 1:
            raise ValueError(f"a batch holds at least one record, not {record_count}")
        if len(buf) < HEADER_SIZE:
            raise ValueError(f"a batch of {len(buf)} bytes has no room for its header")
        self._buf = buf
        self._record_count = record_count
        self._timestamp_ms = timestamp_ms
        self._attributes = (TRANSACTIONAL if transactional else 0) | _compress(buf, compression)
        self._producer = (-1, -1, 0)  # aiokafka's builder's, for a producer without an id
        self._built = False

    # ---- what aiokafka's accumulator and sender call

    def record_count(self) -> int:
        return self._record_count

    def closed(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to do: the batch is complete from the start."""

    def append(self, *, timestamp: Any, key: Any, value: Any, headers: Any = ()) -> None:
        """Refused, as a closed aiokafka batch refuses: `producer.send` then waits for a new one."""
        return None

    def size(self) -> int:
        return len(self._buf)

    def _set_producer_state(self, producer_id: int, producer_epoch: int,
                            base_sequence: int) -> None:
        state = (producer_id, producer_epoch, base_sequence)
        if state != self._producer:
            self._producer = state
            self._built = False  # the header is written anew, in the same buffer

    def _build(self) -> bytearray:
        """The batch as sent: header written on the first call, the same buffer after."""
        if not self._built:
            producer_id, producer_epoch, base_sequence = self._producer
            _batches.finish(self._buf, self._record_count, attributes=self._attributes,
                            producer_id=producer_id, producer_epoch=producer_epoch,
                            base_sequence=base_sequence, first_timestamp=self._timestamp_ms,
                            max_timestamp=self._timestamp_ms)
            self._built = True
        return self._buf

    def __repr__(self) -> str:
        return (f"PrebuiltBatch(records={self._record_count}, bytes={len(self._buf)}, "
                f"attributes={self._attributes:#04x})")


def _codec(compression: str | None) -> tuple[int, Callable[[bytes], bytes]] | None:
    """The codec bits and encoder of an aiokafka `compression_type` name (None: none)."""
    if compression is None:
        return None
    try:
        bits, encode, available = CODECS[compression]
    except KeyError:
        raise ValueError(f"unknown compression {compression!r} "
                         f"(one of {', '.join(CODECS)} or None)") from None
    if not available():
        raise RuntimeError(f"the library for {compression} compression is not installed")
    return bits, encode


def _compress(buf: bytearray, compression: str | None) -> int:
    """Compress the records of `buf` in place as aiokafka's builder does; the codec bits.

    As aiokafka's compiled builder (the one it uses), the codec is kept even where it does not
    shrink the records: a batch is sent as the producer's `compression_type` says.
    """
    codec_of = _codec(compression)
    if codec_of is None:
        return 0
    bits, encode = codec_of
    buf[HEADER_SIZE:] = encode(bytes(buf[HEADER_SIZE:]))
    return bits


def build_batches(values: Sequence[bytes | None], keys: Sequence[bytes | None] | None,
                  headers: Headers | None, *, partitions: int, null_index: int,
                  max_batch_bytes: int, compression: str | None, transactional: bool,
                  timestamp_ms: int | None = None) -> list[tuple[int, PrebuiltBatch]]:
    """A unit's rows as batches ready for `send_batch`, each with its partition index.

    Keyed rows go to `(murmur2(key) & 0x7FFFFFFF) % partitions`, as Kafka's default partitioner
    places them; rows without a key (all rows when `keys` is None) to `null_index`. An index's
    rows keep their order, split into batches of at most `max_batch_bytes` (header included),
    but a record larger than that alone in its batch. Indexes come in order of first
    appearance. Every record carries `timestamp_ms` (now, when None). The lists must not
    change during the call: the copying runs without the GIL.
    """
    _codec(compression)  # an unknown name fails before any work
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    built = _batches.build(values, keys, headers, partitions, null_index, max_batch_bytes,
                           timestamp_ms)
    return [(index, PrebuiltBatch(buf, count, timestamp_ms=timestamp_ms,
                                  compression=compression, transactional=transactional))
            for index, count, buf in built]
