"""Capped exponential backoff with jitter, for every retry loop (sans-IO: it only computes
delays; the caller sleeps, with `time.sleep` or `asyncio.sleep`).

    backoff = Backoff(initial=0.2, cap=5.0)
    while True:
        try:
            return call()
        except TransientError:
            time.sleep(backoff.next_delay())

The n-th delay (n from 0) is drawn from the base `min(cap, initial * factor**n)`:
- "equal" jitter (the default): between half the base and the base;
- "full" jitter: between 0 and the base;
- "none": the base itself.

Jitter keeps many clients that failed together (a NameNode failover, a broker restart) from
retrying in step; equal jitter also keeps a floor, so a retry never comes at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

Jitter = Literal["equal", "full", "none"]


class Backoff:
    """Delays of one retry loop; `reset()` after a success starts again from `initial`."""

    def __init__(self, initial: float, cap: float, factor: float = 2.0, *,
                 jitter: Jitter = "equal", rng: Callable[[], float] = random.random) -> None:
        if initial < 0 or cap < initial or factor < 1:
            raise ValueError(f"backoff needs 0 <= initial <= cap and factor >= 1 "
                             f"(initial={initial}, cap={cap}, factor={factor})")
        if jitter not in ("equal", "full", "none"):
            raise ValueError(f"jitter must be equal, full or none, not {jitter!r}")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._rng = rng
        self._base = initial
        self.attempts = 0
        """Delays handed out since the start or the last reset."""

    @property
    def base(self) -> float:
        """The base of the next delay: the upper bound of what `next_delay` returns."""
        return self._base

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds; the following one grows."""
        base = self._base
        self._base = min(self.cap, base * self.factor)
        self.attempts += 1
        if self.jitter == "none":
            return base
        if self.jitter == "full":
            return base * self._rng()
        return base / 2 + base / 2 * self._rng()

    def reset(self) -> None:
        """Start again from `initial` (after an attempt that succeeded)."""
        self._base = self.initial
        self.attempts = 0
