"""`hdfs2kafka demo`: show the product working against the local dev stack."""

from __future__ import annotations

import argparse

from pipeline.commands import smoke

NAME = "demo"
HELP = "run hdfs2kafka against the local dev stack and show rows arriving in Kafka"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    smoke.add_arguments(parser)


async def run(args: argparse.Namespace) -> int:
    return await smoke.run(args)
