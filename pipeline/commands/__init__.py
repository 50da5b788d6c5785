"""Subcommands of the `hdfs2kafka` command line, one module per command.

Each module exposes `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`
(a coroutine function or a plain function).
"""

# Order is the order shown by `hdfs2kafka --help`. A module missing here is not a command.
COMMANDS = ("run", "check_config", "watch", "cat", "status", "ctl", "ledger", "demo", "smoke")
