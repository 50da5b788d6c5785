"""The demo's live view. On a terminal, a block redrawn in place with sampled rows scrolling
above it (plain ANSI escapes); otherwise plain lines: the samples as they come and one
`progress` line per source every few seconds. `block` and `plain` render a `Frame`, the state
of one moment, into those lines."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"
FORMATS = {"clicks": "parquet->json", "orders": "avro->{orders}"}


@dataclass(frozen=True)
class Frame:
    run_id: str
    up_s: int
    daemon: str  # starting, recovering, ready, exited (code)
    phase: str
    orders_format: str
    base: str  # the HDFS directory of the run, left out of paths shown
    sources: dict[str, dict[str, Any]]  # per source: files/rows done, written, in Kafka, rate
    in_flight: list[dict[str, Any]]  # /status files_in_flight
    edit_stream: str


class View:
    PLAIN_EVERY_S = 2.0

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._drawn = 0
        self._pending: list[str] = []
        self._last_plain = 0.0

    def line(self, text: str) -> None:
        """A line to print above the block (a sampled row, a message)."""
        self._pending.append(text)

    def refresh(self, block: list[str], plain: list[str], force: bool = False) -> None:
        width = shutil.get_terminal_size((120, 40)).columns if self.tty else 0
        parts = []
        if self.tty:
            if self._drawn:
                parts.append(f"\x1b[{self._drawn}F\x1b[J")
            parts += [_fit(t, width) + "\n" for t in self._pending]
            parts += [_fit(t, width) + "\n" for t in block]
            self._drawn = len(block)
        else:
            parts += [t + "\n" for t in self._pending]
            now = time.monotonic()
            if force or now - self._last_plain >= self.PLAIN_EVERY_S:
                parts += [t + "\n" for t in plain]
                self._last_plain = now
        self._pending.clear()
        self.out.write("".join(parts))
        self.out.flush()

    def leave(self) -> None:
        """Stop redrawing: the last block stays on screen and text continues below it."""
        self._drawn = 0
        if self._pending:
            self.out.write("".join(t + "\n" for t in self._pending))
            self._pending.clear()
            self.out.flush()


def block(f: Frame) -> list[str]:
    """The block a terminal shows: a table of the sources, the files in flight, the edit stream."""
    lines = [
        f"── hdfs2kafka demo {f.run_id}  up {f.up_s // 60:02d}:{f.up_s % 60:02d}  "
        f"daemon {f.daemon}  {f.phase if f.phase != 'starting' else ''}",
        f"{'source':<8}{'format':<15}{'state':<11}{'files done/detected':>20}"
        f"{'rows committed':>16}{'rows/s':>9}{'in Kafka':>11}{'written':>18}",
    ]
    for source, r in f.sources.items():
        fmt = FORMATS[source].format(orders=f.orders_format)
        lines.append(
            f"{source:<8}{fmt:<15}{r['state']:<11}"
            f"{r['files_done']:>11,}/{r['files_detected']:<8,}{r['rows_committed']:>16,}"
            f"{r['rate']:>9,.0f}{r['kafka_rows']:>11,}"
            f"{r['files_written']:>7,} / {r['rows_written']:<8,}")
    if f.in_flight:
        for fl in f.in_flight[:6]:
            total = fl.get("rows_total") or 0
            done = fl.get("rows_done") or 0
            # Avro files do not say how many rows they hold until they are read.
            progress = (f"{_bar(done, total)} {done:>7,}/{total:<7,}" if total
                        else f"{'':22}{done:>7,} rows ")
            lines.append(f"  in flight {fl['source']:<7} {progress} "
                         f"{fl['path'].removeprefix(f.base + '/')}")
        if len(f.in_flight) > 6:
            lines.append(f"  ... and {len(f.in_flight) - 6} more in flight")
    else:
        lines.append("  in flight: none")
    lines.append("  " + f.edit_stream)
    return lines


def plain(f: Frame) -> list[str]:
    """The `progress` lines printed without a terminal."""
    lines = []
    for source, r in f.sources.items():
        mine = " ".join(
            f"{fl['path'].rsplit('/', 1)[-1]}:{fl.get('rows_done') or 0}/{fl.get('rows_total') or '?'}"
            for fl in f.in_flight if fl["source"] == source)
        lines.append(
            f"progress {source}: files {r['files_done']}/{r['files_detected']} done/detected, "
            f"rows committed {r['rows_committed']}, {r['rate']:.0f} rows/s, "
            f"in Kafka {r['kafka_rows']}, written {r['files_written']} files "
            f"{r['rows_written']} rows, in flight [{mine}]")
    lines.append(f"progress daemon {f.daemon}; {f.edit_stream}"
                 + (f"; {f.phase}" if f.phase != "starting" else ""))
    return lines


def edit_stream(status: dict[str, Any] | None) -> str:
    """The edit-stream line of a `/status` document."""
    es = (status or {}).get("edit_stream") or {}
    if es.get("txid") is None:
        return "edit stream: -"
    age = es.get("last_batch_age_s")
    return (f"edit stream: txid {es['txid']}  NameNode txid {_dash(es.get('namenode_txid'))}"
            f"  lag {_dash(es.get('lag'))}" + (f"  last batch {age:.1f}s ago" if age is not None else ""))


def sample(source: str, topic: str, partition: int, offset: int, key: bytes | None,
           value: Any) -> str:
    """One sampled row as a line."""
    k = key.decode("utf-8", "replace") if key is not None else "-"
    return f"{source:<7} {topic}[{partition}]@{offset:<7} key={k:<13} {_short(value)}"


def _fit(text: str, width: int) -> str:
    if width and len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text


def _short(value: Any, limit: int = 90) -> str:
    text = orjson.dumps(value, default=str).decode() if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"
