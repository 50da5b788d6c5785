"""The offset ledger: what the daemon has committed, kept in a compacted Kafka topic.

Each record is written in the same Kafka transaction as the rows it describes, so reading the
ledger back with read_committed tells exactly which rows are in Kafka. Keys are prefixed with
the daemon's `instance_id` so several daemons can share one ledger topic.

Records (JSON values, key -> value):
- `<id>|file|<fileId>`: one file's progress: state pending/active/done/quarantined, the position
  to resume at (`next`), rows produced, the size/mtime it was read at, the reason if
  quarantined.
- `<id>|stream`: the edit-stream txid up to which every ready file has been recorded.
- `<id>|source|<name>`: a source has started (so `start_from` applies only the first time).
- `<id>|watermark`: the completion watermark (`mtime_floor`), see below.
- `<id>|owner`: the life of the daemon that last started with this instance_id (written right
  after its producer fenced the previous one), so that a fenced producer can tell another
  instance from a transaction the coordinator aborted on timeout.

Bounded state: a done entry is kept until both its file's mtime and the time it became ready
fall below the watermark's `mtime_floor` = min(now - retention, mtime of every unfinished
file); then a tombstone lets compaction remove it, and a listed file below the floor counts as
done. (So after an edit-stream gap, a file renamed into place with an mtime older than the
retention window is taken as done: keep `ledger_retention_hours` above the age of the files
your jobs commit by renaming.)
A file rewritten later gets a new fileId (a new entry); an Avro file appended later is resumed
from the end position recorded when it was done; a done file changed in any other way
(truncated, a Parquet file appended to) is quarantined, since streaming it again would repeat
rows. A file renamed while it streams keeps its entry (same fileId), which takes the new path.

This module is pure (records in, decisions out); reading and creating the topic is
`pipeline.kafka.ledger_io`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson

PENDING = "pending"
ACTIVE = "active"
DONE = "done"
QUARANTINED = "quarantined"
FINISHED = (DONE, QUARANTINED)


class LedgerError(Exception):
    """The ledger topic cannot be used (wrong settings, unreadable record)."""


@dataclass(frozen=True)
class FileEntry:
    source: str
    path: str
    file_id: int
    size: int
    mtime: int
    state: str = PENDING
    next: str | None = None
    rows: int = 0
    ready_txid: int | None = None
    ready_ms: int = 0
    reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_json(self) -> bytes:
        return orjson.dumps({
            "source": self.source, "path": self.path, "file_id": self.file_id,
            "size": self.size, "mtime": self.mtime, "state": self.state, "next": self.next,
            "rows": self.rows, "ready_txid": self.ready_txid, "ready_ms": self.ready_ms,
            "reason": self.reason,
        })

    @classmethod
    def from_json(cls, data: bytes) -> FileEntry:
        d = orjson.loads(data)
        return cls(source=d["source"], path=d["path"], file_id=int(d["file_id"]),
                   size=int(d["size"]), mtime=int(d["mtime"]), state=d["state"], next=d.get("next"),
                   rows=int(d.get("rows", 0)), ready_txid=d.get("ready_txid"),
                   ready_ms=int(d.get("ready_ms", 0)), reason=d.get("reason"))


@dataclass(frozen=True)
class Keys:
    instance_id: str

    @property
    def prefix(self) -> bytes:
        return f"{self.instance_id}|".encode()

    def file(self, file_id: int) -> bytes:
        return f"{self.instance_id}|file|{file_id}".encode()

    def stream(self) -> bytes:
        return f"{self.instance_id}|stream".encode()

    def source(self, name: str) -> bytes:
        return f"{self.instance_id}|source|{name}".encode()

    def watermark(self) -> bytes:
        return f"{self.instance_id}|watermark".encode()

    def owner(self) -> bytes:
        return f"{self.instance_id}|owner".encode()


class LedgerState:
    """The committed ledger, folded in memory. Pure: records in, decisions out."""

    def __init__(self, instance_id: str) -> None:
        self.keys = Keys(instance_id)
        self.files: dict[int, FileEntry] = {}
        self.stream_txid: int | None = None
        self.sources: dict[str, dict[str, Any]] = {}
        self.mtime_floor: int = 0
        self.owner: str | None = None
        self.records_read = 0

    # ---- folding records read back (or just committed)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or not key.startswith(self.keys.prefix):
            return
        self.records_read += 1
        kind, _, rest = key[len(self.keys.prefix):].decode().partition("|")
        try:
            if kind == "file":
                fid = int(rest)
                if value is None:
                    self.files.pop(fid, None)
                else:
                    self.files[fid] = FileEntry.from_json(value)
            elif kind == "stream" and value is not None:
                self.stream_txid = int(orjson.loads(value)["txid"])
            elif kind == "source":
                if value is None:
                    self.sources.pop(rest, None)
                else:
                    self.sources[rest] = orjson.loads(value)
            elif kind == "watermark" and value is not None:
                self.mtime_floor = int(orjson.loads(value)["mtime_floor"])
            elif kind == "owner" and value is not None:
                self.owner = str(orjson.loads(value)["life"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(f"unreadable ledger record {key!r}: {exc}") from exc

    # ---- questions the daemon asks

    def unfinished(self) -> list[FileEntry]:
        """Files recorded but not done, in the order they became ready."""
        todo = [e for e in self.files.values() if not e.finished]
        return sorted(todo, key=lambda e: (e.ready_txid or 0, e.ready_ms, e.file_id))

    def decide(self, file_id: int, size: int, mtime: int, fmt: str, listed: bool) -> tuple[str, str | None]:
        """Whether a ready file should be produced, and from where.

        Returns (verdict, start) with verdict one of:
        "new" (produce from `start` or the beginning), "skip" (already done or in flight),
        "appended" (a done Avro file grew: produce from `start`), "changed" (a done file that
        cannot be resumed changed: quarantine it).

        Only an Avro file can take more rows after it was done: its new blocks follow the end
        recorded for it. Any other change (Parquet appended or rewritten, any truncation) would
        repeat rows or mix two versions of the file, so the file is quarantined, once: a file
        already quarantined after some of its rows were produced is never produced again.
        """
        entry = self.files.get(file_id)
        if entry is None:
            if listed and mtime < self.mtime_floor:
                return "skip", None
            return "new", None
        if not entry.finished:
            return "skip", None
        if size == entry.size:
            return "skip", None
        if entry.state == DONE and size > entry.size and fmt == "avro" and entry.next:
            return "appended", entry.next
        if entry.state == QUARANTINED:
            if entry.rows == 0:
                return "new", None  # nothing of it was produced: try the new contents from the start
            return "skip", None  # quarantined already: said once, in the ledger and the metrics
        return "changed", None

    def new_floor(self, now_ms: int, retention_ms: int) -> int:
        floor = now_ms - retention_ms
        for e in self.files.values():
            if not e.finished:
                floor = min(floor, e.mtime)
        return max(floor, self.mtime_floor)

    def compactable(self, floor: int) -> Iterator[FileEntry]:
        """Finished entries that the watermark already covers."""
        for e in self.files.values():
            if e.finished and max(e.mtime, e.ready_ms) < floor:
                yield e

    def counts(self) -> dict[str, int]:
        out = {PENDING: 0, ACTIVE: 0, DONE: 0, QUARANTINED: 0}
        for e in self.files.values():
            out[e.state] = out.get(e.state, 0) + 1
        return out


def advance(entry: FileEntry, **changes: Any) -> FileEntry:
    return replace(entry, **changes)


def now_ms() -> int:
    return int(time.time() * 1000)


def tombstones(state: LedgerState, entries: Iterable[FileEntry]) -> list[tuple[bytes, None]]:
    return [(state.keys.file(e.file_id), None) for e in entries]
