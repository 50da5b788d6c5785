"""Helpers for the hdfswatch integration tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from hdfswatch.detector import FileDetector, FileReady
from hdfswatch.events import EventBatch, Gap
from hdfswatch.namenode import NameNodeClient
from hdfswatch.proto import ClientNamenodeProtocol_pb2 as cnp
from hdfswatch.proto import hdfs_pb2
from hdfswatch.tailer import EditTailer

ROOT = Path(__file__).resolve().parents[3]
DEVSTACK = ROOT / "deploy" / "devstack" / "devstack"

class Namespace:
    """File operations over our own IPC client: what WebHDFS cannot do (hold a file open) and
    what it does slowly (many empty files)."""

    def __init__(self, client: NameNodeClient) -> None:
        self.client = client
        self.holder = f"hdfswatch-tests-{uuid.uuid4().hex[:8]}"

    async def create_open(self, path: str) -> int:
        """Create `path` and leave it open (no complete): a writer still at work."""
        resp = await self.client.call(
            "create",
            cnp.CreateRequestProto(src=path, masked=hdfs_pb2.FsPermissionProto(perm=0o644),
                                   clientName=self.holder, createFlag=1, createParent=True,
                                   replication=1, blockSize=1 << 20),
            cnp.CreateResponseProto, idempotent=False)
        return resp.fs.fileId

    async def complete(self, path: str, file_id: int = 0) -> None:
        for _ in range(50):
            resp = await self.client.call(
                "complete", cnp.CompleteRequestProto(src=path, clientName=self.holder,
                                                     fileId=file_id),
                cnp.CompleteResponseProto)
            if resp.result:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"could not complete {path}")

    async def touch(self, path: str) -> int:
        """An empty file, created and closed."""
        file_id = await self.create_open(path)
        await self.complete(path, file_id)
        return file_id

    async def delete(self, path: str, recursive: bool = True) -> bool:
        resp = await self.client.call("delete", cnp.DeleteRequestProto(src=path,
                                                                       recursive=recursive),
                                      cnp.DeleteResponseProto, idempotent=False)
        return resp.result

    async def rename(self, src: str, dst: str) -> bool:
        resp = await self.client.call("rename", cnp.RenameRequestProto(src=src, dst=dst),
                                      cnp.RenameResponseProto, idempotent=False)
        return resp.result

    async def mkdirs(self, path: str) -> bool:
        resp = await self.client.call(
            "mkdirs", cnp.MkdirsRequestProto(src=path, masked=hdfs_pb2.FsPermissionProto(perm=0o755),
                                             createParent=True),
            cnp.MkdirsResponseProto, idempotent=False)
        return resp.result


@dataclass
class Watch:
    """A tailer and a detector running in the background, collecting what they yield."""

    tailer: EditTailer
    detector: FileDetector
    ready: list[FileReady] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    batches: list[EventBatch] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    feeding: bool = False

    async def _run(self) -> None:
        async for item in self.tailer:
            self.feeding = True
            if isinstance(item, Gap):
                self.gaps.append(item)
            else:
                self.batches.append(item)
                self.ready.extend(await self.detector.feed(item))
            self.feeding = False

    def start(self) -> Watch:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def until(self, predicate, within: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        """Wait until `predicate(self)` holds (or fail after `within` seconds)."""
        deadline = asyncio.get_running_loop().time() + within
        while not predicate(self):
            if self.task is not None and self.task.done():
                self.task.result()
                raise AssertionError("the tailer stopped")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; ready so far: {self.ready}")
            await asyncio.sleep(0.02)

    async def caught_up(self, txid: int, within: float = 20.0) -> None:
        """Wait until every event up to `txid` has been handed out and fed."""
        await self.until(lambda w: (w.tailer.last_txid or 0) >= txid and not w.feeding, within)

    async def stop(self) -> None:
        self.tailer.close()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    def paths(self, prefix: str = "") -> list[str]:
        return [r.path for r in self.ready if r.path.startswith(prefix)]
