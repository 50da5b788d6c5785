"""Avro object container files: streamed block by block, decoded into Arrow.

fastavro reads the header (metadata, writer schema, codec, sync marker). This module walks the
blocks itself (count, size, data, sync marker) so that every block's byte offset is known, checks
each sync marker, and hands "header + the unit's raw blocks" to polars-avro, a Rust decoder that
builds Arrow columns directly: about 1M rows/s on the reference dataset where fastavro's
per-record decode manages about 70k (bench/RESULTS.md). A position is the byte offset of a block;
resuming reads the header and then jumps there.

Some valid Avro has no Arrow column type: a record that contains itself (a list, a tree), a
union of several non-null types, the `duration` logical type. A top-level field holding any of
them is passed through as its own Avro encoding: each block is decompressed and such fields are
framed as Avro `bytes` by the compiled walker (`wrap_avro_fields`), polars-avro is told they are
`bytes`, and the column's metadata carries the program with which the JSON encoder writes them
(pipeline/encoders/avro_json.py). The other fields decode as usual.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator
from typing import Any

import fastavro
import pyarrow as pa

from hdfsread.base import FileIO, RandomAccessFile, RangedReadError
from hdfswatch.framing import encode_zigzag
from pipeline.encoders._native import rows as _rows
from pipeline.encoders.avro import (
    BLOCK_HEAD_MAX,
    SYNC_SIZE,
    _decompressor,
    compile_avro_schema,
    iter_blocks,
    read_block_head,
)
from pipeline.encoders.avro_json import AVRO_JSON_KEY, compile_json_programs
from pipeline.positions import AvroPosition, Position
from pipeline.readers.base import (
    AVRO_MAGIC,
    DEFAULT_MAX_ROWS,
    BadPosition,
    CorruptFile,
    Format,
    SyncMarkerMismatch,
    TruncatedFile,
    Unit,
    UnknownCodec,
    UnsupportedType,
    check_magic,
)

MAGIC = AVRO_MAGIC
CODECS = frozenset({"null", "deflate", "snappy", "zstandard", "xz", "bzip2"})
# A unit holds whole blocks up to max_rows, and at most this many bytes of blocks (one block
# larger than this still makes a unit of its own).
MAX_UNIT_BYTES = 64 * 1024 * 1024


class AvroReader:
    """Reads an Avro container file as units of whole blocks."""

    format: Format = "avro"

    def __init__(self, file: RandomAccessFile, *, max_unit_bytes: int = MAX_UNIT_BYTES) -> None:
        self._file = file
        self._max_unit_bytes = max_unit_bytes
        path = file.path
        check_magic(file, "avro")
        fo = FileIO(file)
        try:
            header = fastavro.schemaless_reader(fo, fastavro.read.HEADER_SCHEMA, None)  # type: ignore[arg-type]
        except RangedReadError:
            raise
        except EOFError:
            raise TruncatedFile(path, "header", "the file ends inside its header") from None
        except Exception as exc:
            raise CorruptFile(path, "header", f"cannot decode the header: {exc}") from None
        assert isinstance(header, dict)
        self._header_end = fo.tell()
        if self._header_end > file.size:
            raise TruncatedFile(path, "header", "the file ends inside its header")
        self._header = file.read_at(0, self._header_end)
        self._sync: bytes = header["sync"]
        meta: dict[str, bytes] = header["meta"]
        self.metadata = meta
        self.codec = meta.get("avro.codec", b"null").decode("utf-8", "replace")
        if self.codec not in CODECS:
            raise UnknownCodec(path, "header", f"codec {self.codec!r} (known: "
                                               f"{', '.join(sorted(CODECS))})")
        try:
            self.avro_schema: dict[str, Any] = json.loads(meta["avro.schema"])
            fastavro.parse_schema(self.avro_schema)
        except KeyError:
            raise CorruptFile(path, "header", "no avro.schema in the header") from None
        except Exception as exc:
            raise CorruptFile(path, "header", f"bad writer schema: {exc}") from None
        schema = self.avro_schema
        if not (isinstance(schema, dict) and schema.get("type") in ("record", "error")):
            raise UnsupportedType(path, "header", f"the writer schema is {_describe(schema)}, "
                                                  "not a record: a row needs named fields")
        # Top-level fields with no Arrow column type, passed through for the JSON encoder.
        self._wrap: bytes | None = None
        self._json_columns: dict[str, bytes] = {}
        decoder_schema: Any = schema
        decoder_meta = dict(meta)
        try:
            wrapped = _json_fields(schema)
            if wrapped:
                fields = schema["fields"]
                self._wrap = bytes(int(k in wrapped) for k in range(len(fields)))
                self._split_program = compile_avro_schema(schema)
                self._decompress = _decompressor(self.codec)
                programs = compile_json_programs(schema, wrapped)
                self._json_programs = tuple(programs.get(k) for k in range(len(fields)))
                self._json_columns = {fields[k]["name"]: prog for k, prog in programs.items()}
                decoder_schema = _decoder_schema(schema, wrapped)
                decoder_meta["avro.codec"] = b"null"  # blocks are decompressed to be rewrapped
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFile(path, "header", f"bad writer schema: {exc}") from None
        self._decoder_header = self._header
        # polars-avro turns uuid strings into 16 raw bytes; as plain strings (the same binary
        # encoding) they stay the text the writer wrote.
        decoder_schema = _without_uuid(decoder_schema)
        if decoder_schema != schema or decoder_meta != meta:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, fastavro.read.HEADER_SCHEMA, {  # type: ignore[arg-type]
                "magic": MAGIC, "sync": self._sync,
                "meta": dict(decoder_meta, **{"avro.schema": json.dumps(decoder_schema).encode()})})
            self._decoder_header = buf.getvalue()
        try:
            self._schema = self._decode(b"", AvroPosition(self._header_end)).schema
        except CorruptFile as exc:  # no data yet: it is the schema the decoder refuses
            raise UnsupportedType(path, "header", exc.reason) from None

    @property
    def path(self) -> str:
        return self._file.path

    @property
    def total_rows(self) -> None:
        return None

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def header(self) -> bytes:
        """The file's header bytes (magic, metadata, sync marker) as they are in the file."""
        return self._header

    @property
    def sync_marker(self) -> bytes:
        return self._sync

    @property
    def first_block(self) -> AvroPosition:
        return AvroPosition(self._header_end)

    def blocks(self, start: Position | None = None) -> Iterator[tuple[AvroPosition, int, int]]:
        """(position, record count, size in bytes) of every block from `start`, checked but not
        decompressed."""
        offset = self._start(start)
        while offset < self._file.size:
            count, length = self._block_at(offset)
            yield AvroPosition(offset), count, length
            offset += length

    def units(self, start: Position | None = None,
              max_rows: int = DEFAULT_MAX_ROWS) -> Iterator[Unit]:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        size = self._file.size
        offset = self._start(start)
        pending: tuple[int, bytes] | None = None  # a block read but left for the next unit
        while offset < size:
            unit_start = offset
            rows = 0
            parts: list[tuple[int, bytes]] = []
            nbytes = 0
            while offset < size:
                if pending is None:
                    pending = self._read_block(offset)
                count, data = pending
                if parts and rows and (rows + count > max_rows
                                       or nbytes + len(data) > self._max_unit_bytes):
                    break
                pending = None
                parts.append((offset, data))
                rows += count
                nbytes += len(data)
                offset += len(data)
            if rows == 0:
                continue  # only empty blocks: nothing to send, the next unit starts later
            raw = b"".join(data for _, data in parts)
            yield Unit(
                start=AvroPosition(unit_start),
                end=AvroPosition(offset) if offset < size else None,
                rows=rows,
                nbytes=nbytes,
                avro_blocks=raw,
                decode=functools.partial(self._decode_blocks, parts, raw, rows),
            )

    def _start(self, start: Position | None) -> int:
        if start is None:
            return self._header_end
        if not isinstance(start, AvroPosition):
            raise BadPosition(self.path, start, "not an Avro position (expected block:OFFSET)")
        if start.record:
            raise BadPosition(self.path, start, "units start on a block; read from "
                                                f"block:{start.block_offset} and pass over "
                                                f"{start.record} record(s)")
        offset = start.block_offset
        if offset < self._header_end or offset > self._file.size:
            raise BadPosition(self.path, start, f"blocks lie between byte {self._header_end} "
                                                f"and {self._file.size}")
        if offset < self._file.size:
            try:
                self._block_at(offset)
            except SyncMarkerMismatch:
                raise BadPosition(self.path, start, "no block starts at this offset") from None
        return offset

    def _block_at(self, offset: int) -> tuple[int, int]:
        """Record count and total length (head, data, sync) of the block at `offset`, its sync
        marker checked."""
        count, head_len, data_len = self._block_head(offset)
        sync_at = offset + head_len + data_len
        self._check_sync(offset, sync_at, self._file.read_at(sync_at, SYNC_SIZE))
        return count, head_len + data_len + SYNC_SIZE

    def _read_block(self, offset: int) -> tuple[int, bytes]:
        """Record count and bytes (head, data, sync) of the block at `offset`, in one read."""
        count, head_len, data_len = self._block_head(offset)
        data = self._file.read_at(offset, head_len + data_len + SYNC_SIZE)
        self._check_sync(offset, offset + head_len + data_len, data[-SYNC_SIZE:])
        return count, data

    def _block_head(self, offset: int) -> tuple[int, int, int]:
        head = self._file.read_at(offset, BLOCK_HEAD_MAX)
        where = AvroPosition(offset)
        try:
            count, p, data_len = read_block_head(head)
        except IndexError:
            raise TruncatedFile(self.path, where, "the file ends inside a block header") from None
        except ValueError as exc:
            raise CorruptFile(self.path, where, f"bad block header: {exc}") from None
        end = offset + p + data_len + SYNC_SIZE
        if end > self._file.size:
            raise TruncatedFile(self.path, where, f"block of {data_len} bytes ends at byte "
                                                  f"{end}, the file at {self._file.size}")
        return count, p, data_len

    def _check_sync(self, offset: int, sync_at: int, sync: bytes) -> None:
        if sync != self._sync:
            raise SyncMarkerMismatch(self.path, AvroPosition(offset),
                                     f"bytes {sync_at}-{sync_at + SYNC_SIZE} are not the "
                                     "file's sync marker")

    def _decode_blocks(self, parts: list[tuple[int, bytes]], raw: bytes,
                       rows: int) -> pa.RecordBatch:
        try:
            batch = self._decode(raw, AvroPosition(parts[0][0]))
        except CorruptFile:
            if len(parts) == 1:
                raise
            for offset, data in parts:  # name the block that does not decode
                self._decode(data, AvroPosition(offset))
            raise
        if batch.num_rows != rows:
            raise CorruptFile(self.path, AvroPosition(parts[0][0]),
                              f"decoded {batch.num_rows} records, block headers say {rows}")
        return batch

    def _rewrap(self, raw: bytes, where: AvroPosition) -> bytes:
        """The unit's blocks, decompressed, with the fields the JSON encoder writes from their
        Avro encoding framed as `bytes` (see the module docstring)."""
        assert self._wrap is not None
        out = bytearray()
        view = memoryview(raw)
        for pos, count, lo, hi in iter_blocks(view):  # blocks the reader has checked
            block = AvroPosition(where.block_offset + pos)
            try:
                data = self._decompress(bytes(view[lo:hi]))
            except Exception as exc:
                raise CorruptFile(self.path, block, f"cannot decompress ({self.codec}): "
                                                    f"{exc}") from None
            try:
                wrapped = _rows.wrap_avro_fields(self._split_program, data, count, self._wrap,
                                                 self._json_programs)
            except ValueError as exc:
                raise CorruptFile(self.path, block, self._record_error(exc)) from None
            out += encode_zigzag(count) + encode_zigzag(len(wrapped)) + wrapped + self._sync
        return bytes(out)

    def _record_error(self, exc: ValueError) -> str:
        if len(exc.args) != 3:
            return f"cannot decode: {exc}"
        reason, record, field = exc.args
        if field < 0:
            return f"cannot decode: {reason}"
        name = self.avro_schema["fields"][field]["name"]
        return f"cannot decode record {record} of the block, field {name!r}: {reason}"

    def _decode(self, raw: bytes, where: AvroPosition) -> pa.RecordBatch:
        import polars_avro

        if self._wrap is not None and raw:
            raw = self._rewrap(raw, where)
        try:
            df = polars_avro.read_avro(io.BytesIO(self._decoder_header + raw),
                                      batch_size=1 << 20)
            table = df.to_arrow()
        except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
            raise
        except BaseException as exc:  # the decoder reports bad data as Rust panics too
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CorruptFile(self.path, where, f"cannot decode: {reason}") from None
        if self._json_columns:
            table = table.replace_schema_metadata(None).cast(pa.schema([
                f.with_metadata({AVRO_JSON_KEY: self._json_columns[f.name]})
                if f.name in self._json_columns else f for f in table.schema]))
        if table.num_rows == 0:
            return pa.RecordBatch.from_pylist([], schema=table.schema)
        batches = table.combine_chunks().to_batches()
        return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


