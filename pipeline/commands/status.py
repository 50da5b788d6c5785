"""`hdfs2kafka status`: what a running daemon is doing (its GET /status), for a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeline.commands.admin import add_admin_arguments, call

NAME = "status"
HELP = "show a running daemon's sources, files in flight, edit-stream lag and last errors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_admin_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the raw JSON document")


def run(args: argparse.Namespace) -> int:
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
