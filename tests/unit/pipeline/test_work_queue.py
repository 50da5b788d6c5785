"""The ready files' queue: each source's files in order, sources served in turn."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.items import FileWork
from pipeline.ledger import FileEntry
from pipeline.workers import WorkQueue


def work(source: str, file_id: int) -> FileWork:
    return FileWork(entry=FileEntry(source=source, path=f"/{source}/{file_id}", file_id=file_id,
                                    size=1, mtime=1))


async def drain(q: WorkQueue) -> list[tuple[str, int]]:
    out = []
    while not q.empty():
        w = await q.get()
        out.append((w.entry.source, w.entry.file_id))
    return out


async def test_a_new_file_of_a_quiet_source_does_not_wait_for_another_sources_backlog() -> None:
    q = WorkQueue()
    for i in range(100):
        q.put_nowait(work("backlog", i))
    q.put_nowait(work("quiet", 1000))
    assert q.qsize() == 101
    taken = await drain(q)
    assert taken[:2] == [("backlog", 0), ("quiet", 1000)]
    assert [f for s, f in taken if s == "backlog"] == list(range(100))  # in order within a source


async def test_sources_take_turns_and_keep_their_order() -> None:
    q = WorkQueue()
    for i in range(3):
        q.put_nowait(work("a", i))
    for i in range(10, 12):
        q.put_nowait(work("b", i))
    assert (await q.get()).entry.file_id == 0
    q.put_nowait(work("c", 20))
    assert await drain(q) == [("b", 10), ("a", 1), ("c", 20), ("b", 11), ("a", 2)]
    assert q.qsize() == 0 and q.empty()


async def test_bounded_and_waiting_like_an_asyncio_queue() -> None:
    q = WorkQueue(maxsize=2)
    q.put_nowait(work("a", 1))
    q.put_nowait(work("a", 2))
    assert q.full()
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(work("b", 3))
    getter = asyncio.create_task(drain_one_later(q))
    await asyncio.wait_for(q.put(work("b", 3)), 1)  # space once a worker takes a file
    assert (await getter).entry.file_id == 1
    assert await drain(q) == [("a", 2), ("b", 3)]
    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.put_nowait(work("c", 4))
    assert (await asyncio.wait_for(waiting, 1)).entry.file_id == 4


async def drain_one_later(q: WorkQueue) -> FileWork:
    await asyncio.sleep(0.01)
    return await q.get()
