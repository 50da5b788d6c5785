"""`hdfs2kafka ctl`: change a running daemon's speed live (no restart).

    hdfs2kafka ctl rate SOURCE --rows 5000 [--bytes 2000000]   (omit both to lift the limits)
    hdfs2kafka ctl rate '*' --rows 50000                       (the global rows/s limit)
    hdfs2kafka ctl pause SOURCE | resume SOURCE
    hdfs2kafka ctl workers N
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.commands.admin import add_admin_arguments, call

NAME = "ctl"
HELP = "change a running daemon live: rate limits, pause/resume a source, worker count"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_admin_arguments(parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    rate = verbs.add_parser("rate", help="set a source's rows/s and bytes/s limits ('*': global)")
    rate.add_argument("source")
    rate.add_argument("--rows", type=float, help="rows per second (omit: no limit)")
    rate.add_argument("--bytes", type=float, help="bytes per second (omit: no limit)")
    for verb in ("pause", "resume"):
        v = verbs.add_parser(verb, help=f"{verb} a source at its next unit boundary")
        v.add_argument("source")
    w = verbs.add_parser("workers", help="set the number of workers")
    w.add_argument("count", type=int)


def run(args: argparse.Namespace) -> int:
    if args.verb == "rate":
        code, doc = call(args, "PUT", f"/sources/{args.source}/rate",
                         {"rows_per_second": args.rows, "bytes_per_second": args.bytes})
    elif args.verb in ("pause", "resume"):
        code, doc = call(args, "POST", f"/sources/{args.source}/{args.verb}")
    else:
        code, doc = call(args, "PUT", "/workers", {"workers": args.count})
    if code != 200:
        print(f"hdfs2kafka ctl {args.verb}: {code or 'error'}: {doc}", file=sys.stderr)
        return 1
    print(json.dumps(doc))
    return 0
