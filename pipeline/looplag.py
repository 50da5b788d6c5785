"""How late the event loop wakes up: the daemon's measure of its own stalls.

Everything on the daemon's event loop (the committer, intake, the HTTP server, aiokafka's
sender) waits while any one callback runs. A callback that holds the loop for 300 ms delays a
commit, a send and a `/metrics` answer by 300 ms, and no other figure shows it. The monitor is
a task that sleeps `interval_s` (10 ms) again and again and records how much later than asked
each wake-up came: a stall of the loop shows as one late wake-up of its length.

It keeps the largest lag since start (and when it happened) and a cumulative histogram of every
wake-up's lag, read by `/metrics` (`hdfs2kafka_event_loop_lag_seconds`,
`hdfs2kafka_event_loop_lag_max_seconds`) and `/status` (`event_loop`). Its own cost is one timer
and a few comparisons per wake-up: about 100 wake-ups a second, measured at under 1% of a
core (bench/RESULTS.md, "Event loop stalls").

Timers of uvloop (libuv) have a resolution of 1 ms, so lags under 1-2 ms are the clock's
grain, not stalls; the first bucket is 5 ms.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

# Upper bounds of the histogram's buckets, seconds (the last, +Inf, is implicit).
LAG_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DEFAULT_INTERVAL_S = 0.01


@dataclass(frozen=True)
class LagSnapshot:
    """The monitor's figures at one moment (cumulative since start)."""

    interval_s: float
    wakeups: int
    max_lag_s: float
    max_lag_at_unix: float | None
    sum_lag_s: float
    buckets: tuple[tuple[float, int], ...]
    """(upper bound, wake-ups with a lag at or under it), cumulative as Prometheus has them."""


class LoopLagMonitor:
    """Records the lag of each wake-up of a task that sleeps `interval_s` in a loop.

    `record(lag)` is the measuring part, separate from the task so that it can be tested with
    plain numbers; `clock` is the monotonic clock (injectable) and `wall` the one the time of
    the largest lag is given in."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, *,
                 buckets: tuple[float, ...] = LAG_BUCKETS,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be greater than 0")
        self.interval_s = interval_s
        self.bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self._clock = clock
        self._wall = wall
        self.wakeups = 0
        self.sum_lag_s = 0.0
        self.max_lag_s = 0.0
        self.max_lag_at_unix: float | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- measuring

    def record(self, lag_s: float) -> None:
        """One wake-up came `lag_s` late (a negative lag, a timer fired early, counts as 0)."""
        lag_s = max(0.0, lag_s)
        self.wakeups += 1
        self.sum_lag_s += lag_s
        self._counts[bisect_left(self.bounds, lag_s)] += 1
        if lag_s > self.max_lag_s:
            self.max_lag_s = lag_s
            self.max_lag_at_unix = self._wall()

    async def run(self) -> None:
        """Sleep, measure the lateness of the wake-up, again; until cancelled."""
        interval, clock, record = self.interval_s, self._clock, self.record
        due = clock() + interval
        while True:
            await asyncio.sleep(interval)
            now = clock()
            record(now - due)
            due = now + interval

    # ---- life

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> LoopLagMonitor:
        """Start measuring on `loop` (the running loop by default); returns the monitor."""
        if self._task is None or self._task.done():
            loop = loop or asyncio.get_running_loop()
            self._task = loop.create_task(self.run(), name="loop-lag")
        return self

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---- reading

    def snapshot(self) -> LagSnapshot:
        cumulative, total = [], 0
        for bound, n in zip(self.bounds, self._counts, strict=False):
            total += n
            cumulative.append((bound, total))
        return LagSnapshot(interval_s=self.interval_s, wakeups=self.wakeups, max_lag_s=self.max_lag_s,
                           max_lag_at_unix=self.max_lag_at_unix, sum_lag_s=self.sum_lag_s,
                           buckets=tuple(cumulative))

    def late_wakeups(self, over_s: float) -> int:
        """Wake-ups that came more than `over_s` late; `over_s` must be one of the bounds."""
        i = self.bounds.index(over_s)
        return sum(self._counts[i + 1:])


def start(loop: asyncio.AbstractEventLoop | None = None,
          interval_s: float = DEFAULT_INTERVAL_S) -> LoopLagMonitor:
    """A monitor measuring `loop` (the running one by default) from now on; `stop()` ends it."""
    return LoopLagMonitor(interval_s).start(loop)


def status_document(monitor: LoopLagMonitor | None) -> dict[str, object] | None:
    """The `/status` block: the largest stall since start, when, and how many wake-ups were
    more than 100 ms late (None while no monitor runs)."""
    if monitor is None:
        return None
    return {"lag_max_s": round(monitor.max_lag_s, 4),
            "lag_max_at_unix": round(monitor.max_lag_at_unix, 3) if monitor.max_lag_at_unix else None,
            "wakeups": monitor.wakeups,
            "wakeups_over_100ms": monitor.late_wakeups(0.1) if 0.1 in monitor.bounds else None,
            "interval_s": monitor.interval_s}
