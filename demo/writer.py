"""Writes the demo's sample files into HDFS as `hdfs dfs -put` does (`name._COPYING_`, then a
rename): a few before the daemon starts, then one every so often from a background thread."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any

from demo.sample_data import clicks_parquet, orders_avro

SOURCES = ("clicks", "orders")
INITIAL_FILES = 2  # per source, written before the daemon starts


@dataclass(frozen=True)
class Written:
    source: str
    file_no: int
    path: str
    rows: int


class Writer:
    """Parquet clicks under `<base>/clicks/dt=<day>/`, Avro orders under `<base>/orders/`, one
    source after the other; `snapshot()` is every file written so far. `client` is a WebHDFS
    client (`hdfsread.webhdfs.webhdfs_client`: on a secure cluster https and SPNEGO, the
    DataNode written to with the redirect's delegation token)."""

    def __init__(self, client: Any, base: str, rows_per_file: int,
                 files_per_minute: float) -> None:
        self.client = client
        self.base = base
        self.rows_per_file = rows_per_file
        self.interval = 60.0 / files_per_minute
        self.lock = threading.Lock()
        self.files: list[Written] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._next_no = 1
        self._thread: threading.Thread | None = None

    def dir_of(self, source: str) -> str:
        return f"{self.base}/{source}"

    def write_one(self, source: str, day: dt.date | None = None) -> Written:
        with self.lock:
            file_no = self._next_no
            self._next_no += 1
        n = self.rows_per_file
        if source == "clicks":
            day = day or dt.datetime.now(dt.UTC).date()
            path = f"{self.base}/clicks/dt={day.isoformat()}/part-{file_no:05d}.parquet"
            data = clicks_parquet(file_no, n, day)
        else:
            path = f"{self.base}/orders/orders-{file_no:05d}.avro"
            data = orders_avro(file_no, n)
        tmp = f"{path}._COPYING_"
        self.client.write(tmp, data, overwrite=True)
        self.client.rename(tmp, path)
        written = Written(source, file_no, path, n)
        with self.lock:
            self.files.append(written)
        return written

    def write_initial(self) -> None:
        for source in SOURCES:
            self.client.makedirs(self.dir_of(source))
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        for _ in range(INITIAL_FILES):
            self.write_one("clicks", yesterday)
            self.write_one("orders")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="demo-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        turn = 0
        while not self.stop.wait(self.interval):
            source = SOURCES[turn % len(SOURCES)]
            turn += 1
            try:
                self.write_one(source)
            except Exception as exc:  # HDFS hiccup: say so and try again at the next tick
                with self.lock:
                    self.errors.append(f"{source}: {exc}")

    def join(self, timeout: float = 30) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> list[Written]:
        with self.lock:
            return list(self.files)
