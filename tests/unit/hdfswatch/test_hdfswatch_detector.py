"""Readiness rules of the file detector, event by event (a namespace in memory stands in for
the NameNode's getFileInfo and getListing answers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from hdfswatch.detector import FileDetector, FileReady
from hdfswatch.errors import FileNotFound
from hdfswatch.events import (
    AppendEvent,
    CloseEvent,
    CreateEvent,
    EventBatch,
    INodeType,
    MetadataEvent,
    MetadataType,
    RenameEvent,
    TruncateEvent,
    UnlinkEvent,
)
from hdfswatch.namenode import FileStatus


class Namespace:
    """Paths -> status, answering like a NameNode."""

    def __init__(self) -> None:
        self.files: dict[str, FileStatus] = {}
        self.next_id = 1000

    def file(self, path: str, length: int = 10, mtime: int = 5, open_: bool = False) -> None:
        self.next_id += 1
        self.files[path] = FileStatus(path, self.next_id, length, mtime, False,
                                      under_construction=open_)
        parent = path.rsplit("/", 1)[0]
        while parent and parent not in self.files:
            self.next_id += 1
            self.files[parent] = FileStatus(parent, self.next_id, 0, 0, True)
            parent = parent.rsplit("/", 1)[0]

    async def get_file_info(self, path: str, *, need_location: bool = False) -> FileStatus | None:
        return self.files.get(path)

    async def list_dir(self, path: str, *, need_location: bool = False
                       ) -> AsyncIterator[FileStatus]:
        if path not in self.files:
            raise FileNotFound("java.io.FileNotFoundException", path)
        for p, status in sorted(self.files.items()):
            if p.rsplit("/", 1)[0] == path:
                yield status


def create(path: str) -> CreateEvent:
    return CreateEvent(path, INodeType.FILE, 1, "u", "g", 0o644)


async def feed(detector: FileDetector, txid: int, *events) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(r.path, r.reason) for r in await detector.feed(EventBatch(txid, tuple(events)))]


async def test_close_of_a_matching_file_is_ready_with_the_closed_size():
    ns = Namespace()
    ns.file("/d/a.avro", length=99, mtime=7)
    d = FileDetector(ns, ["/d/*.avro"])  # type: ignore[arg-type]
    assert await feed(d, 1, create("/d/a.avro")) == []
    assert "/d/a.avro" in d.pending
    ready = await d.feed(EventBatch(2, (CloseEvent("/d/a.avro", 42, 1234),)))
    assert ready == [FileReady("/d/a.avro", ns.files["/d/a.avro"].file_id, 42, 1234, "close", 2)]
    assert d.pending == {}


async def test_hidden_temporary_and_unmatched_closes_are_ignored():
    ns = Namespace()
    for p in ("/d/_SUCCESS", "/d/.a.crc", "/d/a.avro._COPYING_", "/d/_temporary/0/a.avro",
              "/e/a.avro"):
        ns.file(p)
    d = FileDetector(ns, ["/d/**"])  # type: ignore[arg-type]
    closes = [CloseEvent(p, 10, 1) for p in ns.files if not ns.files[p].is_dir]
    assert await feed(d, 1, *closes) == []


async def test_put_style_rename_is_ready_under_the_final_name():
    ns = Namespace()
    ns.file("/d/a.avro", length=3)
    d = FileDetector(ns, ["/d/**"])  # type: ignore[arg-type]
    assert await feed(d, 1, CloseEvent("/d/a.avro._COPYING_", 3, 1)) == []
    assert await feed(d, 2, RenameEvent("/d/a.avro._COPYING_", "/d/a.avro", 2)) == [
        ("/d/a.avro", "rename")]


async def test_a_directory_renamed_into_place_yields_its_complete_files():
    ns = Namespace()
    ns.file("/t/dt=1/part-0.parquet")
    ns.file("/t/dt=1/part-1.parquet")
    ns.file("/t/dt=1/.part-0.parquet.crc")
    ns.file("/t/dt=1/_SUCCESS")
    ns.file("/t/dt=1/still-open.parquet", open_=True)
    d = FileDetector(ns, ["/t/dt=*/*"])  # type: ignore[arg-type]
    got = await feed(d, 3, RenameEvent("/t/_temporary/0/task/dt=1", "/t/dt=1", 9))
    assert got == [("/t/dt=1/part-0.parquet", "rename"), ("/t/dt=1/part-1.parquet", "rename")]


async def test_an_open_file_renamed_into_place_waits_for_its_close():
    ns = Namespace()
    ns.file("/d/a.avro", open_=True)
    d = FileDetector(ns, ["/d/*.avro"])  # type: ignore[arg-type]
    assert await feed(d, 1, RenameEvent("/d/.tmp/a.avro", "/d/a.avro", 1)) == []
    ns.file("/d/a.avro")
    assert await feed(d, 2, CloseEvent("/d/a.avro", 10, 2)) == [("/d/a.avro", "close")]


async def test_unlink_drops_a_pending_file_and_a_candidate():
    ns = Namespace()
    d = FileDetector(ns, ["/d/**"])  # type: ignore[arg-type]
    await feed(d, 1, create("/d/a.avro"), create("/d/sub/b.avro"))
    assert set(d.pending) == {"/d/a.avro", "/d/sub/b.avro"}
    await feed(d, 2, UnlinkEvent("/d/a.avro", 1), UnlinkEvent("/d/sub", 1))
    assert d.pending == {}
    ns.file("/d/c.avro")
    assert await feed(d, 3, CloseEvent("/d/c.avro", 1, 1), UnlinkEvent("/d/c.avro", 2)) == []


async def test_append_reopens_and_the_next_close_is_ready_again():
    ns = Namespace()
    ns.file("/d/a.avro", length=5)
    d = FileDetector(ns, ["/d/*.avro"])  # type: ignore[arg-type]
    assert await feed(d, 1, CloseEvent("/d/a.avro", 5, 1)) == [("/d/a.avro", "close")]
    assert await feed(d, 2, AppendEvent("/d/a.avro")) == []
    assert "/d/a.avro" in d.pending
    assert await feed(d, 3, CloseEvent("/d/a.avro", 9, 2)) == [("/d/a.avro", "close")]


async def test_a_file_open_again_by_the_time_it_is_looked_at_waits_for_its_next_close():
    ns = Namespace()
    ns.file("/d/a.avro", open_=True)  # appended after this CLOSE, before we looked
    d = FileDetector(ns, ["/d/*.avro"])  # type: ignore[arg-type]
    assert await feed(d, 1, CloseEvent("/d/a.avro", 5, 1)) == []


async def test_moves_within_one_batch_are_followed():
    ns = Namespace()
    ns.file("/d/final/a.avro")
    d = FileDetector(ns, ["/d/final/*.avro", "/d/work/*.avro"])  # type: ignore[arg-type]
    got = await feed(d, 1, CloseEvent("/d/work/a.avro", 10, 1),
                     RenameEvent("/d/work/a.avro", "/d/final/a.avro", 2))
    assert got == [("/d/final/a.avro", "close")]
    got = await feed(d, 2, CloseEvent("/d/work/b.avro", 10, 1),
                     RenameEvent("/d/work/b.avro", "/elsewhere/b.avro", 2))
    assert got == []


async def test_truncate_is_noted_and_a_vanished_file_is_dropped():
    ns = Namespace()
    ns.file("/d/a.avro", length=4)
    d = FileDetector(ns, ["/d/*.avro"])  # type: ignore[arg-type]
    assert await feed(d, 1, TruncateEvent("/d/a.avro", 4, 3)) == [("/d/a.avro", "truncate")]
    assert await feed(d, 2, CloseEvent("/d/gone.avro", 4, 3)) == []
    assert d.dropped_total == 1


async def test_metadata_changes_do_not_make_files_ready():
    ns = Namespace()
    ns.file("/d/a.avro")
    d = FileDetector(ns, ["/d/*.avro"])  # type: ignore[arg-type]
    assert await feed(d, 1, MetadataEvent("/d/a.avro", MetadataType.TIMES, mtime=5)) == []


async def test_concat_close_without_a_size_takes_the_length_from_the_namenode():
    ns = Namespace()
    ns.file("/d/a.avro", length=77)
    d = FileDetector(ns, ["/d/*.avro"])  # type: ignore[arg-type]
    (ready,) = await d.feed(EventBatch(1, (CloseEvent("/d/a.avro", -1, 3),)))
    assert ready.size == 77


async def test_patterns_can_be_replaced():
    ns = Namespace()
    ns.file("/new/a.avro")
    d = FileDetector(ns, ["/old/**"])  # type: ignore[arg-type]
    await feed(d, 1, create("/old/x.avro"))
    d.set_patterns(["/new/**"])
    assert d.pending == {}
    assert await feed(d, 2, CloseEvent("/new/a.avro", 1, 1)) == [("/new/a.avro", "close")]
