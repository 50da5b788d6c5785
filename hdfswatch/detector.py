"""The file detector: raw edit-stream events in, `FileReady` out.

A file is ready when it is complete, not when it appears:

- CLOSE of a path that a source matches (reason 'close');
- RENAME whose destination a source matches (reason 'rename'): `hdfs dfs -put` writes
  `name._COPYING_` and renames it; Spark, Hive and MapReduce commit by renaming files or whole
  directories out of `_temporary`. A renamed directory yields every complete file under it,
  found by listing;
- TRUNCATE of a matched file (reason 'truncate'): its contents changed, it is complete at the
  new size; a CLOSE may follow when HDFS had to recover the last block.

Hidden and temporary names are never ready (see `hdfswatch.patterns`). A file that is still
open is not ready: CREATE and APPEND mark a matched path open ("pending"), CLOSE ends that,
UNLINK drops it, RENAME carries it along. Events carry paths, not inode ids, so the detector
asks the NameNode (`getFileInfo`) for the file id when a file becomes ready; a file already
gone by then is dropped, since a later event says where it went, and one open for writing
again is left to its coming CLOSE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

import structlog

from hdfswatch.errors import AccessControlError, FileNotFound
from hdfswatch.events import (
    AppendEvent,
    CloseEvent,
    CreateEvent,
    EventBatch,
    INodeType,
    RenameEvent,
    TruncateEvent,
    UnlinkEvent,
)
from hdfswatch.namenode import FileStatus, NameNodeClient
from hdfswatch.patterns import PathMatcher

__all__ = ["FileDetector", "FileReady", "PathMatcher"]

log = structlog.get_logger("hdfswatch.detector")


@dataclass(frozen=True, slots=True)
class FileReady:
    """A complete file that a source matches.

    `size` and `mtime` (ms since the epoch) are the file's at the event that made it ready
    (for a CLOSE: the size the writer closed it at); `txid` is that event's transaction id
    (for a listing: the NameNode txid when the listing started, or None). `reason` is
    'close', 'rename', 'truncate' or 'listing'.
    """

    path: str
    file_id: int
    size: int
    mtime: int
    reason: str
    txid: int | None = None


def _under(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def _moved(path: str, src: str, dst: str) -> str:
    return dst + path[len(src):]


async def walk_files(client: NameNodeClient, directory: str, matcher: PathMatcher, *,
                     need_location: bool = True) -> AsyncIterator[FileStatus]:
    """Files under `directory` (depth first) that `matcher` matches, skipping subtrees that
    cannot hold a match; a directory that vanishes meanwhile, or that this user may not list,
    is skipped (the latter with a warning)."""
    stack = [directory]
    while stack:
        current = stack.pop()
        subdirs: list[str] = []
        try:
            async for status in client.list_dir(current, need_location=need_location):
                if status.is_dir:
                    if matcher.could_contain(status.path):
                        subdirs.append(status.path)
                elif not status.is_symlink and matcher.matches(status.path):
                    yield status
        except FileNotFound:
            continue  # deleted meanwhile
        except AccessControlError as exc:
            log.warning("detector.unreadable_directory", path=current, error=str(exc))
            continue
        stack.extend(reversed(subdirs))


class FileDetector:
    """Turns `EventBatch`es into `FileReady`s for the paths `patterns` match.

    `feed` must see the batches in txid order (as `EditTailer` yields them). Memory: the set of
    matched files currently open for writing (`pending`), at most `max_pending` paths.
    """

    def __init__(self, client: NameNodeClient, patterns: Sequence[str] | PathMatcher, *,
                 max_pending: int = 100_000) -> None:
        self.client = client
        self.matcher = patterns if isinstance(patterns, PathMatcher) else PathMatcher(patterns)
        self.max_pending = max_pending
        self.pending: dict[str, int] = {}
        """Matched paths open for writing -> txid that opened them."""
        self.ready_total = 0
        self.dropped_total = 0

    def set_patterns(self, patterns: Sequence[str] | PathMatcher) -> None:
        """Replace the source patterns (a registry reload); open files no longer matched are
        forgotten. Cheap when nothing changed."""
        matcher = patterns if isinstance(patterns, PathMatcher) else PathMatcher(patterns)
        if matcher.patterns == self.matcher.patterns:
            return
        self.matcher = matcher
        self.pending = {p: t for p, t in self.pending.items() if matcher.matches(p)}

    # ------------------------------------------------------------------ pending (open) files

    def _open(self, path: str, txid: int) -> None:
        self.pending.pop(path, None)
        self.pending[path] = txid
        if len(self.pending) > self.max_pending:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            log.warning("detector.pending_full", evicted=oldest, max_pending=self.max_pending)

    def _forget_under(self, path: str) -> None:
        self.pending.pop(path, None)
        if self.pending:
            prefix = path.rstrip("/") + "/"
            for p in [p for p in self.pending if p.startswith(prefix)]:
                del self.pending[p]

    def _move_pending(self, src: str, dst: str) -> None:
        if not self.pending:
            return
        moved = {p: t for p, t in self.pending.items() if p == src or _under(p, src)}
        for p, t in moved.items():
            del self.pending[p]
            new = _moved(p, src, dst)
            if self.matcher.matches(new):
                self.pending[new] = t

    # ------------------------------------------------------------------ feeding

    async def feed(self, batch: EventBatch) -> list[FileReady]:
        """The files that `batch` made ready, in event order."""
        txid = batch.txid
        # path -> (reason, size or None, mtime or None); dict order is event order.
        candidates: dict[str, tuple[str, int | None, int | None]] = {}
        dir_renames: list[str] = []
        matcher = self.matcher
        for ev in batch.events:
            if isinstance(ev, CloseEvent):
                if ev.path in self.pending:
                    del self.pending[ev.path]
                if matcher.matches(ev.path):
                    candidates.pop(ev.path, None)
                    size = ev.file_size if ev.file_size >= 0 else None
                    candidates[ev.path] = ("close", size, ev.timestamp or None)
            elif isinstance(ev, CreateEvent):
                if ev.inode_type == INodeType.FILE and matcher.matches(ev.path):
                    candidates.pop(ev.path, None)  # overwritten: the closed file is gone
                    self._open(ev.path, txid)
            elif isinstance(ev, AppendEvent):
                if matcher.matches(ev.path):
                    candidates.pop(ev.path, None)  # open again: ready at its next CLOSE
                    self._open(ev.path, txid)
            elif isinstance(ev, RenameEvent):
                src, dst = ev.src_path, ev.dest_path
                was_open = src in self.pending
                self._move_pending(src, dst)
                for path in [p for p in candidates if p == src or _under(p, src)]:
                    reason, size, mtime = candidates.pop(path)
                    new = _moved(path, src, dst)
                    if matcher.matches(new):
                        candidates[new] = (reason, size, mtime)
                if was_open:
                    continue  # an open file renamed into place: ready at its CLOSE
                if matcher.matches(dst):
                    candidates.setdefault(dst, ("rename", None, None))
                elif matcher.could_contain(dst):
                    dir_renames.append(dst)
            elif isinstance(ev, UnlinkEvent):
                self._forget_under(ev.path)
                for path in [p for p in candidates if p == ev.path or _under(p, ev.path)]:
                    del candidates[path]
                dir_renames = [d for d in dir_renames
                               if not (d == ev.path or _under(d, ev.path))]
            elif isinstance(ev, TruncateEvent):
                if matcher.matches(ev.path):
                    log.info("detector.truncate", path=ev.path, size=ev.file_size, txid=txid)
                    candidates.pop(ev.path, None)
                    candidates[ev.path] = ("truncate", ev.file_size, ev.timestamp or None)
            # MetadataEvent and UnknownEvent do not change readiness.

        if not candidates and not dir_renames:
            return []
        ready: list[FileReady] = []
        seen: set[str] = set()
        for path, (reason, size, mtime) in candidates.items():
            status = await self._stat(path)
            if status is None:
                self.dropped_total += 1
                continue
            if status.is_dir:
                if matcher.could_contain(path):
                    dir_renames.append(path)
                continue
            if status.under_construction:
                # Open again (appended, or renamed into place while written): its CLOSE,
                # which is still to come in the stream, makes it ready.
                continue
            seen.add(path)
            ready.append(FileReady(
                path=path,
                file_id=status.file_id,
                size=status.length if size is None else size,
                mtime=status.mtime_ms if mtime is None else mtime,
                reason=reason,
                txid=txid,
            ))
        for directory in dir_renames:
            async for status in walk_files(self.client, directory, matcher):
                if status.path in seen or status.under_construction:
                    continue  # an open file is ready at its CLOSE
                seen.add(status.path)
                ready.append(FileReady(status.path, status.file_id, status.length,
                                       status.mtime_ms, "rename", txid))
        self.ready_total += len(ready)
        return ready

    async def feed_all(self, batches: Iterable[EventBatch]) -> list[FileReady]:
        """`feed` for several batches in order."""
        out: list[FileReady] = []
        for batch in batches:
            out.extend(await self.feed(batch))
        return out

    async def _stat(self, path: str) -> FileStatus | None:
        try:
            return await self.client.get_file_info(path, need_location=True)
        except (FileNotFound, AccessControlError) as exc:
            log.warning("detector.stat_failed", path=path, error=str(exc))
            return None
