"""The listing detector: finds ready files by listing the sources instead of reading the edit
stream.

For daemons that are not HDFS superusers (the edit stream needs that privilege) and for
reconciling after a `Gap`. It lists each source's root with paged `getListing`, descends only
into directories that can hold a match (hidden and `_temporary` directories never), and yields
the complete files (not open for writing) that are not yet known.

Memory is bounded by what is in flight, not by how many files were ever seen: the caller says
what it already knows (`is_known`, e.g. backed by the daemon's ledger), and the detector keeps
only the directory stack of the walk in progress. Without `is_known`, it remembers the files of
its previous scan (id, length, mtime) so that repeated scans yield only what is new or changed;
that memory is replaced on each scan, so it is bounded by the files present in the sources.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import structlog

from hdfswatch.detector import FileReady, walk_files
from hdfswatch.errors import AccessControlError, FileNotFound
from hdfswatch.namenode import FileStatus, NameNodeClient
from hdfswatch.patterns import PathMatcher

log = structlog.get_logger("hdfswatch.listing")


def inode_path(file_id: int) -> str:
    """The path that names a file by its inode id wherever it is (HDFS's reserved namespace,
    served by every client protocol: RPC, data transfer, WebHDFS)."""
    return f"/.reserved/.inodes/{file_id}"


async def locate_file(client: NameNodeClient, file_id: int, matcher: PathMatcher) -> str | None:
    """Where the file with inode `file_id` is now among the files `matcher` matches, or None
    when it was deleted or is outside them (a file renamed while it was read). Costs a listing
    of the matcher's roots."""
    if await client.get_file_info(inode_path(file_id)) is None:
        return None  # deleted
    for root in matcher.roots():
        try:
            async for status in walk_files(client, root, matcher, need_location=False):
                if status.file_id == file_id:
                    return status.path
        except FileNotFound:
            continue
    return None


class ListingDetector:
    """Yields `FileReady(reason='listing')` for complete files under the sources."""

    def __init__(self, client: NameNodeClient, patterns: Sequence[str] | PathMatcher) -> None:
        self.client = client
        self.matcher = patterns if isinstance(patterns, PathMatcher) else PathMatcher(patterns)
        self._previous: dict[int, tuple[int, int]] = {}
        self.last_scan_files = 0
        self.last_scan_txid: int | None = None

    def set_patterns(self, patterns: Sequence[str] | PathMatcher) -> None:
        self.matcher = patterns if isinstance(patterns, PathMatcher) else PathMatcher(patterns)

    async def _anchor_txid(self) -> int | None:
        """The NameNode txid at the start of the scan, when this user may ask for it: every
        file ready before that txid is in the listing."""
        try:
            return await self.client.get_current_txid()
        except AccessControlError:
            return None

    async def scan(self, is_known: Callable[[FileStatus], bool] | None = None
                   ) -> AsyncIterator[FileReady]:
        """One pass over the sources. `is_known(status)` -> True skips a file."""
        txid = await self._anchor_txid()
        self.last_scan_txid = txid
        current: dict[int, tuple[int, int]] | None = {} if is_known is None else None
        count = 0
        for root in self.matcher.roots():
            try:
                async for status in walk_files(self.client, root, self.matcher):
                    if status.under_construction:
                        continue  # still being written
                    count += 1
                    if current is not None:
                        fingerprint = (status.length, status.mtime_ms)
                        current[status.file_id] = fingerprint
                        if self._previous.get(status.file_id) == fingerprint:
                            continue
                    elif is_known is not None and is_known(status):
                        continue
                    yield FileReady(status.path, status.file_id, status.length,
                                    status.mtime_ms, "listing", txid)
            except FileNotFound:
                log.debug("listing.root_missing", root=root)
        self.last_scan_files = count
        if current is not None:
            self._previous = current

    async def poll(self, interval: float = 30.0,
                   is_known: Callable[[FileStatus], bool] | None = None
                   ) -> AsyncIterator[FileReady]:
        """Scan forever, `interval` seconds apart."""
        while True:
            async for ready in self.scan(is_known):
                yield ready
            await asyncio.sleep(interval)