def _without_uuid(schema: Any) -> Any:
    """`schema` with the uuid logical type dropped from strings."""
    if isinstance(schema, list):
        return [_without_uuid(b) for b in schema]
    if isinstance(schema, dict):
        if schema.get("logicalType") == "uuid" and schema.get("type") == "string":
            return "string"
        return {k: _without_uuid(v) if k in ("type", "items", "values", "fields") else v
                for k, v in schema.items()}
    return schema


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return f"a union {json.dumps(schema)[:200]}"
    if isinstance(schema, dict):
        return f"a {schema.get('type')}"
    return f"{schema!r}"


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = ("record", "error", "enum", "fixed")


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _json_fields(record: dict[str, Any]) -> list[int]:
    """Indices of the top-level fields whose type has no Arrow column type: a reference to a
    record that contains it (recursion), a union of several non-null types, or `duration`."""
    name = _full_name(record["name"], record.get("namespace"))
    verdict: dict[str, bool] = {}
    open_records = {name}
    inner_ns = name.rpartition(".")[0] or None
    out = [k for k, f in enumerate(record.get("fields", []))
           if _needs_json(f["type"], inner_ns, verdict, open_records)]
    return out


def _needs_json(s: Any, ns: str | None, verdict: dict[str, bool], open_records: set[str]) -> bool:
    """Whether `s` needs to be passed through as Avro; records the named types it defines."""
    if isinstance(s, str):
        if s in _PRIMITIVES:
            return False
        key = s if s in verdict or s in open_records else _full_name(s, ns)
        if key in open_records:
            return True  # a record that contains itself
        return verdict.get(key, False)
    if isinstance(s, list):
        found = [_needs_json(b, ns, verdict, open_records) for b in s]  # all: they define names
        return any(found) or sum(1 for b in s if b != "null") > 1
    if not isinstance(s, dict):
        return False
    kind = s.get("type")
    if kind in _NAMED:
        name = _full_name(s["name"], s.get("namespace", ns))
        if kind == "record" or kind == "error":
            open_records.add(name)
            inner = name.rpartition(".")[0] or None
            found = [_needs_json(f["type"], inner, verdict, open_records)
                     for f in s.get("fields", [])]
            open_records.discard(name)
            verdict[name] = any(found)
        else:
            verdict[name] = kind == "fixed" and s.get("logicalType") == "duration"
        return verdict[name]
    if kind == "array":
        return _needs_json(s.get("items"), ns, verdict, open_records)
    if kind == "map":
        return _needs_json(s.get("values"), ns, verdict, open_records)
    return _needs_json(kind, ns, verdict, open_records)


