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
- `<id>|reshard`: written by `hdfs2kafka ledger reshard` while it moves a one-partition ledger's
  entries to their shards ("copying", then "done"); the daemon ignores it.
- `<id>|owner`: written by daemons before groups (the life that last started); now ignored.

`<id>` is the group (`[daemon] group`, else `instance_id`). With several shards each partition
of the ledger topic is one shard's ledger, with its own stream, source and watermark records.

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
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from itertools import chain
from operator import itemgetter
from typing import Any

import orjson

from pipeline.ledger_done import MAX_SOURCES, DoneTable

PENDING = "pending"
ACTIVE = "active"
DONE = "done"
QUARANTINED = "quarantined"
FINISHED = (DONE, QUARANTINED)


class LedgerError(Exception):
    """The ledger topic cannot be used (wrong settings, unreadable record)."""


class ShardCountMismatch(LedgerError):
    """The ledger topic's partitions are not the group's shards (`[daemon] shards` differs, or
    its entries were written for another count): no retry fixes it; the daemon exits with the
    config error's code until the operator reshards or fixes the setting."""


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
    """The committed ledger, folded in memory. Pure: records in, decisions out.

    File entries are kept two ways: a done file whose entry has the usual form (no reason, an
    Avro end `block:OFFSET` or none) as a row of a compact `DoneTable` (see
    `pipeline.ledger_done`: its path, ready txid and exact mtime are not kept, nothing asks a
    done file for them), every other entry (pending, active, quarantined) as a `FileEntry` in a
    dict. `get(file_id)` answers for both; `files` is a read-only mapping over both.
    `compact_done=False` keeps every entry whole (for tools that want the done files' paths).
    """

    def __init__(self, instance_id: str, *, compact_done: bool = True) -> None:
        self.keys = Keys(instance_id)
        self.compact_done = compact_done
        self._full: dict[int, FileEntry] = {}
        self._done = DoneTable()
        self.files: Mapping[int, FileEntry] = _Files(self)
        self.stream_txid: int | None = None
        self.sources: dict[str, dict[str, Any]] = {}
        self.mtime_floor: int = 0
        self.owner: str | None = None
        self.records_read = 0

    # ---- file entries

    def get(self, file_id: int) -> FileEntry | None:
        """The file's entry (a done file's rebuilt from its compact row: path ""), or None."""
        entry = self._full.get(file_id)
        if entry is not None:
            return entry
        row = self._done.get(file_id)
        if row is None:
            return None
        size, stamp, rows, block, src = row
        return FileEntry(source=self._done.sources[src], path="", file_id=file_id, size=size,
                         mtime=stamp, state=DONE, next=None if block < 0 else f"block:{block}",
                         rows=rows, ready_ms=stamp)

    def _set(self, fid: int, entry: FileEntry) -> None:
        if self.compact_done and entry.state == DONE and self._put_done(fid, entry):
            self._full.pop(fid, None)
            return
        self._done.remove(fid)
        self._full[fid] = entry

    def _put_done(self, fid: int, e: FileEntry) -> bool:
        """Keep a done entry as a compact row, if it has a form the row can give back exactly."""
        if e.reason is not None:
            return False
        block = _block(e.next)
        if block is None:
            return False
        src = self._done.source_no(e.source)
        if src is None:
            return False
        try:
            self._done.put(fid, e.size, max(e.mtime, e.ready_ms), e.rows, block, src)
        except (OverflowError, TypeError):
            return False
        return True

    def _remove(self, fid: int) -> None:
        self._full.pop(fid, None)
        self._done.remove(fid)

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
                    self._remove(fid)
                else:
                    self._set(fid, FileEntry.from_json(value))
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

    def loader(self) -> Loader:
        """A fold of many records at once (reading the ledger back), much cheaper per record
        than `apply`: call `add` with the records in offset order, then `finish`."""
        return Loader(self)

    # ---- questions the daemon asks

    def unfinished(self) -> list[FileEntry]:
        """Files recorded but not done, in the order they became ready."""
        todo = [e for e in self._full.values() if not e.finished]
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
        entry = self._full.get(file_id)
        if entry is None:
            row = self._done.get(file_id)
            if row is None:
                if listed and mtime < self.mtime_floor:
                    return "skip", None
                return "new", None
            done_size, block = row[0], row[3]
            if size == done_size:
                return "skip", None
            if size > done_size and fmt == "avro" and block >= 0:
                return "appended", f"block:{block}"
            return "changed", None
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
        for e in self._full.values():
            if not e.finished:
                floor = min(floor, e.mtime)
        return max(floor, self.mtime_floor)

    def stale(self, floor: int, limit: int | None = None) -> list[int]:
        """File ids of the finished entries that the watermark `floor` covers (at most `limit`):
        cheap when there are none."""
        out = [e.file_id for e in self._full.values() if e.finished and max(e.mtime, e.ready_ms) < floor]
        if limit is None or len(out) < limit:
            out.extend(self._done.stale(floor, None if limit is None else limit - len(out)))
        return out[:limit] if limit is not None else out

    def compactable(self, floor: int) -> Iterator[FileEntry]:
        """Finished entries that the watermark already covers."""
        for fid in self.stale(floor):
            entry = self.get(fid)
            if entry is not None:
                yield entry

    def counts(self) -> dict[str, int]:
        out = {PENDING: 0, ACTIVE: 0, DONE: len(self._done), QUARANTINED: 0}
        for e in self._full.values():
            out[e.state] = out.get(e.state, 0) + 1
        return out


