"""One watch loop: the files that become ready under a set of patterns, as a stream of changes.

    watch = Watch(client, patterns, start_txid=...)          # the edit stream
    watch = Watch(client, patterns, listing_interval=10.0)    # listing passes (non-superusers)
    async for change in watch:
        Batch        one edit-log transaction read: its events, the files it made ready, its txid
        Gap          edits were purged before they were read; a listing of every pattern follows
        Listed       a file found by a listing (after a gap, or on each pass in listing mode)
        ListingDone  a listing ended: all its files were yielded

Both the daemon's intake and `hdfs2kafka watch` read files this way. `patterns` is a list or a
callable read before each batch (patterns that change live). A listing yields every complete
file unless `is_known` says it is known; without `is_known`, listing mode remembers the previous
pass and yields only new or changed files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from hdfswatch.detector import FileDetector, FileReady
from hdfswatch.events import Event, EventBatch
from hdfswatch.events import Gap as TailerGap
from hdfswatch.listing import ListingDetector
from hdfswatch.namenode import FileStatus, NameNodeClient
from hdfswatch.tailer import EditTailer

Patterns = Sequence[str] | Callable[[], Sequence[str]]


@dataclass(frozen=True)
class Batch:
    txid: int
    events: tuple[Event, ...]
    ready: list[FileReady]


@dataclass(frozen=True)
class Gap:
    requested_txid: int
    first_available_txid: int

    @property
    def missed(self) -> int:
        return self.first_available_txid - self.requested_txid


@dataclass(frozen=True)
class Listed:
    file: FileReady
    why: str
    """'gap' or 'poll'."""


@dataclass(frozen=True)
class ListingDone:
    why: str
    files: int


Change = Batch | Gap | Listed | ListingDone


class Watch:
    def __init__(self, client: NameNodeClient, patterns: Patterns, *, start_txid: int | None = None,
                 listing_interval: float | None = None,
                 is_known: Callable[[FileStatus], bool] | None = None, poll_share: int = 1) -> None:
        self.client = client
        self.poll_share = max(1, poll_share)
        """How many processes tail this NameNode together (the members of a group): each polls
        that many times less eagerly. Measured: each added member then costs the NameNode
        0.02-0.05 of a core instead of about 0.2, detection slowing with the group's size
        (bench/RESULTS.md, "NameNode cost of tailing, per group member")."""
        self._patterns = patterns
        self.start_txid = start_txid
        self.listing_interval = listing_interval
        self.is_known = is_known
        self.tailer: EditTailer | None = None

    def patterns(self) -> list[str]:
        p = self._patterns
        return list(p() if callable(p) else p)

    @property
    def last_txid(self) -> int | None:
        """Every edit up to this txid has been yielded (None: none read yet, or listing mode)."""
        return self.tailer.last_txid if self.tailer is not None else None

    def __aiter__(self) -> AsyncIterator[Change]:
        if self.listing_interval is not None:
            return self._poll(self.listing_interval)
        return self._edits()

    async def _edits(self) -> AsyncIterator[Change]:
        n = self.poll_share
        self.tailer = tailer = EditTailer(self.client, start_txid=self.start_txid,
                                          min_interval=0.002 * n, cost_factor=0.5 * n)
        detector = FileDetector(self.client, self.patterns())
        async for item in tailer:
            if isinstance(item, TailerGap):
                yield Gap(item.requested_txid, item.first_available_txid)
                async for change in self._listing(ListingDetector(self.client, self.patterns()),
                                                  "gap", lambda s: False):
                    yield change
                continue
            assert isinstance(item, EventBatch)
            detector.set_patterns(self.patterns())
            yield Batch(item.txid, item.events, await detector.feed(item))

    async def _poll(self, interval: float) -> AsyncIterator[Change]:
        listing = ListingDetector(self.client, self.patterns())
        while True:
            listing.set_patterns(self.patterns())
            async for change in self._listing(listing, "poll", self.is_known):
                yield change
            await asyncio.sleep(interval)

    async def _listing(self, listing: ListingDetector, why: str,
                       is_known: Callable[[FileStatus], bool] | None) -> AsyncIterator[Change]:
        found = 0
        async for ready in listing.scan(is_known):
            found += 1
            yield Listed(ready, why)
        yield ListingDone(why, found)