def _decoder_schema(record: dict[str, Any], wrapped: list[int]) -> dict[str, Any]:
    """The schema polars-avro decodes with: `wrapped` fields are `bytes`; a named type defined
    inside one of them and used by a later field is defined again where it is first used."""
    definitions: dict[str, Any] = {}
    _collect(record, None, definitions)
    name = _full_name(record["name"], record.get("namespace"))
    inner_ns = name.rpartition(".")[0] or None
    defined = {name}
    fields = []
    for k, f in enumerate(record.get("fields", [])):
        if k in wrapped:
            fields.append({key: v for key, v in f.items() if key != "default"} | {"type": "bytes"})
        else:
            fields.append(dict(f, type=_inline(f["type"], inner_ns, defined, definitions)))
    return dict(record, fields=fields)


def _collect(s: Any, ns: str | None, out: dict[str, Any]) -> None:
    """Every named type defined in `s`, by full name, with its name made full."""
    if isinstance(s, list):
        for b in s:
            _collect(b, ns, out)
    elif isinstance(s, dict):
        kind = s.get("type")
        if kind in _NAMED:
            name = _full_name(s["name"], s.get("namespace", ns))
            out[name] = {k: v for k, v in s.items() if k != "namespace"} | {"name": name}
            inner = name.rpartition(".")[0] or None
            for f in s.get("fields", []):
                _collect(f["type"], inner, out)
        elif kind == "array":
            _collect(s.get("items"), ns, out)
        elif kind == "map":
            _collect(s.get("values"), ns, out)
        elif isinstance(kind, dict | list):
            _collect(kind, ns, out)


def _inline(s: Any, ns: str | None, defined: set[str], definitions: dict[str, Any]) -> Any:
    if isinstance(s, str):
        if s in _PRIMITIVES:
            return s
        key = s if s in definitions else _full_name(s, ns)
        if key in defined or key not in definitions:
            return s
        return _inline(definitions[key], ns, defined, definitions)
    if isinstance(s, list):
        return [_inline(b, ns, defined, definitions) for b in s]
    if not isinstance(s, dict):
        return s
    kind = s.get("type")
    if kind in _NAMED:
        name = _full_name(s["name"], s.get("namespace", ns))
        defined.add(name)
        if kind in ("record", "error"):
            inner = name.rpartition(".")[0] or None
            return dict(s, fields=[dict(f, type=_inline(f["type"], inner, defined, definitions))
                                   for f in s.get("fields", [])])
        return s
    if kind == "array":
        return dict(s, items=_inline(s.get("items"), ns, defined, definitions))
    if kind == "map":
        return dict(s, values=_inline(s.get("values"), ns, defined, definitions))
    if isinstance(kind, dict | list):
        return dict(s, type=_inline(kind, ns, defined, definitions))
    return s
