"""Edit-stream decoding rate: events/s on one core, from a recorded real edit stream.

    python bench/bench_inotify_decode.py [--seconds 5] [--data bench/data/edit-stream.bin.gz]

The recording (bench/record_edit_stream.py) holds raw `getEditsFromTxid` replies from a real
NameNode; this decodes them again and again, from response bytes to typed event dataclasses,
exactly as the tailer does, and prints events per second. Target: >= 100,000 events/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import google.protobuf as protobuf  # noqa: E402
from google.protobuf.internal import api_implementation  # noqa: E402
from record_edit_stream import load  # noqa: E402

from hdfswatch.events import decode_edits_reply  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--data", type=Path, default=HERE / "data" / "edit-stream.bin.gz")
    args = parser.parse_args()
    replies = load(args.data)
    total_bytes = sum(map(len, replies))
    per_pass = sum(decode_edits_reply(r).event_count for r in replies)
    kinds: dict[str, int] = {}
    for r in replies:
        for b in decode_edits_reply(r).batches:
            for e in b.events:
                kinds[type(e).__name__] = kinds.get(type(e).__name__, 0) + 1
    # CPU time of this process: "events per second of one core", whatever else the machine
    # is running; wall-clock figures are printed too.
    best = 0.0
    events = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < args.seconds:
        t0 = time.process_time()
        for r in replies:
            decode_edits_reply(r)
        best = max(best, per_pass / max(time.process_time() - t0, 1e-9))
        events += per_pass
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(f"recorded stream: {len(replies)} replies, {per_pass} events, {total_bytes} bytes; "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print(f"decode (CPU time, one core): {events / cpu:,.0f} events/s mean, "
          f"{best:,.0f} events/s best pass")
    print(f"decode (wall clock): {events / wall:,.0f} events/s over {wall:.1f}s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"Python {platform.python_version()}, protobuf {protobuf.__version__} "
          f"({api_implementation.Type()})")
    print(f"target 100,000 events/s: {'met' if events / cpu >= 100_000 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
