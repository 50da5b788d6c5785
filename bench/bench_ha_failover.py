"""Detection latency right after a NameNode failover, on the HA dev stack (`devstack up --ha`).

    python bench/bench_ha_failover.py [--rounds 6] [--kill] [--baseline 20]

The edit-stream tailer and the file detector run as in the daemon (one NameNodeClient from the
nameservice in the stack's HADOOP_CONF_DIR). Each round switches the active NameNode with
`devstack failover` (with `--kill`: SIGKILLs the active first, and restarts it as standby after
the round), then at once writes one file through WebHDFS (both URLs) and times:

- `haadmin`: the failover command, from start to return;
- `answer`: from the command's return to the first call the new active answered for the
  tailer (negative: it answered before the command returned);
- `close->seen`: from the file's close (the write returning) to its FileReady;
- `done->seen`: from the command's return to the FileReady (what a user waits, the WebHDFS
  write of the file, which also has to find the new active, included).

`--baseline N` first times N files with no failover, for comparison;
`--failover-backoff-max 5` runs the client without its failover cap on backoff.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from hdfs import InsecureClient
from hdfs.util import HdfsError

from hdfswatch.detector import FileDetector
from hdfswatch.events import EventBatch
from hdfswatch.namenode import NameNodeClient
from hdfswatch.tailer import EditTailer

DEVSTACK = Path(__file__).resolve().parents[1] / "deploy" / "devstack" / "devstack"


def devstack(*args: str) -> str:
    return subprocess.run([sys.executable, str(DEVSTACK), *args], check=True,
                          capture_output=True, text=True, timeout=300).stdout


def write(web: InsecureClient, path: str, data: bytes) -> float:
    """Write a file, riding out the failover; the monotonic time its close returned."""
    import requests

    while True:
        try:
            web.write(path, data, overwrite=True)
            return time.monotonic()
        except (HdfsError, requests.RequestException):
            time.sleep(0.05)


async def run(args: argparse.Namespace) -> int:
    env = json.loads(devstack("env", "--ha", "--json"))
    web = InsecureClient(env["WEBHDFS_URL"], user=env["HDFS_USER"])
    base = f"/bench/ha-failover/{uuid.uuid4().hex[:8]}"
    web.makedirs(base)
    payload = os.urandom(4096)
    seen: dict[str, float] = {}
    nn = NameNodeClient.from_hadoop_conf(env["HADOOP_CONF_DIR"], env["HDFS_USER"],
                                         failover_backoff_max=args.failover_backoff_max)
    tailer = EditTailer(nn)
    detector = FileDetector(nn, [f"{base}/**"])

    async def tail() -> None:
        async for item in tailer:
            if isinstance(item, EventBatch):
                for ready in await detector.feed(item):
                    seen[ready.path] = time.monotonic()

    async def seen_at(path: str, within: float = 60) -> float:
        deadline = time.monotonic() + within
        while path not in seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} not seen within {within}s")
            await asyncio.sleep(0.001)
        return seen[path]

    task = asyncio.create_task(tail())
    try:
        await nn.get_current_txid()
        await asyncio.sleep(1.0)
        baseline = []
        for i in range(args.baseline):
            path = f"{base}/base-{i:03d}"
            closed = await asyncio.to_thread(write, web, path, payload)
            baseline.append((await seen_at(path)) - closed)
            await asyncio.sleep(0.2)
        if baseline:
            print(f"baseline ({len(baseline)} files, no failover): close->seen median "
                  f"{statistics.median(baseline) * 1000:.0f} ms, max {max(baseline) * 1000:.0f} ms")
        rows = []
        for r in range(args.rounds):
            killed = None
            if args.kill:
                killed = json.loads(await asyncio.to_thread(devstack, "kill-active", "--ha"))["killed"]
            start = time.monotonic()
            doc = json.loads(await asyncio.to_thread(devstack, "failover", "--ha"))
            done, done_wall = time.monotonic(), time.time()
            path = f"{base}/after-{r:02d}"
            closed = await asyncio.to_thread(write, web, path, payload)
            at = await seen_at(path)
            answer = (nn.active_since_unix or 0) - done_wall
            rows.append((done - start, answer, at - closed, at - done))
            print(f"round {r}: {doc['from']} -> {doc['to']}{' (killed)' if killed else ''}: "
                  f"haadmin {done - start:.2f} s, answer {answer * 1000:+.0f} ms, "
                  f"close->seen {(at - closed) * 1000:.0f} ms, done->seen {(at - done) * 1000:.0f} ms",
                  flush=True)
            if killed:
                await asyncio.to_thread(devstack, "restart", "--ha", killed)
            await asyncio.sleep(1.0)
        for i, name in enumerate(("haadmin s", "answer ms", "close->seen ms", "done->seen ms")):
            values = [row[i] * (1 if i == 0 else 1000) for row in rows]
            print(f"{name:15} min {min(values):8.2f}  median {statistics.median(values):8.2f}  "
                  f"max {max(values):8.2f}")
        print(f"failovers seen by the client: {nn.active_changes}, gaps: {tailer.gaps}")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await nn.close()
        web.delete(base, recursive=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--kill", action="store_true", help="SIGKILL the active first")
    parser.add_argument("--baseline", type=int, default=20)
    parser.add_argument("--failover-backoff-max", type=float, default=0.5,
                        help="the client's cap on backoff while NameNodes answer at once "
                             "(5 = as backoff_max: no separate cap)")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
