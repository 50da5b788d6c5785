"""File readers: Parquet and Avro files as units of work with seekable positions.

`open_reader(file, format)` picks the reader (by magic bytes when the format is `auto`); readers
yield `Unit`s and raise one `ReadError` subclass per kind of bad file.
"""

from __future__ import annotations

from typing import Literal

from hdfsread.base import RandomAccessFile
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
    check_magic,
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
    "check_magic",
    "detect_format",
    "open_reader",
]

def detect_format(file: RandomAccessFile) -> Format:
    """The file's format from its first four bytes."""
    return check_magic(file)


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
