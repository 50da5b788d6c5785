"""The edit-stream tailer: an async iterator of event batches from a transaction id on.

    tailer = EditTailer(client, start_txid=saved + 1)     # or None: from "now"
    async for item in tailer:
        if isinstance(item, Gap): ...reconcile by listing...
        else: ...item.events...
        save(tailer.last_txid)

Guarantees:
- every event with a txid <= `last_txid` has been handed out, exactly once, in txid order;
  resuming with `start_txid=last_txid + 1` (`next_txid`) neither loses nor repeats one;
- when the NameNode no longer holds the transaction asked for, a `Gap` comes first, then the
  events that are still there: nothing is skipped silently;
- the position survives failovers and reconnects: a failed poll is repeated from the same txid,
  on whichever NameNode is active by then (the NameNodes of a nameservice share one txid
  sequence), and only a reply moves it.

What a gap can be seen from: a reply that starts later than the txid asked for. A NameNode that
answers from edit copies with a hole in them (in HA, one made active again whose own edits
directory kept old segments the journal has purged since) can start its reply at the txid asked
for and leave a range out; nothing in the reply tells that apart from transactions without
events, so that loss is not seen here. Purge edits on every NameNode alike (checkpoints purge
the shared journal and each NameNode's directory together) and it does not arise.

Polling adapts: right away while the NameNode has more than one reply's worth, every few
milliseconds while events flow, and slower (up to `max_interval`) the longer the stream has
been idle; never so often that the NameNode spends most of its time answering (see
`PollSchedule`). How fast a poll is depends on the NameNode: it reads its in-progress edit
segment from the start on each poll that finds something, so keep segments short (HA pairs
roll every `dfs.ha.log-roll.period`, 2 minutes by default; a single NameNode rolls at
`dfs.namenode.checkpoint.txns` x `dfs.namenode.edit.log.autoroll.multiplier.threshold`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import structlog

from hdfswatch.backoff import Backoff
from hdfswatch.errors import TransientError
from hdfswatch.events import EventBatch, EventsList, Gap
from hdfswatch.namenode import NameNodeClient

log = structlog.get_logger("hdfswatch.tailer")


@dataclass
class PollSchedule:
    """When to poll next (sans-IO).

    After a reply that left more behind: at once. After a reply with events: `min_interval`.
    Idle: a fraction (`idle_factor`) of the time since the last event, between `min_interval`
    and `max_interval`, so a file closed after a quiet spell is still seen within
    `max_interval`, and one closed while others flow within a few milliseconds.

    Idle polls are cheap for the NameNode: asked for a txid past its last durable one, it
    answers at once without reading the edit log. A poll that finds new transactions makes the
    NameNode read its in-progress edit segment from the start up to them, so its cost grows with the segment (until the next roll). To
    keep that bounded, the pause after a poll is at least `cost_factor` times how long the
    poll took, except while catching up.
    """

    min_interval: float = 0.002
    max_interval: float = 0.5
    idle_factor: float = 0.03
    cost_factor: float = 0.5
    _last_event: float | None = None

    def next_delay(self, now: float, got_events: bool, more_pending: bool,
                   poll_seconds: float = 0.0) -> float:
        if got_events or self._last_event is None:
            self._last_event = now
        if more_pending:
            return 0.0
        if got_events:
            delay = self.min_interval
        else:
            idle = now - self._last_event
            delay = min(self.max_interval, max(self.min_interval, idle * self.idle_factor))
        return max(delay, min(self.max_interval, poll_seconds * self.cost_factor))


class EditTailer:
    """Tails the NameNode edit stream from `start_txid` (None: from the current txid on)."""

    def __init__(self, client: NameNodeClient, start_txid: int | None = None, *,
                 min_interval: float = 0.002, max_interval: float = 0.5,
                 idle_factor: float = 0.03, cost_factor: float = 0.5,
                 error_backoff_max: float = 10.0) -> None:
        if start_txid is not None and start_txid < 1:
            raise ValueError("start_txid must be >= 1 (transaction ids start at 1)")
        self.client = client
        self.start_txid = start_txid
        self._next: int | None = start_txid
        self.last_txid: int | None = None if start_txid is None else start_txid - 1
        """Last transaction id handed out: every event up to it has been yielded."""
        self.sync_txid: int | None = None
        """The NameNode's durable txid as of the last reply (for lag)."""
        self.schedule = PollSchedule(min_interval, max_interval, idle_factor, cost_factor)
        self._error_backoff_max = error_backoff_max
        self._ready: deque[tuple[EventBatch | Gap, int]] = deque()
        self._delay = 0.0
        self._poll_seconds = 0.0
        self._closed = False
        self.polls = 0
        self.poll_seconds_total = 0.0
        self.gaps = 0
        self.last_error: str | None = None

    @property
    def next_txid(self) -> int | None:
        """The txid the next poll asks for; resume from here."""
        return self._next

    async def namenode_txid(self) -> int:
        """The NameNode's current (last written) txid, asked now: lag = this - last_txid."""
        return await self.client.get_current_txid()

    def close(self) -> None:
        """End the iteration (the client stays open)."""
        self._closed = True

    def __aiter__(self) -> EditTailer:
        return self

    async def __anext__(self) -> EventBatch | Gap:
        while not self._ready:
            if self._closed:
                raise StopAsyncIteration
            await self._poll_until_something()
        item, position = self._ready.popleft()
        self.last_txid = position
        return item

    # ------------------------------------------------------------------ polling

    async def _start_position(self) -> int:
        txid = -1
        while txid < 0:
            txid = await self.client.get_current_txid()
            if txid < 0:  # edit log not open yet: the NameNode is becoming active
                await asyncio.sleep(0.5)
        return txid + 1

    async def _poll_until_something(self) -> None:
        backoff = Backoff(0.1, max(0.1, self._error_backoff_max))
        while not self._ready and not self._closed:
            try:
                if self._next is None:
                    self._next = await self._start_position()
                    self.last_txid = self._next - 1
                    log.info("tailer.start", txid=self._next)
                if self._delay > 0:
                    await asyncio.sleep(self._delay)
                started = time.monotonic()
                reply = await self.client.get_edits_from_txid(self._next)
                self._poll_seconds = time.monotonic() - started
                self.poll_seconds_total += self._poll_seconds
            except TransientError as exc:
                # The NameNode is away for now: keep the position and keep trying.
                self.last_error = str(exc)
                delay = backoff.next_delay()
                log.warning("tailer.namenode_unavailable", txid=self._next, error=str(exc),
                            retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            self.polls += 1
            self.last_error = None
            self._take(reply)

    def _take(self, reply: EventsList) -> None:
        """Queue what a reply holds and move the position past it."""
        assert self._next is not None
        requested = self._next
        self.sync_txid = reply.sync_txid
        items: list[tuple[EventBatch | Gap, int]] = []
        if reply.first_txid > requested:
            self.gaps += 1
            gap = Gap(requested, reply.first_txid)
            log.warning("tailer.gap", requested_txid=requested,
                        first_available_txid=reply.first_txid, missed=gap.missed,
                        namenode=getattr(self.client, "active", None))
            items.append((gap, reply.first_txid - 1))
        for batch in reply.batches:
            if batch.txid < requested:
                continue  # never hand out a transaction twice
            items.append((batch, batch.txid))
        got_events = bool(items)
        if reply.last_txid >= requested:
            if items:
                # Transactions after the last batch up to last_txid carried no events.
                last_item, _ = items[-1]
                items[-1] = (last_item, reply.last_txid)
            else:
                self.last_txid = reply.last_txid
            self._next = reply.last_txid + 1
        self._ready.extend(items)
        more = reply.sync_txid > reply.last_txid >= requested
        self._delay = self.schedule.next_delay(time.monotonic(), got_events, more,
                                               self._poll_seconds)
