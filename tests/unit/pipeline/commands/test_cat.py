"""`hdfs2kafka cat` on local files: a JSON line per record, with positions that resume."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main


def _parquet(tmp_path: Path) -> Path:
    table = pa.table({"id": list(range(25)), "name": [f"n{i}" for i in range(25)]})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=10)
    return path


def _avro(tmp_path: Path) -> Path:
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"}, {"name": "name", "type": "string"}]})
    buf = io.BytesIO()
    w = fastavro.write.Writer(buf, schema, codec="deflate")
    for i in range(25):
        w.write({"id": i, "name": f"n{i}"})
        if i % 10 == 9:
            w.flush()
    w.flush()
    path = tmp_path / "t.avro"
    path.write_bytes(buf.getvalue())
    return path


def _cat(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict], str]:
    rc = main(["cat", *args])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines()], err


def test_parquet_records_with_positions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _parquet(tmp_path)
    rc, lines, err = _cat(capsys, f"file:{path}", "--key", "id")
    assert rc == 0
    assert [ln["value"] for ln in lines] == [{"id": i, "name": f"n{i}"} for i in range(25)]
    assert [ln["key"] for ln in lines] == [str(i) for i in range(25)]
    assert lines[0]["position"] == "rg:0/0" and lines[13]["position"] == "rg:1/3"
    assert json.loads(err.splitlines()[-1])["next"] is None


def test_from_and_limit_resume_where_the_last_one_stopped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Avro resumes at a block boundary, so a limit smaller than a block would not progress.
    for path, limit in ((_parquet(tmp_path), "7"), (_avro(tmp_path), "12")):
        seen: list[int] = []
        start: str | None = None
        for _ in range(10):
            args = [f"file:{path}", "--limit", limit] + (["--from", start] if start else [])
            rc, lines, err = _cat(capsys, *args)
            assert rc == 0
            seen += [ln["value"]["id"] for ln in lines]
            start = json.loads(err.splitlines()[-1])["next"]
            if start is None:
                break
        assert start is None
        # Avro resumes at a block boundary: records of a cut block are shown again.
        assert sorted(set(seen)) == list(range(25))
        if path.suffix == ".parquet":
            assert seen == list(range(25))


def test_avro_positions_name_the_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines, _ = _cat(capsys, f"file:{_avro(tmp_path)}")
    assert rc == 0 and len(lines) == 25
    blocks = sorted({ln["position"] for ln in lines}, key=lambda p: int(p.split(":")[1]))
    assert len(blocks) == 3
    assert [ln["record"] for ln in lines[:11]] == [*range(10), 0]
    rc, again, _ = _cat(capsys, f"file:{_avro(tmp_path)}", "--from", blocks[1])
    assert [ln["value"]["id"] for ln in again] == list(range(10, 25))


def test_avro_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import base64

    rc, lines, _ = _cat(capsys, f"file:{_avro(tmp_path)}", "--format", "avro", "--limit", "2")
    assert rc == 0
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"}, {"name": "name", "type": "string"}]})
    decoded = [fastavro.schemaless_reader(io.BytesIO(base64.b64decode(ln["value"])), schema, None)
               for ln in lines]
    assert decoded == [{"id": 0, "name": "n0"}, {"id": 1, "name": "n1"}]


def test_bad_file_and_bad_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    rc, _, err = _cat(capsys, f"file:{bad}")
    assert rc == 1 and str(bad) in err and "truncated" in err
    rc, _, err = _cat(capsys, f"file:{_parquet(tmp_path)}", "--from", "nowhere")
    assert rc == 2 and "bad position" in err
