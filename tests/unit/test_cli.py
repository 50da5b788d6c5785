from __future__ import annotations

import pytest

from pipeline.cli import build_parser, main


def test_help_lists_the_smoke_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "smoke" in capsys.readouterr().out


def test_no_command_prints_help_and_fails() -> None:
    assert main([]) == 2
    assert build_parser().prog == "hdfs2kafka"
