"""Intake: which ready files are streamed, from where, and in which order.

    run()   files recorded but unfinished first, in the order they became ready; then
            the first-start listing of new sources (`earliest`: their files are streamed,
            `latest`: recorded as done); then the watch (hdfswatch/watch.py): edit batches,
            or listing passes, and a listing after an edit-stream gap
    admit() the ready files a source takes and the ledger says to stream (not done, not in
            flight); a done file that changed is quarantined, once
    start() records admitted files in the ledger, then hands them to the workers

With several shards (pipeline/shards.py) the intake sees every file and takes those of the
shards this member owns; `to_committer` is then the shards' committers' queues together.

Exactly once rests on one order: a file's `FilesRecorded` is queued to the committer before
its `FileWork` reaches a worker, so its first rows can never commit before its entry. `start`
is the one way a new file reaches the workers, and it does both, in that order (the committer's
queue is FIFO, and the worker's rows go through the same queue after it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog

from hdfswatch.detector import FileReady, PathMatcher
from hdfswatch.errors import EditLogNotOpen
from pipeline import ledger as ledger_mod
from pipeline.config import SourceConfig
from pipeline.items import (
    FileFinished,
    FileQuarantined,
    FilesRecorded,
    FileWork,
    Item,
    ItemSink,
    UnitRecords,
)
from pipeline.ledger import FileEntry, LedgerState
from pipeline.shards import OwnedLedger

log = structlog.get_logger("hdfs2kafka.intake")

STREAM_RECORD_INTERVAL_S = 5.0
"""How often the edit-stream txid is recorded when no file became ready."""


class Intake:
    """Detection and admission for one flow (rebuilt with it after a failed transaction)."""

    def __init__(self, state: LedgerState | OwnedLedger, *, to_committer: ItemSink,
                 to_workers: asyncio.Queue[FileWork], sources: Callable[[], Sequence[SourceConfig]],
                 refused: dict[int, tuple[str, str]],
                 on_detected: Callable[[str], None] = lambda source: None,
                 on_ready: Callable[[], None] = lambda: None,
                 on_edits: Callable[[int | None], None] = lambda txid: None,
                 poll_share: int = 1) -> None:
        self.poll_share = poll_share
        """The members of the group, who all tail the edit stream (see hdfswatch.watch.Watch)."""
        self.state = state if isinstance(state, OwnedLedger) else OwnedLedger({0: state}, 1)
        self.to_committer = to_committer
        self.to_workers = to_workers
        self.sources = sources
        self.refused = refused
        """Files whose records the broker refused (file id -> (source, reason)), kept by the
        daemon across flows: quarantined when they are started, the others stream."""
        self.on_detected = on_detected
        self.on_ready = on_ready
        self.on_edits = on_edits
        self.in_flight: set[int] = set()
        """Files being streamed or recorded and not committed as finished yet."""

    # ------------------------------------------------------------------ detection

    async def run(self, client: Any, *, listing_interval: float | None = None) -> None:
        """Detect until cancelled. `listing_interval`: find files by listing passes this many
        seconds apart instead of reading the edit stream."""
        # Ready once the flow streams and (edit stream) the txid to read from is known: files
        # written from then on are found. The unfinished files and a first start's listing go
        # to the workers after that: with a backlog of thousands of files they wait for queue
        # room for minutes, and readiness (systemd's READY=1 within TimeoutStartSec) must not.
        if listing_interval is not None:
            # A new `latest` source's first listing takes the files there as streamed: it runs
            # before readiness (it queues nothing for the workers), so that no file written
            # after readiness is among them.
            await self._first_start(client, edits=False)
            self.on_ready()
            await self._resume_unfinished()
            await self._watch(client, start_txid=None, listing_interval=listing_interval)
            return
        first_start = self.state.stream_txid is None
        if first_start:
            current = await client.get_current_txid()
            if current < 0:
                raise EditLogNotOpen("the NameNode's edit log is not open yet (txid -1: a NameNode "
                                     "starting or becoming active); the edit stream has no start")
            start_txid = current + 1
        else:
            start_txid = (self.state.stream_txid or 0) + 1
        self.on_ready()
        await self._resume_unfinished()
        # The anchor goes to each shard with no txid yet (all of them at a first start; with
        # several shards, one whose first start was cut short) and to no other.
        await self._first_start(client, edits=True, anchor_txid=start_txid - 1)
        await self._watch(client, start_txid=start_txid, listing_interval=None)

    async def _resume_unfinished(self) -> None:
        for entry in self.state.unfinished():
            await self.resume(entry)

    async def _first_start(self, client: Any, *, edits: bool, anchor_txid: int | None = None) -> None:
        """Sources the ledger has not seen. With the edit stream, `earliest` ones stream the
        files there now (a listing); with listing passes, `latest` ones take the files there
        now as streamed (the passes find the others)."""
        new = [s for s in self.sources() if s.name not in self.state.sources]
        if not new:
            if anchor_txid is not None and self.state.unanchored():
                await self.to_committer.put(FilesRecorded(entries=[], stream_txid=anchor_txid))
            return
        if edits:
            earliest = [s for s in new if s.start_from == "earliest"]
            if earliest:
                await self._reconcile(client, earliest, "first start (earliest)")
        else:
            for src in new:
                if src.start_from == "latest":
                    await self._reconcile(client, [src], "first start (latest)", skip=True)
        # With the anchor: the txid the daemon's first start reads the edit stream from.
        await self.to_committer.put(FilesRecorded(entries=[], stream_txid=anchor_txid,
                                                  sources_started=[s.name for s in new]))

    async def _reconcile(self, client: Any, sources: list[SourceConfig], reason: str,
                         skip: bool = False) -> None:
        from hdfswatch.listing import ListingDetector

        found = 0
        async for ready in ListingDetector(client, [s.path for s in sources]).scan(lambda s: False):
            entries = self.admit([ready], listed=True, only=sources)
            if skip:
                # Taken as streamed only in a shard where the source starts now (in the others
                # it started before: its files there are new ones, to stream).
                entries = [e if e.finished or self.state.started(e.file_id, e.source)
                           else ledger_mod.advance(e, state=ledger_mod.DONE) for e in entries]
            found += len(entries)
            await self.start(entries)
        log.info("listing reconciled", reason=reason, sources=[s.name for s in sources], new_files=found)

    async def _watch(self, client: Any, *, start_txid: int | None, listing_interval: float | None) -> None:
        from hdfswatch.watch import Batch, Gap, Listed, ListingDone, Watch

        watch = Watch(client, lambda: [s.path for s in self.sources()], start_txid=start_txid,
                      listing_interval=listing_interval, is_known=lambda s: False,
                      poll_share=self.poll_share)
        last_record = time.monotonic()
        last_recorded_txid = (start_txid or 1) - 1
        found = 0
        async for change in watch:
            if isinstance(change, Batch):
                self.on_edits(watch.last_txid)
                entries = self.admit(change.ready, listed=False)
                txid = change.txid
                if entries or (txid > last_recorded_txid
                               and time.monotonic() - last_record > STREAM_RECORD_INTERVAL_S):
                    await self.start(entries, stream_txid=txid)
                    last_record = time.monotonic()
                    last_recorded_txid = txid
            elif isinstance(change, Listed):
                entries = self.admit([change.file], listed=True)
                found += len(entries)
                await self.start(entries)
            elif isinstance(change, ListingDone):
                log.info("listing reconciled", reason="edit-stream gap" if change.why == "gap" else "poll",
                         sources=[s.name for s in self.sources()], new_files=found)
                found = 0
            elif isinstance(change, Gap):
                self.on_edits(watch.last_txid)
                log.warning("edit-stream gap: events were purged before we read them; reconciling "
                            "by listing", requested_txid=change.requested_txid,
                            first_available_txid=change.first_available_txid)

    # ------------------------------------------------------------------ admission

    def route(self, path: str, only: Iterable[SourceConfig] | None = None) -> SourceConfig | None:
        """The first source (in the registry's order) whose path matches `path`."""
        for src in only if only is not None else self.sources():
            if PathMatcher([src.path]).matches(path):
                return src
        return None

    def admit(self, readies: Iterable[FileReady], listed: bool,
              only: Iterable[SourceConfig] | None = None) -> list[FileEntry]:
        """Ledger entries for the ready files that must be produced (not done, not in flight),
        and quarantined entries for done files that changed in a way that cannot be streamed."""
        out: list[FileEntry] = []
        only = list(only) if only is not None else None
        for r in readies:
            src = self.route(r.path, only)
            if src is None or r.file_id in self.in_flight:
                continue  # in flight: streaming, or renamed while it streams (its worker follows)
            if not self.state.takes(r.file_id, None if listed else r.txid):
                continue  # another member's shard, or an edit this shard has recorded already
            fmt = src.format if src.format != "auto" else ("avro" if r.path.endswith(".avro") else "parquet")
            verdict, start = self.state.decide(r.file_id, r.size, r.mtime, fmt, listed)
            if verdict == "skip":
                continue
            entry = FileEntry(source=src.name, path=r.path, file_id=r.file_id, size=r.size, mtime=r.mtime,
                              ready_txid=r.txid, ready_ms=ledger_mod.now_ms(), next=start)
            known = self.state.get(r.file_id)
            if known is not None and verdict in ("appended", "changed"):
                # The same file: its rows already streamed still count.
                entry = ledger_mod.advance(entry, rows=known.rows)
            if verdict == "changed":
                # Streaming it again would repeat rows (or send rows of a file that is no more
                # what was streamed): quarantined, at its new size, so the change is seen once.
                was = known.size if known is not None else None
                how = "truncated" if was is not None and r.size < was else "rewritten or appended to"
                entry = ledger_mod.advance(
                    entry, state=ledger_mod.QUARANTINED, next=known.next if known else None,
                    reason=f"{r.path}: changed after it was streamed ({how}: {was} -> {r.size} "
                           f"bytes); {fmt} files are streamed once: write a new file instead")
                log.warning("done file changed; quarantined", source=src.name, path=r.path,
                            file_id=r.file_id, reason=entry.reason)
            self.on_detected(src.name)
            out.append(entry)
        return out

    # ------------------------------------------------------------------ recording and dispatch

    async def start(self, entries: Sequence[FileEntry], stream_txid: int | None = None) -> None:
        """Record admitted files (with the edit-stream txid they were seen up to), then hand the
        unfinished ones to the workers. A quarantined one goes to the committer as a quarantine
        (ledger, metric, /status and dead-letter topic together), ahead of the txid, so a crash
        cannot skip it."""
        fresh = []
        for e in entries:
            if e.state == ledger_mod.QUARANTINED:
                self.in_flight.add(e.file_id)  # until committed: a second event for it is the same
                await self.to_committer.put(self._quarantine(e, e.reason or "quarantined", seen=True))
            else:
                fresh.append(e)
                if e.finished:
                    # Recorded as done (a `latest` source's first listing): not admitted again
                    # before the record is committed.
                    self.in_flight.add(e.file_id)
        if fresh or stream_txid is not None:
            await self.to_committer.put(FilesRecorded(entries=fresh, stream_txid=stream_txid))
        for e in fresh:
            await self.resume(e)

    async def resume(self, entry: FileEntry) -> None:
        """Hand a file already recorded in the ledger to the workers, from where it stands."""
        if entry.finished:
            return
        self.in_flight.add(entry.file_id)
        refused = self.refused.get(entry.file_id)
        if refused is not None:
            # Kafka refused its records: quarantined where its committed rows end.
            log.error("file quarantined", source=entry.source, path=entry.path, reason=refused[1],
                      position=entry.next)
            await self.to_committer.put(self._quarantine(entry, refused[1]))
            return
        await self.to_workers.put(FileWork(entry=entry, start=entry.next))

    def _quarantine(self, e: FileEntry, reason: str, *, seen: bool = False) -> FileQuarantined:
        """`seen`: the entry is the file as seen now (a done file that changed), recorded with
        its new size and mtime so that the same change is not seen again."""
        src = next((s for s in self.sources() if s.name == e.source), None)
        return FileQuarantined(file_id=e.file_id, source=e.source, reason=reason, position=e.next,
                               dead_letter_topic=src.errors.dead_letter_topic if src else None,
                               entry=e if seen else None)

    # ------------------------------------------------------------------ commits

    def on_commit(self, items: Iterable[Item]) -> None:
        """Files committed as finished leave the in-flight set (and may be admitted again);
        a quarantined file's refusal is dealt with."""
        for item in items:
            if (isinstance(item, UnitRecords) and item.final) or isinstance(item, FileFinished | FileQuarantined):
                self.in_flight.discard(item.file_id)
            if isinstance(item, FilesRecorded):
                for e in item.entries:
                    if e.finished:
                        self.in_flight.discard(e.file_id)
            if isinstance(item, FileQuarantined):
                self.refused.pop(item.file_id, None)