_ROW = itemgetter(0, 1, 2, 3, 4, 5)


def _loads_or_none(value: bytes | None) -> Any:
    try:
        return None if value is None else orjson.loads(value)
    except ValueError:
        return None


def _block(nxt: str | None) -> int | None:
    """The row's block column for a done entry's `next` (-1: none); None if the row cannot
    give that `next` back exactly."""
    if nxt is None:
        return -1
    if not nxt.startswith("block:"):
        return None
    try:
        block = int(nxt[6:])
    except ValueError:
        return None
    return block if block >= 0 and f"block:{block}" == nxt else None


class _Files(Mapping[int, FileEntry]):
    """`LedgerState.files`: every file entry, read-only (done files rebuilt from their rows:
    iterating builds one object per file, for tests and tools, not for the daemon's paths)."""

    def __init__(self, state: LedgerState) -> None:
        self._state = state

    def __getitem__(self, fid: int) -> FileEntry:
        entry = self._state.get(fid)
        if entry is None:
            raise KeyError(fid)
        return entry

    def get(self, fid: int, default: Any = None) -> Any:  # type: ignore[override]
        entry = self._state.get(fid)
        return default if entry is None else entry

    def __contains__(self, fid: object) -> bool:
        return fid in self._state._full or fid in self._state._done

    def __iter__(self) -> Iterator[int]:
        return chain(list(self._state._full), self._state._done)

    def __len__(self) -> int:
        return len(self._state._full) + len(self._state._done)

    def __repr__(self) -> str:
        return f"<ledger files: {len(self._state._full)} whole, {len(self._state._done)} done rows>"


