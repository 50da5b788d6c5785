"""`hdfs2kafka check-config FILE`: validate a config file without starting anything.

It reads every secret the file names (files, and systemd credentials when run by the service,
as `systemctl reload` does) and says where each comes from, never its value."""

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
        cfg = config_mod.load(args.config, unread_credentials=True)
    except config_mod.ConfigError as exc:
        print(f"hdfs2kafka: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(s.name for s in cfg.sources) or "none"
    print(f"{args.config}: ok (instance {cfg.daemon.instance_id}; {len(cfg.sources)} source(s): {names})")
    scheme = "https" if cfg.daemon.http_tls_cert else "http"
    token = "admin verbs need the token" if cfg.daemon.admin_token else "admin verbs open (loopback only)"
    print(f"  daemon.http: {scheme}://{cfg.daemon.http} ({token})")
    for setting, origin in cfg.secrets:
        print(f"  {setting}: *** ({_origin(origin)})")
    for note in cfg.notes:
        print(f"  note: {note}")
    return 0


def _origin(origin: str) -> str:
    if origin == "inline":
        return "written in the file; ${file:PATH} or ${credential:NAME} keeps it out"
    return f"from {origin}"
    return 0
