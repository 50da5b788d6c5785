"""Detection latency on the dev stack: from a file's CLOSE (the writer's close returning) to its
FileReady, p50 and p99 over 200 files. Target: p99 under 100 ms with no other load.

    eval "$(deploy/devstack/devstack env)"
    python bench/bench_detection_latency.py [--files 200] [--pause 0.05] [--size 4096]

With `--roll` the edit log is rolled first; without it, the figures depend on how long the
NameNode's in-progress edit segment already is (a long-running dev stack that never rolls
makes every poll slower). A writer thread puts files into HDFS one after another through WebHDFS (create, write, close),
with `--pause` seconds between files so that the tailer also goes through its idle backoff;
the tailer and the detector run on the event loop of the same process, as in the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import threading
import time
import uuid

from hdfs import InsecureClient

from hdfswatch.detector import FileDetector
from hdfswatch.events import EventBatch
from hdfswatch.namenode import NameNodeClient
from hdfswatch.tailer import EditTailer


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def run(args: argparse.Namespace) -> int:
    namenode, user = os.environ["HDFS_NAMENODE"], os.environ["HDFS_USER"]
    web = InsecureClient(os.environ["WEBHDFS_URL"], user=user)
    base = f"/bench/latency/{uuid.uuid4().hex[:8]}"
    closed: dict[str, float] = {}
    ready: dict[str, float] = {}
    lock = threading.Lock()
    payload = os.urandom(args.size)

    def writer() -> None:
        rng = random.Random(1)
        for i in range(args.files):
            path = f"{base}/part-{i:05d}.avro"
            web.write(path, payload)
            with lock:
                closed[path] = time.monotonic()
            time.sleep(rng.uniform(0, 2 * args.pause))

    async with NameNodeClient([namenode], user) as nn:
        if args.roll:
            await nn.roll_edits()
        start = await nn.get_current_txid() + 1
        tailer = EditTailer(nn, start, cost_factor=args.cost_factor,
                            idle_factor=args.idle_factor)
        detector = FileDetector(nn, [f"{base}/*.avro"])

        async def detect() -> None:
            async for item in tailer:
                if isinstance(item, EventBatch):
                    for r in await detector.feed(item):
                        ready[r.path] = time.monotonic()
                        if len(ready) >= args.files:
                            return

        task = asyncio.create_task(detect())
        wall = time.monotonic()
        await asyncio.to_thread(writer)
        await asyncio.wait_for(task, 60)
        wall = time.monotonic() - wall
        polls = tailer.polls
        poll_ms = tailer.poll_seconds_total / max(polls, 1) * 1000
        await asyncio.to_thread(web.delete, base, recursive=True)

    latencies = [(ready[p] - closed[p]) * 1000 for p in closed]
    print(f"detection latency over {len(latencies)} files ({args.size} bytes each, "
          f"pause {args.pause * 1000:.0f} ms mean between files, {polls} polls in {wall:.1f}s, "
          f"{poll_ms:.1f} ms per poll):")
    print(f"  p50 {percentile(latencies, 50):.1f} ms   p90 {percentile(latencies, 90):.1f} ms   "
          f"p99 {percentile(latencies, 99):.1f} ms   max {max(latencies):.1f} ms   "
          f"mean {statistics.fmean(latencies):.1f} ms")
    print(f"  NameNode {namenode}, edit log rolled first: {args.roll}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"target p99 < 100 ms: {'met' if percentile(latencies, 99) < 100 else 'NOT met'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.05,
                        help="mean seconds between two files (uniform 0..2x)")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--idle-factor", type=float, default=0.03,
                        help="EditTailer idle_factor (idle pause = this x time since last event)")
    parser.add_argument("--cost-factor", type=float, default=0.5,
                        help="EditTailer cost_factor (pause >= this x the last poll's duration)")
    parser.add_argument("--roll", action="store_true",
                        help="roll the NameNode's edit log first (as an HA pair does every two "
                             "minutes): each poll that finds something makes the NameNode read "
                             "its in-progress segment from the start")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
