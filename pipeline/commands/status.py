"""`hdfs2kafka status`: what a running daemon is doing (its GET /status), for a terminal;
with `--group`, every member of its group (`pipeline.commands.status_group`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Coroutine
from typing import Any

from pipeline.commands.admin import add_admin_arguments, call

NAME = "status"
HELP = "show a running daemon's sources, files in flight, edit-stream lag and last errors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_admin_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the raw JSON document")
    parser.add_argument("--group", action="store_true",
                        help="every member of the config's group: its Kafka consumer group "
                             "(members, shards, state) and each member's /status; needs --config. "
                             "Exit code 1 when the group cannot be described or has no member")


def run(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    if args.group:
        return run_group(args)
    code, doc = call(args, "GET", "/status")
    if code != 200:
        print(f"hdfs2kafka status: {code}: {doc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(render(doc))
    return 0


def render(doc: dict[str, Any]) -> str:
    es = doc.get("edit_stream") or {}
    lines = [
        f"instance {doc['instance_id']}: {'ready' if doc['ready'] else 'recovering'}, "
        f"workers {doc['workers_busy']}/{doc['workers']} busy, queue {doc['queue_depth']}, "
        f"edit stream txid {es.get('txid')} lag {es.get('lag')}",
        "",
        f"{'SOURCE':20} {'STATE':10} {'ROWS':>12} {'FILES':>7} {'QUAR':>5} {'ROWS/S LIMIT':>13}  TOPIC",
    ]
    for s in doc["sources"]:
        limit = s.get("rows_per_second_limit")
        lines.append(f"{s['name']:20} {s['state']:10} {s['rows_committed']:>12} {s['files_done']:>7} "
                     f"{s['files_quarantined']:>5} {limit if limit else '-':>13}  {s['topic']}")
    if doc["files_in_flight"]:
        lines += ["", "FILES IN FLIGHT"]
        for f in doc["files_in_flight"]:
            total = f.get("rows_total")
            pct = f" ({100 * f['rows_done'] / total:.0f}%)" if total else ""
            lines.append(f"  {f['source']}: {f['path']}  {f['rows_done']}/{total or '?'} rows{pct} "
                         f"at {f.get('position') or 'start'}")
    if doc["last_errors"]:
        lines += ["", "LAST ERRORS"]
        for e in doc["last_errors"]:
            lines.append(f"  [{e.get('source') or '-'}] {e['error']}")
    return "\n".join(lines)


async def run_group(args: argparse.Namespace) -> int:
    from pipeline import config as config_mod
    from pipeline.commands import status_group

    if not args.config:
        print("hdfs2kafka status --group: needs --config FILE (the group, its Kafka and ledger topic)",
              file=sys.stderr)
        return 2
    try:
        cfg = config_mod.load(args.config, unread_credentials=True)
    except config_mod.ConfigError as exc:
        print(f"hdfs2kafka status --group: {exc}", file=sys.stderr)
        return 1
    status_group.kafka_credentials(cfg)
    try:
        desc, rows = await status_group.gather(cfg)
    except Exception as exc:
        why = str(exc) if isinstance(exc, status_group.GroupError) else f"{type(exc).__name__}: {exc}"
        print(f"hdfs2kafka status --group: cannot describe group {cfg.daemon.group_name} at "
              f"{cfg.kafka.bootstrap}: {why}", file=sys.stderr)
        for note in cfg.notes:
            if note.startswith("kafka."):
                print(f"  {note}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status_group.document(desc, rows), indent=2))
    else:
        print(status_group.render(desc, rows))
    return 0 if desc.members else 1
