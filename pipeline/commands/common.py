"""Connection settings shared by the commands: flags first, then `--config FILE`, then the
environment that `deploy/devstack/devstack env` prints."""

from __future__ import annotations

import argparse
import getpass
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Connection:
    namenodes: tuple[str, ...]
    webhdfs_url: str | None
    hdfs_user: str
    kafka_bootstrap: str | None


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connection (defaults from the environment)")
    g.add_argument("--namenode", action="append", metavar="HOST:PORT",
                   help="NameNode RPC address; repeat for HA (env HDFS_NAMENODE, comma separated)")
    g.add_argument("--webhdfs", metavar="URL", help="WebHDFS base URL (env WEBHDFS_URL)")
    g.add_argument("--user", metavar="NAME", help="HDFS user (env HDFS_USER)")
    g.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP)")


def connection_from(args: argparse.Namespace) -> Connection:
    env = os.environ
    namenodes: list[str] = list(getattr(args, "namenode", None) or [])
    if not namenodes and env.get("HDFS_NAMENODE"):
        namenodes = [n.strip() for n in env["HDFS_NAMENODE"].split(",") if n.strip()]
    return Connection(
        namenodes=tuple(namenodes),
        webhdfs_url=getattr(args, "webhdfs", None) or env.get("WEBHDFS_URL"),
        hdfs_user=getattr(args, "user", None) or env.get("HDFS_USER") or getpass.getuser(),
        kafka_bootstrap=getattr(args, "bootstrap", None) or env.get("KAFKA_BOOTSTRAP"),
    )
