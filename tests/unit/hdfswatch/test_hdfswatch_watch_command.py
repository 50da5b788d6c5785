"""`hdfs2kafka watch`: its flags and its JSON lines."""

from __future__ import annotations

import json

import pytest

from hdfswatch.detector import FileReady
from hdfswatch.events import CreateEvent, Gap, INodeType
from pipeline.cli import build_parser
from pipeline.commands import watch


def test_watch_takes_patterns_and_connection_flags():
    args = build_parser().parse_args(["watch", "--namenode", "nn1:8020", "--namenode",
                                      "nn2:8020", "--path", "/data/**", "--path", "/t/dt=*/*",
                                      "--from-txid", "42"])
    assert args.namenode == ["nn1:8020", "nn2:8020"]
    assert args.path == ["/data/**", "/t/dt=*/*"]
    assert args.from_txid == 42 and not args.listing


def test_watch_needs_a_pattern(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["watch"])
    assert "--path" in capsys.readouterr().err


def test_lines_are_json_with_an_event_key(capsys):
    watch._line("ready", FileReady("/d/a.avro", 7, 10, 123, "close", 99))
    watch._line("gap", Gap(5, 9), missed=4)
    watch._line("create", CreateEvent("/d", INodeType.DIRECTORY, 1, "u", "g", 0o755), txid=3)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"event": "ready", "path": "/d/a.avro", "file_id": 7, "size": 10,
                        "mtime": 123, "reason": "close", "txid": 99}
    assert lines[1] == {"event": "gap", "requested_txid": 5, "first_available_txid": 9,
                        "missed": 4}
    assert lines[2]["inode_type"] == "directory" and lines[2]["txid"] == 3
