"""The exactly-once check: every row id a consumer saw, counted, against the files written."""

from __future__ import annotations

from dataclasses import dataclass, field

from demo.sample_data import ROWS_PER_FILE_ID
from demo.writer import Written


@dataclass
class Seen:
    """What the read_committed consumer found for one source: per file, a count per row."""

    rows: int = 0
    counts: dict[int, bytearray] = field(default_factory=dict)
    unexpected: int = 0

    def add(self, row_id: int) -> None:
        """Count one row (a negative id: a value without an id)."""
        self.rows += 1
        if row_id < 0:
            self.unexpected += 1
            return
        file_no, seq = divmod(row_id, ROWS_PER_FILE_ID)
        counts = self.counts.get(file_no)
        if counts is None or len(counts) <= seq:
            grown = bytearray(max(seq + 1, 2 * len(counts) if counts else seq + 1))
            if counts:
                grown[:len(counts)] = counts
            counts = self.counts[file_no] = grown
        counts[seq] = min(255, counts[seq] + 1)

    def check(self, files: list[Written]) -> dict[str, int]:
        """Rows missing, duplicated (each repeat once), unexpected (not written), and unique."""
        expected = {f.file_no: f.rows for f in files}
        missing = duplicates = 0
        unexpected = self.unexpected
        for file_no, counts in self.counts.items():
            n = expected.get(file_no, 0)
            duplicates += sum(c - 1 for c in counts if c > 1)
            unexpected += sum(1 for c in counts[n:] if c)
            missing += counts[:n].count(0) + max(0, n - len(counts))
        for file_no, n in expected.items():
            if file_no not in self.counts:
                missing += n
        return {"missing": missing, "duplicates": duplicates, "unexpected": unexpected,
                "unique": sum(len(c) - c.count(0) for c in self.counts.values())}

    def caught_up(self, files: list[Written]) -> bool:
        """Whether every row of `files` has been seen."""
        return all(len(self.counts.get(f.file_no, b"")) >= f.rows
                   and self.counts[f.file_no][:f.rows].count(0) == 0 for f in files)
