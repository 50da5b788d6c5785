"""`hdfs2kafka check-config FILE`: validate a config file without starting anything."""

from __future__ import annotations

import argparse
import sys

NAME = "check-config"
HELP = "validate a config file; print every mistake with the file, source and field"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="FILE")


def run(args: argparse.Namespace) -> int:
    from pipeline import config as config_mod

    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"hdfs2kafka: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(s.name for s in cfg.sources) or "none"
    print(f"{args.config}: ok (instance {cfg.daemon.instance_id}; {len(cfg.sources)} source(s): {names})")
    return 0
