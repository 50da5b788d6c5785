"""hdfsread: the bytes of HDFS files, for the Parquet and Avro readers.

`hdfswatch` learns which files are ready (the edit stream, listings, the NameNode's IPC);
`hdfsread` reads them: one seekable, ranged, bounded-memory file interface (`base`) over two
backends, HDFS's own protocols through hdfs-native (`native`) and WebHDFS (`webhdfs`), chosen by
`[hdfs] reader` and built once per daemon or command (`stack`).
"""

from hdfsread.base import (
    FileChanged,
    FileIO,
    FileMoved,
    FileVanished,
    LocalFile,
    RandomAccessFile,
    RangedReadError,
    ReadFailed,
    ReadRefused,
    RemoteFile,
)
from hdfsread.stack import DEFAULT_READER, READERS, ReadSettings, ReadStack, open_read_stack

__all__ = [
    "DEFAULT_READER",
    "READERS",
    "FileChanged",
    "FileIO",
    "FileMoved",
    "FileVanished",
    "LocalFile",
    "RandomAccessFile",
    "RangedReadError",
    "ReadFailed",
    "ReadRefused",
    "ReadSettings",
    "ReadStack",
    "RemoteFile",
    "open_read_stack",
]
