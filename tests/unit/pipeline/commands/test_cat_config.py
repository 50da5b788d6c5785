"""`hdfs2kafka cat --config FILE` reads the file with the daemon's own loader: a setting the
daemon would refuse is refused here too, naming the file and the field, before any read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main


def _cat_with(tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str) -> tuple[int, str]:
    config = tmp_path / "h.toml"
    config.write_text(toml)
    rc = main(["cat", "/data/t.parquet", "--config", str(config)])
    out, err = capsys.readouterr()
    assert out == ""
    return rc, err


def test_a_setting_the_daemon_refuses_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _cat_with(tmp_path, capsys, '[hdfs]\nwebhdfs = "nn1:9870"\nuser = "hdfs"\nwebhdfs_port = 1\n')
    assert rc == 2
    assert str(tmp_path / "h.toml") in err
    assert "hdfs.webhdfs: expected an http(s):// URL (got 'nn1:9870')" in err
    assert "hdfs.webhdfs_port: unknown field" in err


def test_a_file_that_is_not_toml_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _cat_with(tmp_path, capsys, "[hdfs\nwebhdfs = 1\n")
    assert rc == 2
    assert "not valid TOML" in err


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["cat", "/data/t.parquet", "--config", str(tmp_path / "nowhere.toml")])
    assert rc == 2
    assert "nowhere.toml: file not found" in capsys.readouterr().err
