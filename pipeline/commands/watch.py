"""`hdfs2kafka watch`: tail the NameNode edit stream and print file-ready events as JSON lines.

    hdfs2kafka watch --namenode 127.0.0.1:19820 --path '/data/**'

Each line is one JSON object with an `event` key: `watching` (once, with the starting txid),
`ready` (a complete file: path, file_id, size, mtime, reason, txid), `gap` (edits were purged
before they were read; a reconcile listing follows, its files with reason `listing`), and with
`--raw` every edit-stream event (`create`, `close`, `rename`, ...). Connection settings come
from the flags, else from the environment (HDFS_NAMENODE, HDFS_USER), else from
HADOOP_CONF_DIR, which also says whether to authenticate with Kerberos (as
HDFS2KAFKA_PRINCIPAL with HDFS2KAFKA_KEYTAB when they are set, else the ticket cache).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import json
import sys
from typing import Any

from pipeline.commands.common import add_connection_arguments, connection_from

NAME = "watch"
HELP = "print files becoming ready in HDFS (from the NameNode edit stream) as JSON lines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--path", action="append", required=True, metavar="PATTERN",
                        help="source pattern, e.g. '/data/**' or '/data/t/dt=*/*'; repeatable")
    parser.add_argument("--from-txid", type=int, metavar="TXID",
                        help="first edit-log transaction to read (default: from now on)")
    parser.add_argument("--listing", action="store_true",
                        help="find files by listing instead of the edit stream (non-superusers)")
    parser.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between listings with --listing (default 10)")
    parser.add_argument("--raw", action="store_true", help="also print every edit-stream event")
    parser.add_argument("--hadoop-conf", metavar="DIR",
                        help="Hadoop configuration directory (default $HADOOP_CONF_DIR), used "
                             "when no NameNode address is given")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N ready files")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _line(event: str, obj: Any = None, **extra: Any) -> None:
    data: dict[str, Any] = {"event": event}
    if obj is not None:
        data.update({f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    data.update(extra)
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def _watch(args: argparse.Namespace) -> int:
    from hdfswatch.events import event_name
    from hdfswatch.watch import Batch, Gap, Listed, Watch

    conn = connection_from(args)
    client = conn.namenode_client(retry_for=None)
    ready = 0
    async with client:
        if args.listing:
            watch = Watch(client, args.path, listing_interval=args.interval)
            _line("watching", mode="listing", namenodes=list(client.addresses), patterns=args.path)
        else:
            start = args.from_txid
            if start is None:
                # Asked here, not by the tailer, so that the first line can say where it starts
                # (and a missing privilege fails before anything is printed).
                current = await client.get_current_txid()
                start = current + 1 if current >= 0 else None
            watch = Watch(client, args.path, start_txid=start)
            _line("watching", mode="edits", from_txid=start, namenodes=list(client.addresses),
                  patterns=args.path)
        async for change in watch:
            files = []
            if isinstance(change, Batch):
                if args.raw:
                    for ev in change.events:
                        _line(event_name(ev), ev, txid=change.txid)
                files = change.ready
            elif isinstance(change, Listed):
                files = [change.file]
            elif isinstance(change, Gap):
                _line("gap", change, missed=change.missed)
            for file in files:
                _line("ready", file)
                if isinstance(change, Listed) and change.why == "gap":
                    continue  # printed, not counted: --count counts files the watch itself found
                ready += 1
                if args.count and ready >= args.count:
                    return 0
    return 0


async def run(args: argparse.Namespace) -> int:
    from hdfswatch.errors import ConfigError, HdfsWatchError, NotSuperuserError
    from pipeline import logs

    # stdout carries the JSON lines only; what the detector and the client log goes to stderr.
    logs.configure("info", "console")
    task = asyncio.ensure_future(_watch(args))
    try:
        if args.duration:
            done, _ = await asyncio.wait({task}, timeout=args.duration)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return 0
        return await task
    except BrokenPipeError:  # the reader went away (`| head`)
        return 0
    except NotSuperuserError as exc:
        print(f"hdfs2kafka watch: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        print(f"hdfs2kafka watch: {exc}", file=sys.stderr)
        return 2
    except HdfsWatchError as exc:
        print(f"hdfs2kafka watch: {exc}", file=sys.stderr)
        return 1
