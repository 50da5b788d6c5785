"""`hdfs2kafka run --config FILE`: the daemon."""

from __future__ import annotations

import argparse
import signal
import sys

NAME = "run"
EXIT_UNAVAILABLE = 1
HELP = "run the daemon: stream every ready file of every source into Kafka, exactly once"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, metavar="FILE", help="the daemon's TOML config")


def run(args: argparse.Namespace) -> object:
    # A stop asked for while the heavy libraries are still loading must end the daemon
    # cleanly, not kill it: remember it until the event loop takes over the signals.
    early_stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early_stop.append(signum))
    return _run(args, early_stop)


async def _run(args: argparse.Namespace, early_stop: list[int]) -> int:
    from pipeline import config as config_mod
    from pipeline import logs
    from pipeline.daemon import EXIT_CONFIG, Daemon

    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"hdfs2kafka: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(cfg.daemon.log_level, cfg.daemon.log_format)
    if cfg.hdfs.reader == "native" and cfg.hdfs.user:
        # hdfs-native reads HADOOP_USER_NAME at every connection: set it once, before threads.
        from hdfsread.native import use_hdfs_user

        use_hdfs_user(cfg.hdfs.user)
    daemon = Daemon(cfg)
    daemon.early_stop = early_stop
    from pipeline.http import HttpBindError, HttpTlsError
    from pipeline.service import attach

    try:
        async with attach(daemon):
            return await daemon.run()
    except HttpTlsError as exc:
        print(f"hdfs2kafka: {exc.strerror} (in {args.config})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except HttpBindError as exc:
        # Not EXIT_CONFIG: the address may be free again soon (a previous daemon still
        # stopping), so systemd's restart is worth it.
        print(f"hdfs2kafka: {exc.strerror} (daemon.http in {args.config}); is another "
              "hdfs2kafka or another service using it? Stop it or change daemon.http", file=sys.stderr)
        return EXIT_UNAVAILABLE
