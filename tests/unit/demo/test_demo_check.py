"""The demo's exactly-once verdict, from row ids alone."""

from __future__ import annotations

from demo.check import Seen
from demo.sample_data import ROWS_PER_FILE_ID
from demo.writer import Written

FILES = [Written("clicks", 1, "/d/a", 3), Written("clicks", 2, "/d/b", 2)]


def ids(file_no: int, seqs: range | list[int]) -> list[int]:
    return [file_no * ROWS_PER_FILE_ID + s for s in seqs]


def test_every_row_once_is_exact() -> None:
    seen = Seen()
    for i in ids(1, range(3)) + ids(2, range(2)):
        seen.add(i)
    assert seen.check(FILES) == {"missing": 0, "duplicates": 0, "unexpected": 0, "unique": 5}
    assert seen.caught_up(FILES)


def test_a_repeat_a_gap_and_a_stranger_are_each_counted() -> None:
    seen = Seen()
    for i in [*ids(1, [0, 1, 1, 2, 2, 2]), *ids(2, [1]), *ids(3, [0]), -1]:
        seen.add(i)
    assert seen.check(FILES) == {"missing": 1, "duplicates": 3, "unexpected": 2, "unique": 5}
    assert not seen.caught_up(FILES)
    assert seen.rows == 9
