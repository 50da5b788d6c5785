"""The one backoff of every retry loop: delays grow by `factor` up to `cap`, jitter stays within
its bounds, and `reset` starts again from `initial`."""

from __future__ import annotations

import random

import pytest

from hdfswatch.backoff import Backoff


def test_equal_jitter_stays_between_half_the_base_and_the_base() -> None:
    b = Backoff(0.1, 2.0, rng=random.Random(1).random)
    bases = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for base in bases:
        assert b.base == pytest.approx(base)
        assert base / 2 <= b.next_delay() <= base
    assert b.attempts == len(bases)


def test_the_extremes_of_the_random_draw() -> None:
    assert Backoff(1.0, 8.0, rng=lambda: 0.0).next_delay() == 0.5
    assert Backoff(1.0, 8.0, rng=lambda: 1.0).next_delay() == 1.0
    assert Backoff(1.0, 8.0, jitter="full", rng=lambda: 0.0).next_delay() == 0.0
    assert Backoff(1.0, 8.0, jitter="full", rng=lambda: 0.99).next_delay() == pytest.approx(0.99)


def test_full_jitter_and_no_jitter() -> None:
    full = Backoff(0.5, 3.0, jitter="full", rng=random.Random(2).random)
    delays = [full.next_delay() for _ in range(50)]
    assert all(0 <= d <= 3.0 for d in delays) and max(delays[10:]) > 1.5
    plain = Backoff(0.5, 3.0, factor=3, jitter="none")
    assert [plain.next_delay() for _ in range(4)] == [0.5, 1.5, 3.0, 3.0]


def test_reset_starts_again_from_initial() -> None:
    b = Backoff(0.2, 5.0, jitter="none")
    assert [b.next_delay() for _ in range(3)] == [0.2, 0.4, 0.8]
    b.reset()
    assert b.attempts == 0 and b.next_delay() == 0.2


def test_never_above_the_cap_however_long_it_retries() -> None:
    b = Backoff(0.05, 5.0)
    assert max(b.next_delay() for _ in range(10_000)) <= 5.0


@pytest.mark.parametrize(("initial", "cap", "factor"), [(-1, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_bad_settings_are_refused(initial: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial, cap, factor)
