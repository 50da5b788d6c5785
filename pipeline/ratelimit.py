"""Speed limits: token buckets in rows/s and bytes/s per source, plus a global rows/s limit.

The buckets are shared by every worker, so a source's limit holds however many workers stream
its files. A bucket holds at most `BURST_S` seconds of tokens; a request larger than that waits
for a full bucket and then leaves it in debt, so the average rate is exact and a burst is at
most one unit (the workers size units to a fraction of a second of the limit). Limits change
live: a waiting worker re-reads them every `TICK_S`, so a new limit applies within a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

BURST_S = 0.1
TICK_S = 0.05
GLOBAL = "*"


@dataclass
class Bucket:
    rate: float | None  # tokens per second; None = unlimited
    tokens: float = 0.0
    stamp: float = 0.0

    def refill(self, now: float) -> None:
        if self.rate is None:
            return
        cap = self.rate * BURST_S
        self.tokens = min(cap, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def ready_for(self, n: float) -> bool:
        if self.rate is None:
            return True
        return self.tokens >= min(n, self.rate * BURST_S)

    def take(self, n: float) -> None:
        if self.rate is not None:
            self.tokens -= n


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        """`clock` (seconds) and `sleep` are the monotonic clock and asyncio's sleep; a test
        gives a clock it moves itself."""
        self._rows: dict[str, Bucket] = {}
        self._bytes: dict[str, Bucket] = {}
        self._clock = clock
        self._sleep = sleep

    def set(self, source: str, rows_per_second: float | None, bytes_per_second: float | None) -> None:
        """Set (or clear, with None) a source's limits; `GLOBAL` names the global rows limit."""
        now = self._clock()
        for table, rate in ((self._rows, rows_per_second), (self._bytes, bytes_per_second)):
            b = table.get(source)
            if b is None:
                table[source] = Bucket(rate=rate, tokens=0.0, stamp=now)
            elif b.rate != rate:
                b.refill(now)
                b.rate = rate
                if rate is not None:
                    b.tokens = min(b.tokens, rate * BURST_S)

    def remove(self, source: str) -> None:
        self._rows.pop(source, None)
        self._bytes.pop(source, None)

    def rows_rate(self, source: str) -> float | None:
        b = self._rows.get(source)
        return b.rate if b else None

    def bytes_rate(self, source: str) -> float | None:
        b = self._bytes.get(source)
        return b.rate if b else None

    def unit_rows_hint(self, source: str, default: int) -> int:
        """Rows per unit that keep a burst to a fraction of a second of the limits."""
        rates = [b.rate for b in (self._rows.get(source), self._rows.get(GLOBAL)) if b and b.rate]
        if not rates:
            return default
        return max(1, min(default, int(min(rates) * BURST_S)))

    async def acquire(self, source: str, rows: int, nbytes: int) -> None:
        buckets = [(b, n) for b, n in ((self._rows.get(source), rows), (self._rows.get(GLOBAL), rows),
                                       (self._bytes.get(source), nbytes)) if b is not None]
        if not buckets:
            return
        while True:
            now = self._clock()
            for b, _ in buckets:
                b.refill(now)
            if all(b.ready_for(n) for b, n in buckets):
                for b, n in buckets:
                    b.take(n)
                return
            await self._sleep(TICK_S)
