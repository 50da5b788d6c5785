"""File readers: Parquet and Avro files as units of work with seekable positions.

`open_reader(file, format)` picks the reader (by magic bytes when the format is `auto`); readers
yield `Unit`s and raise one `ReadError` subclass per kind of bad file.
"""

from __future__ import annotations

from typing import Literal

from hdfswatch.ranged import RandomAccessFile
from pipeline.readers.base import (
    DEFAULT_MAX_ROWS,
    BadMagic,
    BadPosition,
    CorruptFile,
    EmptyFile,
    FileReader,
    Format,
    ReadError,
    SyncMarkerMismatch,
    TruncatedFile,
    Unit,
    UnknownCodec,
    UnsupportedType,
)

__all__ = [
    "DEFAULT_MAX_ROWS",
    "BadMagic",
    "BadPosition",
    "CorruptFile",
    "EmptyFile",
    "FileReader",
    "Format",
    "ReadError",
    "SyncMarkerMismatch",
    "TruncatedFile",
    "Unit",
    "UnknownCodec",
    "UnsupportedType",
    "detect_format",
    "open_reader",
]

_MAGICS: dict[bytes, Format] = {b"PAR1": "parquet", b"Obj\x01": "avro"}


def detect_format(file: RandomAccessFile) -> Format:
    """The file's format from its first four bytes."""
    if file.size == 0:
        raise EmptyFile(file.path, None, "zero bytes")
    head = file.read_at(0, 4)
    fmt = _MAGICS.get(head)
    if fmt is None:
        raise BadMagic(file.path, "byte 0", f"starts with {head!r}: neither Parquet (b'PAR1') "
                                            "nor Avro (b'Obj\\x01')")
    return fmt


def open_reader(file: RandomAccessFile,
                format: Format | Literal["auto"] = "auto") -> FileReader:
    """A reader for `file`; reads the footer (Parquet) or header (Avro) and checks them."""
    from pipeline.readers.avro import AvroReader
    from pipeline.readers.parquet import ParquetReader

    fmt = detect_format(file) if format == "auto" else format
    if fmt == "parquet":
        return ParquetReader(file)
    if fmt == "avro":
        return AvroReader(file)
    raise ValueError(f"unknown format {format!r}: expected parquet, avro or auto")
