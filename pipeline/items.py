"""The items the stages of the flow pass each other.

    intake --FileWork--> worker pool --UnitRecords/FileFinished/FileQuarantined--> committer
    intake --FilesRecorded/FileQuarantined--> committer

Each is a plain value. The committer turns them into Kafka records and ledger records (see
pipeline/kafka/transaction.py); what the ledger says about a file is a `FileEntry`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.ledger import FileEntry


@dataclass
class FileWork:
    """A file to stream, from `start` (a position string) or from its beginning."""

    entry: FileEntry
    start: str | None = None
    ready_monotonic: float = field(default_factory=time.monotonic)


@dataclass
class UnitRecords:
    """A unit of work, encoded: the records of rows [start, end) of one file."""

    file_id: int
    source: str
    topic: str
    start: str
    end: str | None
    values: list[bytes]
    keys: list[bytes | None] | None
    headers: Sequence[Sequence[tuple[str, bytes]]] | None
    nbytes: int
    final: bool = False
    """The file's last unit: committing it marks the file done (`end` is then the end-of-file
    position, where an appended Avro file would resume, or None)."""
    total_rows: int | None = None
    ready_monotonic: float | None = None
    batches: Batches | None = None
    """The rows as finished record batches, built in the worker's thread (`values`, `keys` and
    `headers` are then dropped); None: the committer builds them."""
    count: int = -1

    def __post_init__(self) -> None:
        if self.count < 0:
            self.count = len(self.values)

    @property
    def rows(self) -> int:
        return self.count


@dataclass
class Batches:
    """A unit's rows as record batches for a topic of `partitions` partitions, batches of at most
    `limit` bytes: (partition index, batch) in file order within each index. Unkeyed rows are all
    at index 0 (the committer picks their partition); keyed rows at their key's partition."""

    partitions: int
    limit: int
    keyed: bool
    batches: list[tuple[int, Any]]


@dataclass
class FileFinished:
    """A file with no rows left to produce (an empty file)."""

    file_id: int
    source: str
    end: str | None = None
    ready_monotonic: float | None = None


@dataclass
class FileQuarantined:
    file_id: int
    source: str
    reason: str
    position: str | None
    dead_letter_topic: str | None = None
    entry: FileEntry | None = None
    """The file as seen now, for a file quarantined without being read (a done file that
    changed): recorded with its new size and mtime, so that the same change is not seen again."""


@dataclass
class FilesRecorded:
    """Files seen ready (not started yet) and the edit-stream txid they were seen up to.

    An entry keeps its state if it is finished (a `latest` source's files recorded as done) and
    is pending otherwise; an entry for a file that is unfinished in the ledger (one renamed
    while it streams) changes only that file's path, its progress stays."""

    entries: Sequence[FileEntry]
    stream_txid: int | None = None
    sources_started: Sequence[str] = ()


Item = UnitRecords | FileFinished | FileQuarantined | FilesRecorded


class ItemSink(Protocol):
    """Where the intake and the workers put items for the committers: a committer's queue, or
    `pipeline.shards.ShardQueues` (each item to its shard's committer)."""

    async def put(self, item: Item) -> None: ...
