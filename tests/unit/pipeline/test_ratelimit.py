"""The rate limiter on a clock the test moves: rows/s and bytes/s per source, the global rows/s
limit, limits changed, lifted and removed while a worker waits, and the unit size hint."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from pipeline.ratelimit import BURST_S, GLOBAL, RateLimiter


class Clock:
    """A monotonic clock that moves only when the test advances it, in steps of 1/256 s (exact
    in binary, so no rounding creeps in); `sleep` wakes at the first step at or past its end,
    a little late as a real event loop wakes."""

    STEP = 1 / 256

    def __init__(self) -> None:
        self.now = 1024.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += self.STEP
            due = [f for t, f in self._sleepers if t <= self.now]
            self._sleepers = [(t, f) for t, f in self._sleepers if t > self.now]
            for f in due:
                f.set_result(None)
            for _ in range(5):  # let the woken waiters run (and sleep again) at this time
                await asyncio.sleep(0)

    async def run(self, work: Awaitable[Any], limit_s: float = 60.0) -> float:
        """Run `work` while moving the clock; the clock time it took."""
        start = self.now
        task = asyncio.ensure_future(work)
        await asyncio.sleep(0)
        while not task.done():
            assert self.now - start < limit_s, "still waiting"
            await self.advance(self.STEP)
        await task
        return self.now - start


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(clock: Clock) -> RateLimiter:
    return RateLimiter(clock=clock, sleep=clock.sleep)


async def _acquire_all(limiter: RateLimiter, requests: list[tuple[str, int, int]]) -> None:
    for source, rows, nbytes in requests:
        await limiter.acquire(source, rows, nbytes)


async def test_without_a_limit_nothing_waits(clock: Clock, limiter: RateLimiter) -> None:
    limiter.set("clicks", None, None)
    # The clock never moves here: any wait would hang, and the real timeout would fail the test.
    await asyncio.wait_for(_acquire_all(limiter, [("clicks", 10**9, 10**12), ("orders", 5, 5)]), 5)
    assert (limiter.rows_rate("clicks"), limiter.bytes_rate("clicks")) == (None, None)


async def test_rows_per_second_holds_on_average(clock: Clock, limiter: RateLimiter) -> None:
    limiter.set("clicks", 1000, None)
    assert limiter.rows_rate("clicks") == 1000
    took = await clock.run(_acquire_all(limiter, [("clicks", 100, 0)] * 50))
    assert 5.0 <= took <= 5.15  # 5,000 rows at 1,000 rows/s, never faster


async def test_units_larger_than_the_burst_leave_a_debt_that_keeps_the_average(
        clock: Clock, limiter: RateLimiter) -> None:
    limiter.set("clicks", 1000, None)
    # Each 1,000-row unit is ten bursts' worth: it goes when the bucket is full and the next one
    # waits until the debt is paid, so 5,000 rows (and one more) take 5 s, not 0.5 s.
    took = await clock.run(_acquire_all(limiter, [("clicks", 1000, 0)] * 5 + [("clicks", 1, 0)]))
    assert 5.0 <= took <= 5.15


async def test_bytes_per_second_holds_whatever_the_rows(clock: Clock, limiter: RateLimiter) -> None:
    limiter.set("orders", None, 1_000_000)
    assert (limiter.rows_rate("orders"), limiter.bytes_rate("orders")) == (None, 1_000_000)
    took = await clock.run(_acquire_all(limiter, [("orders", 10, 100_000)] * 20))
    assert 2.0 <= took <= 2.1  # 2 MB at 1 MB/s


async def test_the_global_limit_is_shared_by_every_source(clock: Clock, limiter: RateLimiter) -> None:
    limiter.set(GLOBAL, 1000, None)
    both = [("clicks", 100, 0), ("orders", 100, 0)] * 25
    took = await clock.run(_acquire_all(limiter, both))
    assert 5.0 <= took <= 5.15  # 5,000 rows of two sources at 1,000 rows/s in all


async def test_the_lower_of_a_source_and_the_global_limit_holds(clock: Clock, limiter: RateLimiter) -> None:
    limiter.set(GLOBAL, 1000, None)
    limiter.set("clicks", 200, None)
    took = await clock.run(_acquire_all(limiter, [("clicks", 20, 0)] * 50))
    assert 5.0 <= took <= 5.15  # 1,000 rows at the source's 200 rows/s


async def _waiting(clock: Clock, limiter: RateLimiter, source: str) -> asyncio.Task[None]:
    """A worker that has spent its burst and waits ~10 s to pay its debt, 1 s into the wait."""
    await clock.run(limiter.acquire(source, 100, 0))
    task = asyncio.ensure_future(limiter.acquire(source, 1, 0))
    await clock.advance(1.0)
    assert not task.done()
    return task


@pytest.mark.parametrize("new_rate", [10_000.0, None], ids=["raised", "lifted"])
async def test_a_limit_changed_while_a_worker_waits_applies_at_once(
        clock: Clock, limiter: RateLimiter, new_rate: float | None) -> None:
    limiter.set("clicks", 10, None)
    task = await _waiting(clock, limiter, "clicks")
    limiter.set("clicks", new_rate, None)
    assert limiter.rows_rate("clicks") == new_rate
    assert await clock.run(task) <= 0.1


async def test_a_lowered_limit_paces_the_next_rows(clock: Clock, limiter: RateLimiter) -> None:
    limiter.set("clicks", 10_000, None)
    await clock.run(_acquire_all(limiter, [("clicks", 1000, 0)] * 3))
    limiter.set("clicks", 100, None)
    took = await clock.run(_acquire_all(limiter, [("clicks", 10, 0)] * 50))
    assert 4.9 <= took <= 5.15  # 500 rows at the new 100 rows/s


async def test_a_removed_source_has_no_limits_left(clock: Clock, limiter: RateLimiter) -> None:
    limiter.set(GLOBAL, 1000, None)
    limiter.set("clicks", 10, 10)
    limiter.remove("clicks")
    assert (limiter.rows_rate("clicks"), limiter.bytes_rate("clicks")) == (None, None)
    # Only the global limit applies to its name now (a source added again under it starts anew).
    took = await clock.run(_acquire_all(limiter, [("clicks", 100, 10**6)] * 10))
    assert 1.0 <= took <= 1.05
    assert limiter.rows_rate(GLOBAL) == 1000


def test_unit_rows_hint_keeps_a_unit_to_a_burst_of_the_lowest_rows_limit(limiter: RateLimiter) -> None:
    assert limiter.unit_rows_hint("clicks", 20_000) == 20_000  # no limit: the configured size
    limiter.set("clicks", 50_000, 1)  # a bytes limit does not size units
    assert limiter.unit_rows_hint("clicks", 20_000) == int(50_000 * BURST_S)
    assert limiter.unit_rows_hint("clicks", 1_000) == 1_000  # never above the configured size
    limiter.set(GLOBAL, 10_000, None)
    assert limiter.unit_rows_hint("clicks", 20_000) == int(10_000 * BURST_S)
    assert limiter.unit_rows_hint("orders", 20_000) == int(10_000 * BURST_S)  # the global one
    limiter.set("clicks", 3, None)
    assert limiter.unit_rows_hint("clicks", 20_000) == 1  # at least one row
