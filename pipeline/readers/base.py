"""What every file reader gives the pipeline: units of work with their positions, and one typed
error per way a file can be bad.

A unit is a slice of a file small enough to be one piece of a Kafka transaction: a slice of one
Parquet row group, or one or more whole Avro blocks. `start` is where it begins, `end` is where
the next unit begins (the resume point to record once the unit is committed), `None` at the end
of the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol

import pyarrow as pa

from hdfsread.base import RandomAccessFile
from hdfswatch.errors import PermanentError
from pipeline.positions import Position

Format = Literal["parquet", "avro"]

DEFAULT_MAX_ROWS = 65_536


class Unit:
    """A unit of work read from a file.

    `nbytes` is the number of bytes of the file the unit covers (exact for Avro blocks, the
    unit's share of its row group's compressed size for Parquet): what a bytes/s limit meters.
    For Avro, `avro_blocks` holds the unit's blocks exactly as they are in the file (count, size,
    compressed data, sync marker for each), so that an Avro-to-Avro path can re-use the records
    without decoding them; the file's header and writer schema are on the reader.

    `batch` is the unit's rows as Arrow. A reader may give `decode` instead, called the first
    time `batch` is asked for: an Avro unit streamed as Avro values with no key and no headers
    from its columns is then never decoded (its records are split from the blocks, which checks
    each against the schema).
    """

    __slots__ = ("_batch", "_decode", "avro_blocks", "end", "nbytes", "rows", "start")

    def __init__(self, start: Position, end: Position | None, rows: int, nbytes: int, *,
                 batch: pa.RecordBatch | None = None, avro_blocks: bytes | None = None,
                 decode: Callable[[], pa.RecordBatch] | None = None) -> None:
        if (batch is None) == (decode is None):
            raise ValueError("a unit needs its batch or a way to decode it, not both")
        self.start = start
        self.end = end
        self.rows = rows
        self.nbytes = nbytes
        self.avro_blocks = avro_blocks
        self._batch = batch
        self._decode = decode

    @property
    def batch(self) -> pa.RecordBatch:
        if self._batch is None:
            assert self._decode is not None
            self._batch = self._decode()
            self._decode = None
        return self._batch

    def __repr__(self) -> str:
        return f"Unit(start={self.start}, end={self.end}, rows={self.rows}, nbytes={self.nbytes})"


class FileReader(Protocol):
    """Reads one file as a sequence of units. Synchronous and CPU-bound: run it in a worker."""

    format: Format

    @property
    def path(self) -> str: ...

    @property
    def total_rows(self) -> int | None:
        """Rows in the file when known without reading it all (Parquet), else None (Avro)."""
        ...

    @property
    def schema(self) -> pa.Schema:
        """Arrow schema of every unit's batch."""
        ...

    def units(self, start: Position | None = None,
              max_rows: int = DEFAULT_MAX_ROWS) -> Iterator[Unit]:
        """Units from `start` (the beginning when None) to the end of the file, in order."""
        ...


class ReadError(PermanentError):
    """A file that cannot be read. Names the file, the position reached and the reason.

    Bad input is never retried (a permanent error): the daemon quarantines the file with this
    message.
    """

    kind = "unreadable"

    def __init__(self, path: str, position: Position | str | None, reason: str) -> None:
        self.path = path
        self.position = position
        self.reason = reason
        where = f" at {position}" if position is not None else ""
        super().__init__(f"{path}{where}: {self.kind}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error intact across a process pool.
        return (type(self), (self.path, self.position, self.reason))


class EmptyFile(ReadError):
    """The file has zero bytes."""

    kind = "empty file"


class BadMagic(ReadError):
    """The file does not start (or end) with the magic bytes of the expected format."""

    kind = "bad magic"


class TruncatedFile(ReadError):
    """The file ends before the format says it should (an incomplete copy or upload)."""

    kind = "truncated file"


class CorruptFile(ReadError):
    """Bytes that do not decode: a damaged footer, page, block or record."""

    kind = "corrupt file"


class SyncMarkerMismatch(CorruptFile):
    """An Avro block is not followed by the file's sync marker."""

    kind = "sync marker mismatch"


class UnknownCodec(ReadError):
    """A compression codec that this reader does not know."""

    kind = "unknown codec"


class UnsupportedType(ReadError):
    """A column type that cannot be represented in Arrow by this reader."""

    kind = "unsupported type"


class BadPosition(ReadError):
    """A start position that is not a place in this file (wrong format, past the end, not on
    a block boundary)."""

    kind = "bad position"


PARQUET_MAGIC = b"PAR1"
AVRO_MAGIC = b"Obj\x01"
MAGICS: dict[bytes, Format] = {PARQUET_MAGIC: "parquet", AVRO_MAGIC: "avro"}
_NAMES: dict[Format, str] = {"parquet": "Parquet", "avro": "an Avro container file"}


def check_magic(file: RandomAccessFile, expected: Format | None = None) -> Format:
    """The file's format by its first four bytes, checked against `expected` (None: either).

    Raises `EmptyFile` for a file of zero bytes and `BadMagic` for one that starts otherwise.
    """
    if file.size == 0:
        raise EmptyFile(file.path, None, "zero bytes")
    head = file.read_at(0, 4)
    fmt = MAGICS.get(head)
    if expected is None:
        if fmt is None:
            raise BadMagic(file.path, "byte 0", f"starts with {head!r}: neither Parquet "
                                                "(b'PAR1') nor Avro (b'Obj\\x01')")
        return fmt
    if fmt != expected:
        magic = next(m for m, f in MAGICS.items() if f == expected)
        raise BadMagic(file.path, "byte 0", f"starts with {head!r}, not {magic!r}: not "
                                            f"{_NAMES[expected]}")
    return fmt
