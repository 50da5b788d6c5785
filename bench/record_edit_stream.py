"""Record a real NameNode edit stream for the decoding benchmark and the unit-test fixture.

    python bench/record_edit_stream.py bench              # -> bench/data/edit-stream.bin.gz
    python bench/record_edit_stream.py fixture            # -> tests/unit/hdfswatch/fixtures/

It makes HDFS changes under a fresh directory of the dev stack (connection from the
environment, as `devstack env` prints it), then saves the raw `getEditsFromTxid` replies that
cover them: each as a 4-byte big-endian length and the serialized response message.

- `bench`: thousands of files created, closed, renamed, chmod-ed, deleted (all seven event
  types, in proportions like a busy warehouse directory).
- `fixture`: one small, known sequence holding each event type once or twice.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import struct
import sys
import uuid
from pathlib import Path

import requests
from hdfs import InsecureClient

from hdfswatch.namenode import NameNodeClient
from hdfswatch.proto import ClientNamenodeProtocol_pb2 as cnp
from hdfswatch.proto import hdfs_pb2

ROOT = Path(__file__).resolve().parent.parent


class Ops:
    def __init__(self, nn: NameNodeClient, webhdfs_url: str, user: str) -> None:
        self.nn = nn
        self.url = webhdfs_url
        self.user = user
        self.web = InsecureClient(webhdfs_url, user=user)
        self.holder = f"hdfswatch-record-{uuid.uuid4().hex[:8]}"

    async def touch(self, path: str) -> None:
        resp = await self.nn.call(
            "create", cnp.CreateRequestProto(src=path, masked=hdfs_pb2.FsPermissionProto(perm=0o644),
                                             clientName=self.holder, createFlag=1,
                                             createParent=True, replication=1, blockSize=1 << 20),
            cnp.CreateResponseProto, idempotent=False)
        done = False
        while not done:
            done = (await self.nn.call("complete", cnp.CompleteRequestProto(
                src=path, clientName=self.holder, fileId=resp.fs.fileId),
                cnp.CompleteResponseProto)).result

    async def rename(self, src: str, dst: str) -> None:
        await self.nn.call("rename", cnp.RenameRequestProto(src=src, dst=dst),
                           cnp.RenameResponseProto, idempotent=False)

    async def delete(self, path: str) -> None:
        await self.nn.call("delete", cnp.DeleteRequestProto(src=path, recursive=True),
                           cnp.DeleteResponseProto, idempotent=False)

    async def chmod(self, path: str, perm: str) -> None:
        await asyncio.to_thread(self.web.set_permission, path, perm)

    async def write(self, path: str, data: bytes, append: bool = False) -> None:
        await asyncio.to_thread(self.web.write, path, data, append=append,
                                overwrite=not append)

    async def truncate(self, path: str, length: int) -> None:
        def call() -> None:
            r = requests.post(f"{self.url}/webhdfs/v1{path}",
                              params={"op": "TRUNCATE", "newlength": str(length),
                                      "user.name": self.user}, timeout=30)
            r.raise_for_status()
        await asyncio.to_thread(call)


async def bench_workload(ops: Ops, base: str, files: int) -> None:
    sem = asyncio.Semaphore(32)
    for day in range(1, 29):
        await ops.nn.call("mkdirs", cnp.MkdirsRequestProto(
            src=f"{base}/t/dt=2024-01-{day:02d}", masked=hdfs_pb2.FsPermissionProto(perm=0o755),
            createParent=True), cnp.MkdirsResponseProto, idempotent=False)

    async def one(i: int) -> None:
        async with sem:
            part = f"{base}/t/dt=2024-01-{i % 28 + 1:02d}"
            tmp = f"{base}/t/_temporary/0/task_{i}/part-{i:05d}.parquet"
            await ops.touch(tmp)
            await ops.rename(tmp, f"{part}/part-{i:05d}.parquet")
            if i % 4 == 0:
                await ops.chmod(f"{part}/part-{i:05d}.parquet", "640")
            if i % 3 == 0:
                await ops.delete(f"{base}/t/_temporary/0/task_{i}")

    await asyncio.gather(*(one(i) for i in range(files)))
    for i in range(20):  # a few appends and truncates (these go through a DataNode)
        path = f"{base}/logs/events-{i}.avro"
        await ops.write(path, b"x" * 100)
        await ops.write(path, b"y" * 10, append=True)
        await ops.truncate(path, 50)
    await ops.delete(f"{base}/t/_temporary")


async def fixture_workload(ops: Ops, base: str) -> None:
    await ops.write(f"{base}/a.parquet._COPYING_", b"0123456789")     # CREATE, CLOSE
    await ops.rename(f"{base}/a.parquet._COPYING_", f"{base}/a.parquet")  # RENAME
    await ops.chmod(f"{base}/a.parquet", "600")                           # METADATA
    await ops.write(f"{base}/a.parquet", b"abc", append=True)             # APPEND, CLOSE
    await ops.truncate(f"{base}/a.parquet", 4)                            # TRUNCATE
    await ops.delete(f"{base}/a.parquet")                                 # UNLINK


async def record(nn: NameNodeClient, start: int, end: int) -> list[bytes]:
    replies = []
    txid = start
    while txid <= end:
        payload = await nn.call_raw("getEditsFromTxid",
                                    cnp.GetEditsFromTxidRequestProto(txid=txid).SerializeToString())
        msg = cnp.GetEditsFromTxidResponseProto.FromString(payload)
        if msg.eventsList.lastTxid < txid:
            await asyncio.sleep(0.05)
            continue
        replies.append(payload)
        txid = msg.eventsList.lastTxid + 1
    return replies


def save(path: Path, replies: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(struct.pack(">I", len(r)) + r for r in replies)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


def load(path: Path) -> list[bytes]:
    """The replies saved by `save`."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["bench", "fixture"])
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    namenode, user = os.environ["HDFS_NAMENODE"], os.environ["HDFS_USER"]
    async with NameNodeClient([namenode], user) as nn:
        ops = Ops(nn, os.environ["WEBHDFS_URL"], user)
        base = f"/bench/edit-stream/{uuid.uuid4().hex[:8]}"
        start = await nn.get_current_txid() + 1
        if args.mode == "bench":
            await bench_workload(ops, base, args.files)
            out = args.out or ROOT / "bench" / "data" / "edit-stream.bin.gz"
        else:
            await fixture_workload(ops, base)
            out = args.out or ROOT / "tests" / "unit" / "hdfswatch" / "fixtures" / "edits-replies.bin"
        end = await nn.get_current_txid()
        replies = await record(nn, start, end)
        await ops.delete(base)
    save(out, replies)
    from hdfswatch.events import decode_edits_reply

    events = sum(decode_edits_reply(r).event_count for r in replies)
    print(f"recorded txids {start}..{end}: {len(replies)} replies, {events} events under {base} "
          f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
