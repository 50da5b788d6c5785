"""Broken files made here: each raises one typed ReadError naming the file, the position
reached and the reason, and nothing else (no crash, no other exception type)."""

from __future__ import annotations

import io
from pathlib import Path

import fastavro
import pytest
from reader_samples import arrow_table, avro_bytes, avro_records, parquet_bytes, write

from hdfsread.base import LocalFile
from pipeline.positions import AvroPosition
from pipeline.readers import (
    BadMagic,
    CorruptFile,
    EmptyFile,
    ReadError,
    SyncMarkerMismatch,
    TruncatedFile,
    UnknownCodec,
    UnsupportedType,
    open_reader,
)
from pipeline.readers.avro import AvroReader

RECORDS = avro_records(120)


def _read_all(path: Path, fmt: str = "auto") -> None:
    """Read and decode every unit (a unit's rows are decoded when first asked for)."""
    with LocalFile(path) as f:
        for unit in open_reader(f, fmt).units(max_rows=30):  # type: ignore[arg-type]
            assert unit.batch.num_rows == unit.rows


def _fails(path: Path, kind: type[ReadError], fmt: str = "auto") -> ReadError:
    with pytest.raises(ReadError) as exc:
        _read_all(path, fmt)
    err = exc.value
    assert type(err) is kind, f"{type(err).__name__}: {err}"
    assert str(path) in str(err) and err.reason in str(err)
    return err


@pytest.mark.parametrize("fmt", ["auto", "parquet", "avro"])
def test_zero_byte_file(tmp_path: Path, fmt: str) -> None:
    _fails(write(tmp_path, "empty", b""), EmptyFile, fmt)


@pytest.mark.parametrize("fmt", ["auto", "parquet", "avro"])
def test_wrong_magic(tmp_path: Path, fmt: str) -> None:
    err = _fails(write(tmp_path, "x.csv", b"id,name\n1,a\n"), BadMagic, fmt)
    assert "byte 0" in str(err)


def test_parquet_named_file_that_is_avro(tmp_path: Path) -> None:
    _fails(write(tmp_path, "x.parquet", avro_bytes(RECORDS)), BadMagic, "parquet")


def test_truncated_parquet(tmp_path: Path) -> None:
    data = parquet_bytes(arrow_table(200))
    for cut in (len(data) // 2, len(data) - 1, 6):
        _fails(write(tmp_path, f"t{cut}.parquet", data[:cut]), TruncatedFile)


def test_corrupt_parquet_footer(tmp_path: Path) -> None:
    data = bytearray(parquet_bytes(arrow_table(200)))
    footer_len = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer_len
    data[start:start + footer_len // 2] = b"\x17" * (footer_len // 2)
    err = _fails(write(tmp_path, "f.parquet", bytes(data)), CorruptFile)
    assert err.position == "footer"
    data = bytearray(parquet_bytes(arrow_table(200)))
    data[-8:-4] = (len(data) * 2).to_bytes(4, "little")
    _fails(write(tmp_path, "g.parquet", bytes(data)), CorruptFile)


def test_corrupt_parquet_page(tmp_path: Path) -> None:
    data = bytearray(parquet_bytes(arrow_table(200), row_group_size=50))
    path = write(tmp_path, "p.parquet", bytes(data))
    with LocalFile(path) as f:
        md = open_reader(f)._pf.metadata  # type: ignore[attr-defined]
        col = md.row_group(2).column(3)
        at = col.data_page_offset
    data[at:at + col.total_compressed_size] = b"\xee" * col.total_compressed_size
    path.write_bytes(bytes(data))
    err = _fails(path, CorruptFile)
    assert str(err.position).startswith("rg:2/")


def test_truncated_avro(tmp_path: Path) -> None:
    data = avro_bytes(RECORDS, "deflate", block_records=30)
    with LocalFile(write(tmp_path, "whole.avro", data)) as f:
        blocks = list(AvroReader(f).blocks())
    third = blocks[2][0].block_offset
    err = _fails(write(tmp_path, "t.avro", data[:third + 40]), TruncatedFile)
    assert err.position == AvroPosition(third)
    err = _fails(write(tmp_path, "s.avro", data[:-3]), TruncatedFile)  # inside the last sync
    assert err.position == blocks[-1][0]
    _fails(write(tmp_path, "h.avro", data[:12]), TruncatedFile)  # inside the header


def test_avro_sync_marker_mismatch(tmp_path: Path) -> None:
    data = bytearray(avro_bytes(RECORDS, "null", block_records=30))
    path = write(tmp_path, "ok.avro", bytes(data))
    with LocalFile(path) as f:
        reader = AvroReader(f)
        _, (b1, _, len1), _ = list(reader.blocks())[:3]
    data[b1.block_offset + len1 - 5] ^= 0xFF  # last bytes of block 1 are its sync marker
    err = _fails(write(tmp_path, "sync.avro", bytes(data)), SyncMarkerMismatch)
    assert err.position == b1


def test_corrupt_avro_block(tmp_path: Path) -> None:
    data = bytearray(avro_bytes(RECORDS, "deflate", block_records=30))
    with LocalFile(write(tmp_path, "ok.avro", bytes(data))) as f:
        blocks = list(AvroReader(f).blocks())
    pos, _, length = blocks[2]
    start = pos.block_offset + 4
    data[start:start + length - 24] = (b"\x01\x02" * length)[:length - 24]
    err = _fails(write(tmp_path, "c.avro", bytes(data)), CorruptFile)
    assert err.position == pos  # the block that does not decode, not just its unit


def test_corrupt_avro_records(tmp_path: Path) -> None:
    # Uncompressed block whose records are garbage: a string length running past the block.
    data = bytearray(avro_bytes(RECORDS, "null", block_records=30))
    with LocalFile(write(tmp_path, "ok.avro", bytes(data))) as f:
        pos, _, length = list(AvroReader(f).blocks())[1]
    start = pos.block_offset + 4
    data[start:start + length - 24] = b"\xfe" * (length - 24)
    _fails(write(tmp_path, "r.avro", bytes(data)), CorruptFile)


def _header_only(meta: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.read.HEADER_SCHEMA,  # type: ignore[arg-type]
                               {"magic": b"Obj\x01", "meta": meta, "sync": b"s" * 16})
    return buf.getvalue()


def test_unknown_avro_codec(tmp_path: Path) -> None:
    data = _header_only({"avro.schema": b'"long"', "avro.codec": b"lzo"})
    err = _fails(write(tmp_path, "lzo.avro", data), UnknownCodec)
    assert "lzo" in err.reason


def test_bad_avro_schema(tmp_path: Path) -> None:
    _fails(write(tmp_path, "s.avro", _header_only({"avro.schema": b"{not json"})), CorruptFile)
    _fails(write(tmp_path, "n.avro", _header_only({})), CorruptFile)


def test_avro_schema_that_is_not_a_record(tmp_path: Path) -> None:
    buf = io.BytesIO()
    fastavro.writer(buf, ["null", "string", "long"], ["a", 1, None])
    err = _fails(write(tmp_path, "u.avro", buf.getvalue()), UnsupportedType)
    assert err.position == "header" and "not a record" in err.reason


def test_errors_survive_pickling(tmp_path: Path) -> None:
    import pickle

    err = TruncatedFile("/x.avro", AvroPosition(42), "the file ends inside a block header")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is TruncatedFile and str(back) == str(err)
    assert str(err) == "/x.avro at block:42: truncated file: the file ends inside a block header"
