"""The done files of a ledger, in a compact table.

A big ledger is almost all done files, and of a done file the daemon only ever asks again what
a resumed edit stream or a reconcile listing can ask about: is it done (skip it), did it change
size (an Avro file resumes at its recorded end, any other file is quarantined), how many rows
it had, and is it old enough for a tombstone. So a done file is kept as one row of parallel
`array` columns sorted by file id (found by bisection): size, stamp = max(mtime, ready time)
(what the watermark compares), rows, the Avro end (`block:OFFSET`) or -1, and the source's
number in a small list of names: 42 bytes a file, where a `FileEntry` with its dict and
strings took about 700. Its path, ready txid and exact mtime are not kept (nothing asks a done
file for them).

Changes go to a small dict of recent rows and a set of dead base rows first, merged into the
columns when they grow past a bound that scales with the table, so a change costs O(1) and a
merge (O(n) memory copies) happens about once per n/64 changes.

Pure data structure: no I/O, no notion of records (that is `pipeline.ledger`'s).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import chain, compress, islice
from operator import ne

Row = tuple[int, int, int, int, int]
"""(size, stamp, rows, block, source number): block is the Avro end offset, or -1 for none."""

MAX_SOURCES = 65_535  # the source column is an array('H')
NO_STAMP = (1 << 63) - 1


def new_columns() -> tuple[array, array, array, array, array, array]:  # type: ignore[type-arg]
    return array("q"), array("q"), array("q"), array("q"), array("q"), array("H")


class DoneTable:
    """Done files by file id: `get`, `put`, `remove`, `stale`; see the module's doc."""

    MERGE_AT = 4096
    """Pending changes (recent rows + dead base rows) that trigger a merge, at least."""

    def __init__(self) -> None:
        self._fid, self._size, self._stamp, self._rows, self._block, self._src = new_columns()
        self.sources: list[str] = []
        self._source_no: dict[str, int] = {}
        self._recent: dict[int, Row] = {}
        """Rows put since the last merge (a file id here may also have a dead base row)."""
        self._dead: set[int] = set()
        """File ids whose base row no longer counts (removed, or replaced by a recent row)."""
        self._min_stamp = NO_STAMP
        """A lower bound of the live rows' stamps: nothing is stale below it."""
        self.merges = 0

    # ---- sources

    def source_no(self, name: str) -> int | None:
        """The number of a source name (registered on first use); None past MAX_SOURCES."""
        no = self._source_no.get(name)
        if no is None:
            if len(self.sources) >= MAX_SOURCES:
                return None
            no = self._source_no[name] = len(self.sources)
            self.sources.append(name)
        return no

    # ---- lookups

    def _index(self, fid: int) -> int:
        """The base row of `fid` (dead or not), or -1."""
        fids = self._fid
        i = bisect_left(fids, fid)
        return i if i < len(fids) and fids[i] == fid else -1

    def get(self, fid: int) -> Row | None:
        row = self._recent.get(fid)
        if row is not None:
            return row
        if fid in self._dead:
            return None
        i = self._index(fid)
        if i < 0:
            return None
        return self._size[i], self._stamp[i], self._rows[i], self._block[i], self._src[i]

    def __contains__(self, fid: object) -> bool:
        return isinstance(fid, int) and self.get(fid) is not None

    def __len__(self) -> int:
        return len(self._fid) - len(self._dead) + len(self._recent)

    def __iter__(self) -> Iterator[int]:
        dead = self._dead
        if dead:
            yield from (f for f in self._fid if f not in dead)
        else:
            yield from self._fid
        yield from list(self._recent)

    # ---- changes

    def put(self, fid: int, size: int, stamp: int, rows: int, block: int, src: int) -> None:
        """Add or replace the row of `fid`. Raises OverflowError (nothing changed) for a value
        that does not fit the columns."""
        row = (size, stamp, rows, block, src)
        if not (-NO_STAMP <= min(size, stamp, rows, block) and max(size, stamp, rows, block) <= NO_STAMP
                and 0 <= src <= MAX_SOURCES and -NO_STAMP <= fid <= NO_STAMP):
            raise OverflowError(f"done row of file {fid} out of range: {row}")
        recent = self._recent
        if fid not in recent and fid not in self._dead and self._index(fid) >= 0:
            self._dead.add(fid)
        recent[fid] = row
        if stamp < self._min_stamp:
            self._min_stamp = stamp
        self._maybe_merge()

    def remove(self, fid: int) -> bool:
        """Drop the row of `fid`; False if there was none."""
        if self._recent.pop(fid, None) is not None:
            return True  # a base row it replaced is dead already
        if fid in self._dead or self._index(fid) < 0:
            return False
        self._dead.add(fid)
        self._maybe_merge()
        return True

    def _maybe_merge(self) -> None:
        if len(self._recent) + len(self._dead) >= max(self.MERGE_AT, len(self._fid) >> 6):
            self.merge()

    def merge(self) -> None:
        """Fold the recent rows and the dead rows into the sorted columns."""
        if not self._recent and not self._dead:
            return
        fids = self._fid
        # (position in the base, 0 = insert before it / 1 = drop it, row)
        events: list[tuple[int, int, int, Row | None]] = [
            (self._index(f), 1, f, None) for f in self._dead]
        events.extend((bisect_left(fids, f), 0, f, row) for f, row in self._recent.items())
        events.sort()
        old = (self._fid, self._size, self._stamp, self._rows, self._block, self._src)
        new = new_columns()
        prev = 0
        for pos, kind, fid, row in events:
            if pos > prev:
                for o, n in zip(old, new, strict=True):
                    n.extend(o[prev:pos])
            if kind:
                prev = pos + 1
            else:
                assert row is not None
                prev = pos
                new[0].append(fid)
                for n, v in zip(new[1:], row, strict=True):
                    n.append(v)
        for o, n in zip(old, new, strict=True):
            n.extend(o[prev:])
        self._fid, self._size, self._stamp, self._rows, self._block, self._src = new
        self._recent = {}
        self._dead = set()
        self._min_stamp = min(self._stamp, default=NO_STAMP)
        self.merges += 1

    # ---- the watermark's questions

    def stale(self, floor: int, limit: int | None = None) -> list[int]:
        """File ids of the rows whose stamp is below `floor` (at most `limit` of them)."""
        if floor <= self._min_stamp or limit == 0:
            return []
        dead = self._dead
        below = compress(self._fid, map(floor.__gt__, self._stamp))
        found = chain((f for f in below if f not in dead),
                      (f for f, row in list(self._recent.items()) if row[1] < floor))
        out = list(islice(found, limit))
        if not out:
            # The bound was a dead row's (or a replaced row's): raise it, so that asking again
            # with the same floor is answered at once.
            self.merge()
            self._min_stamp = min(self._stamp, default=NO_STAMP)
        return out

    # ---- bulk loading

    @classmethod
    def load(cls, fid: array, size: array, stamp: array, rows: array, block: array,  # type: ignore[type-arg]
             src: array, sources: list[str], dead: Iterable[int] = ()) -> DoneTable:  # type: ignore[type-arg]
        """A table of rows given in ledger order (a later row of a file id replaces an earlier
        one), less the file ids in `dead`. Takes the arrays over."""
        t = cls()
        t.sources = list(sources)
        t._source_no = {s: i for i, s in enumerate(t.sources)}
        cols = [fid, size, stamp, rows, block, src]
        n = len(fid)
        if n > 1 and not all(map(int.__lt__, fid, islice(fid, 1, None))):
            order = sorted(range(n), key=fid.__getitem__)  # stable: the last of a file id is last
            sorted_fid = array("q", map(fid.__getitem__, order))
            keep = list(compress(order, chain(map(ne, sorted_fid, islice(sorted_fid, 1, None)), (True,))))
            del sorted_fid, order
            cols = [array(c.typecode, map(c.__getitem__, keep)) for c in cols]
        t._fid, t._size, t._stamp, t._rows, t._block, t._src = cols
        t._dead = {f for f in dead if t._index(f) >= 0}
        t.merge()
        t._min_stamp = min(t._stamp, default=NO_STAMP)
        t.merges = 0
        return t

    def memory_bytes(self) -> int:
        """The columns' size (what the table holds per row, for tests and benchmarks)."""
        return sum(c.itemsize * len(c) for c in (self._fid, self._size, self._stamp, self._rows,
                                                 self._block, self._src))