class Loader:
    """Folds records read back from the ledger into a `LedgerState`, in offset order.

    The per-record work is cut to what a done file needs: a file record whose value is a done
    entry of the usual form goes straight into columns (parsed once, no `FileEntry`); any other
    file record (pending, active, quarantined, a tombstone) is kept raw by file id until
    `finish`, and a later done record of the same file drops it. At `finish` the done columns
    are sorted by file id (the last record of a file wins), the files whose latest record is
    not a done one are taken out, and those records are parsed. The other record kinds
    (stream, sources, watermark, owner) go through `LedgerState.apply` as they come.
    """

    def __init__(self, state: LedgerState) -> None:
        self.state = state
        self.prefix = state.keys.prefix
        self.file_prefix = self.prefix + b"file|"
        self.rows = array("q")
        """The compact done rows, interleaved: fid, size, stamp, rows, block, source number."""
        self.sources: list[str] = []
        self.source_no: dict[str, int] = {}
        self.later: dict[int, bytes | None] = {}
        """File id -> its latest record when that is not a compact done one (None: tombstone)."""

    def add(self, records: Iterable[Any]) -> None:
        """Fold records (objects with `.key` and `.value`: aiokafka's records) in offset order.
        Best given many at once (all those of a fetch): their file values are parsed in one call."""
        state = self.state
        if not state.compact_done:
            for r in records:
                state.apply(r.key, r.value)
            return
        prefix, file_prefix = self.prefix, self.file_prefix
        keys: list[bytes] = []
        values: list[bytes | None] = []
        add_key, add_value = keys.append, values.append
        for r in records:
            key = r.key
            if key is not None and key.startswith(prefix):
                if key.startswith(file_prefix):
                    add_key(key)
                    add_value(r.value)
                else:  # the other kinds do not depend on the file records' order
                    state.apply(key, r.value)
        if not keys:
            return
        plen = len(file_prefix)
        try:
            fids = list(map(int, map(itemgetter(slice(plen, None)), keys)))
        except ValueError:
            for key in keys:
                try:
                    int(key[plen:])
                except ValueError as exc:
                    raise LedgerError(f"unreadable ledger record {key!r}: {exc}") from exc
            raise
        try:
            # One parse for all the values (a tombstone's None stands as null). JSON values
            # joined by commas cannot run into one another: the count tells a bad one.
            docs = orjson.loads(b"[" + b",".join([b"null" if v is None else v for v in values]) + b"]")
            if len(docs) != len(values):
                raise ValueError("values run into one another")
        except ValueError:
            docs = list(map(_loads_or_none, values))
        later = self.later
        drop = later.pop
        done: list[tuple[Any, ...]] = []  # the rows, each with its record's value last
        add_row = done.append
        source_no = self.source_no
        for fid, value, d in zip(fids, values, docs, strict=True):
            if value is None:
                later[fid] = None
                continue
            try:
                if d["state"] != DONE or d["reason"] is not None:
                    later[fid] = value
                    continue
                nxt = d["next"]
                if nxt is None:
                    block = -1
                else:
                    b = _block(nxt)
                    if b is None:
                        later[fid] = value
                        continue
                    block = b
                src = source_no.get(d["source"])
                if src is None:
                    src = self._source(d["source"])
                mtime, ready = d["mtime"], d["ready_ms"]
                add_row((fid, d["size"], mtime if mtime > ready else ready, d["rows"], block, src, value))
            except Exception:  # anything unusual: the record is parsed whole at `finish`
                later[fid] = value
                continue
            if later:
                drop(fid, None)
        rows_out = self.rows
        mark = len(rows_out)
        try:
            rows_out.extend(chain.from_iterable(map(_ROW, done)))
        except (OverflowError, TypeError):
            # A value the columns cannot take (not an int, too large): row by row, and such a
            # record, if it is its file's last here, is kept whole (as a later record).
            del rows_out[mark:]
            last = {row[0]: k for k, row in enumerate(done)}
            for k, row in enumerate(done):
                try:
                    rows_out.extend(_ROW(row))
                except (OverflowError, TypeError):
                    del rows_out[len(rows_out) // 6 * 6:]
                    if last[row[0]] == k and row[0] not in later:
                        later[row[0]] = row[6]
        state.records_read += len(fids)

    def _source(self, name: Any) -> int:
        if not isinstance(name, str) or len(self.sources) >= MAX_SOURCES:
            raise ValueError("source")
        no = self.source_no[name] = len(self.sources)
        self.sources.append(name)
        return no

    def finish(self) -> LedgerState:
        state = self.state
        if not state.compact_done:
            return state
        later, self.later = self.later, {}
        flat, self.rows = self.rows, array("q")
        cols = [flat[k::6] for k in range(6)]
        del flat
        table = DoneTable.load(cols[0], cols[1], cols[2], cols[3], cols[4], array("H", cols[5]),
                               self.sources, dead=later)
        del cols
        if not state._full and not len(state._done):
            state._done = table
        else:  # folded onto a state that had entries: the loaded rows come later
            for fid in table:
                row = table.get(fid)
                assert row is not None
                size, stamp, rows, block, src = row
                state._set(fid, FileEntry(source=table.sources[src], path="", file_id=fid, size=size,
                                          mtime=stamp, state=DONE, rows=rows, ready_ms=stamp,
                                          next=None if block < 0 else f"block:{block}"))
        for fid, value in later.items():
            if value is None:
                state._remove(fid)
                continue
            try:
                state._set(fid, FileEntry.from_json(value))
            except (ValueError, KeyError, TypeError) as exc:
                raise LedgerError(f"unreadable ledger record {state.keys.file(fid)!r}: {exc}") from exc
        return state


def advance(entry: FileEntry, **changes: Any) -> FileEntry:
    return replace(entry, **changes)


def now_ms() -> int:
    return int(time.time() * 1000)


def tombstones(state: LedgerState, entries: Iterable[FileEntry]) -> list[tuple[bytes, None]]:
    return [(state.keys.file(e.file_id), None) for e in entries]
