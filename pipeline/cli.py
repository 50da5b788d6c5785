"""The `hdfs2kafka` command line: dispatches to the modules in `pipeline.commands`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Sequence
from types import ModuleType

from pipeline import __version__
from pipeline.commands import COMMANDS

# Commands whose module lives outside the daemon's package (the demo is a package of its own).
_ELSEWHERE = {"demo": "demo.run"}


def _command_modules() -> list[ModuleType]:
    modules = []
    for name in COMMANDS:
        path = _ELSEWHERE.get(name, f"pipeline.commands.{name}")
        try:
            modules.append(importlib.import_module(path))
        except ModuleNotFoundError as exc:
            if exc.name not in (path, path.partition(".")[0]):
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdfs2kafka",
        description="Stream Parquet and Avro files from HDFS into Kafka, every row exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"hdfs2kafka {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    result = args._run(args)
    if inspect.iscoroutine(result):
        try:
            result = _run_async(result)
        except KeyboardInterrupt:
            return 130
    return int(result or 0)


def _run_async(coro):  # type: ignore[no-untyped-def]
    # Only a missing uvloop falls back: an ImportError raised by the command itself is its own.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    sys.exit(main())
