"""`hdfs2kafka run --config FILE`: the daemon."""

from __future__ import annotations

import argparse
import sys

NAME = "run"
HELP = "run the daemon: stream every ready file of every source into Kafka, exactly once"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, metavar="FILE", help="the daemon's TOML config")


async def run(args: argparse.Namespace) -> int:
    from pipeline import config as config_mod
    from pipeline import logs
    from pipeline.daemon import EXIT_CONFIG, Daemon

    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"hdfs2kafka: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(cfg.daemon.log_level, cfg.daemon.log_format)
    daemon = Daemon(cfg)
    try:
        from pipeline.service import attach
    except ImportError:
        attach = None
    if attach is not None:
        async with attach(daemon):
            return await daemon.run()
    return await daemon.run()
