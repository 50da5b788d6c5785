"""Log lines in the JSON format are JSON, whoever writes them (ours or a library's)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from pipeline import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() binds the stderr of the moment (here the test's capture): undo it after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines()]


def test_standard_library_lines_are_json_whatever_they_hold(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "json")
    logging.getLogger("aiokafka.producer").warning('broker said "no"\nthen %s', "gave up\ttoo")
    try:
        raise ValueError('bad "value"\nacross lines')
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    structlog.get_logger("hdfs2kafka.test").info("ours", path='/a "b"')
    out, err = capsys.readouterr()
    assert out == ""
    got = lines(err)
    assert len(got) == 3
    assert got[0]["event"] == 'broker said "no"\nthen gave up\ttoo'
    assert got[0]["logger"] == "aiokafka.producer" and got[0]["level"] == "warning"
    assert got[0]["timestamp"]
    assert got[1]["event"] == "Task exception was never retrieved" and got[1]["level"] == "error"
    assert 'ValueError: bad "value"\nacross lines' in str(got[1]["exception"])
    assert got[2]["event"] == "ours" and got[2]["path"] == '/a "b"'


def test_library_chatter_below_warning_is_dropped_unless_debugging(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "json")
    logging.getLogger("aiohttp.access").info("GET /metrics")
    assert capsys.readouterr().err == ""
    logs.configure("debug", "json")
    logging.getLogger("aiohttp.access").info("GET /metrics")
    assert lines(capsys.readouterr().err)[0]["event"] == "GET /metrics"
    logs.configure("info", "console")
    logging.getLogger("aiokafka").warning("plain %d", 1)
    err = capsys.readouterr().err
    assert "plain 1" in err and "aiokafka" in err and not err.startswith("{")
