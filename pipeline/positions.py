"""Seekable places in a file: where a unit of work starts, and where reading resumes.

A position is never "skip N records from the start": for Parquet it names a row group and a row
inside it, for Avro the byte offset of a block and, rarely, a record counted from that block
(where a speed limit cut a large block into smaller pieces). Positions travel through the ledger
as short strings (`rg:3/1000`, `block:40960`, `block:40960/500`) so that an operator can read
them and `hdfs2kafka cat --from` accepts them.
"""

from __future__ import annotations

from dataclasses import dataclass


class PositionError(ValueError):
    """A position string that cannot be parsed."""


@dataclass(frozen=True, order=True)
class ParquetPosition:
    row_group: int
    row_offset: int = 0

    def __str__(self) -> str:
        return f"rg:{self.row_group}/{self.row_offset}"


@dataclass(frozen=True, order=True)
class AvroPosition:
    """Byte offset of an Avro block (its record-count varint) in the container file, and the
    number of records to pass over from that block on (0 but for a cut block)."""

    block_offset: int
    record: int = 0

    def __str__(self) -> str:
        if self.record:
            return f"block:{self.block_offset}/{self.record}"
        return f"block:{self.block_offset}"


Position = ParquetPosition | AvroPosition


def parse_position(text: str) -> Position:
    """Parse `rg:G/R`, `rg:G`, `block:OFFSET` or `block:OFFSET/RECORD`."""
    kind, sep, rest = text.strip().partition(":")
    try:
        if sep and kind == "rg":
            group, _, offset = rest.partition("/")
            ppos = ParquetPosition(int(group), int(offset or 0))
            if ppos.row_group < 0 or ppos.row_offset < 0:
                raise ValueError
            return ppos
        if sep and kind == "block":
            offset, _, record = rest.partition("/")
            apos = AvroPosition(int(offset), int(record or 0))
            if apos.block_offset < 0 or apos.record < 0:
                raise ValueError
            return apos
    except ValueError:
        pass
    raise PositionError(f"bad position {text!r}: expected 'rg:GROUP/ROW' or 'block:OFFSET[/RECORD]'")
