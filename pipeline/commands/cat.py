"""`hdfs2kafka cat`: print the records a file would produce, one JSON line each, with the
position each one is read from, so that an operator can see what a source will send.

Positions are the ones the ledger records and `--from` accepts: `rg:GROUP/ROW` is the exact row
of a Parquet file; for Avro, `block:OFFSET` is the block the record is in and `record` its index
in that block (a block is the smallest place reading can resume from).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson
import pyarrow as pa

from pipeline.commands.common import Connection, add_connection_arguments, connection_from

NAME = "cat"
HELP = "print the records a Parquet or Avro file would produce, one JSON line each"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH",
                        help="HDFS path of the file (file:PATH for a local file)")
    parser.add_argument("--format", dest="value_format", choices=("json", "avro"), default="json",
                        help="value encoding, as a source with this value format would send it "
                             "(avro: the record's Avro binary, base64, without the Confluent "
                             "framing)")
    parser.add_argument("--input-format", choices=("auto", "parquet", "avro"), default="auto",
                        help="file format (default: detected from the magic bytes)")
    parser.add_argument("--from", dest="start", metavar="POSITION",
                        help="start here: rg:GROUP/ROW (Parquet) or block:OFFSET (Avro)")
    parser.add_argument("--limit", type=int, metavar="N", help="stop after N records")
    parser.add_argument("--key", metavar="COLUMN", action="append", default=[],
                        help="column(s) whose values make the record key; repeat for several")
    parser.add_argument("--config", metavar="FILE",
                        help="daemon config (TOML) to take [hdfs] and [kafka] settings from")
    parser.add_argument("--reader", choices=("native", "webhdfs"),
                        help="how to read the file: native (HDFS's RPC and data transfer, "
                             "hdfs-native) or webhdfs (default: the config's [hdfs] reader, "
                             "else native)")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from hdfsread.base import LocalFile, RandomAccessFile, RangedReadError
    from hdfsread.stack import ReadStack, open_read_stack
    from hdfswatch.errors import HdfsWatchError, TransientError
    from pipeline import logs
    from pipeline.config import ConfigError
    from pipeline.positions import PositionError, parse_position
    from pipeline.readers import ReadError, open_reader
    from pipeline.secret import scrub

    logs.configure("warning", "console")  # stdout carries the records only

    try:
        start = parse_position(args.start) if args.start else None
    except PositionError as exc:
        print(f"cat: {exc}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 0:
        print("cat: --limit must be 0 or more", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    file: RandomAccessFile | None = None
    stack: ReadStack | None = None
    try:
        if args.path.startswith("file:"):
            file = LocalFile(args.path.removeprefix("file://").removeprefix("file:"))
        else:
            try:
                conn = _connection(args)
            except ConfigError as exc:
                print(f"cat: {exc}", file=sys.stderr)
                return 2
            reader_name = args.reader or _config_reader(args) or "native"
            try:
                stack = open_read_stack(_read_settings(conn, reader_name))
            except (ConfigError, HdfsWatchError) as exc:
                print(f"cat: {exc}" + (' (eval "$(deploy/devstack/devstack env)")'
                                       if "needs" in str(exc) else ""), file=sys.stderr)
                # A ticket missing now is not a usage error: as a failed read.
                return 1 if isinstance(exc, TransientError) else 2
            file = stack.open(args.path)
        reader = open_reader(file, args.input_format)
        missing = [k for k in args.key if k not in reader.schema.names]
        if missing:
            print(f"cat: {reader.path} has no column {', '.join(missing)}", file=sys.stderr)
            return 2
        encode = _value_encoder(args.value_format, reader)
        written, next_pos = _write_records(out, reader, start, args.limit, args.key, encode,
                                           args.value_format == "json")
        out.flush()
        print(orjson.dumps({"event": "cat.done", "path": args.path, "format": reader.format,
                            "records": written,
                            "next": str(next_pos) if next_pos else None}).decode(),
              file=sys.stderr)
        return 0
    except (ReadError, RangedReadError, HdfsWatchError) as exc:
        print(f"cat: {scrub(str(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `hdfs2kafka cat ... | head`: the reader went away, which is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # Not one of ours (a library's connection error names its whole URL): masked too.
        print(f"cat: {scrub(str(exc))}", file=sys.stderr)
        return 1
    finally:
        if file is not None:
            file.close()
        if stack is not None:
            stack.close()


def _write_records(out: BinaryIO, reader: Any, start: Any, limit: int | None,
                   key_columns: list[str], encode: Callable[[Any], list[bytes]], as_json: bool,
                   ) -> tuple[int, Any]:
    """Write the JSON lines; return how many and the position to continue from."""
    from pipeline.positions import ParquetPosition

    written = 0
    if limit == 0:
        return 0, start
    # Units of one block (Avro never splits a block) so every record knows its block.
    max_rows = 1 if reader.format == "avro" else 4096
    for unit in reader.units(start, max_rows=max_rows):
        take = unit.rows if limit is None else min(unit.rows, limit - written)
        values = encode(unit)[:take]
        keys = _keys(unit.batch.slice(0, take), key_columns)
        lines = []
        for i, value in enumerate(values):
            if isinstance(unit.start, ParquetPosition):
                pos = ParquetPosition(unit.start.row_group, unit.start.row_offset + i)
                line: dict[str, Any] = {"position": str(pos)}
            else:
                line = {"position": str(unit.start), "record": i}
            line["key"] = keys[i] if keys is not None else None
            line["value"] = orjson.Fragment(value) if as_json else base64.b64encode(value).decode()
            lines.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        out.write(b"".join(lines))
        written += len(values)
        if limit is not None and written >= limit:
            if take < unit.rows:
                # Parquet resumes at the next row; Avro at the start of the block that was cut.
                if isinstance(unit.start, ParquetPosition):
                    return written, ParquetPosition(unit.start.row_group,
                                                    unit.start.row_offset + take)
                return written, unit.start
            return written, unit.end
    return written, None


def _keys(batch: pa.RecordBatch, columns: list[str]) -> list[str | None] | None:
    """The Kafka keys a source keyed on `columns` would send, as text."""
    from pipeline.encoders.keys import KeyEncoder

    keys = KeyEncoder(columns).encode(batch)
    if keys is None:
        return None
    return [k.decode("utf-8", "replace") if k is not None else None for k in keys]


def _value_encoder(value_format: str, reader: Any) -> Callable[[Any], list[bytes]]:
    """The values a source with this value format would send, per unit. Avro values lose
    their 5-byte Confluent framing here: `cat` registers no schema."""
    from pipeline.encoders import JsonEncoder
    from pipeline.encoders.avro import AvroBlockEncoder, AvroEncoder, arrow_to_avro_schema

    if value_format == "json":
        rows = JsonEncoder(None)
        return lambda unit: rows.encode(unit.batch)
    if reader.format == "avro":
        blocks = AvroBlockEncoder(0, reader.avro_schema, reader.codec)
        return lambda unit: [v[5:] for v in blocks.encode(unit.avro_blocks)]
    encoder = AvroEncoder(0, arrow_to_avro_schema(reader.schema, "Row"))
    return lambda unit: [v[5:] for v in encoder.encode(unit.batch)]


def _config_reader(args: argparse.Namespace) -> str | None:
    if not args.config:
        return None
    from pipeline import config as config_mod

    hdfs, _ = config_mod.load_connection(args.config)
    return hdfs.reader


def _read_settings(conn: Connection, reader: str) -> Any:
    """The daemon's read stack, built from the command's connection. With Kerberos and a keytab,
    the process's tickets come from it first (hdfs-native takes the default credentials)."""
    from hdfsread.stack import ReadSettings

    security = conn.rpc_security()
    if security.kerberos and reader == "native":
        from pipeline.config import KerberosConfig
        from pipeline.kerberos_login import login

        login(KerberosConfig(principal=conn.principal, keytab=conn.keytab))
    elif reader == "native" and conn.hdfs_user:
        from hdfsread.native import use_hdfs_user

        use_hdfs_user(conn.hdfs_user)  # before any thread: hdfs-native reads it per connection
    return ReadSettings(reader=reader, user=conn.hdfs_user, namenodes=conn.namenodes,
                        hadoop_conf_dir=conn.hadoop_conf_dir, security=security,
                        webhdfs_url=conn.webhdfs_url, ca_file=conn.ca_file,
                        keytab=conn.keytab)


def _connection(args: argparse.Namespace) -> Connection:
    """Flags first, then `--config FILE` (read by the daemon's own loader, so `cat` reads with
    the settings the daemon would use), then the environment."""
    if not args.config:
        return connection_from(args)
    from pipeline import config as config_mod

    hdfs, kafka = config_mod.load_connection(args.config)
    kerberos = config_mod.load_kerberos(args.config)
    env = connection_from(argparse.Namespace())
    protection = tuple(p.strip() for p in (hdfs.rpc_protection or "").split(",") if p.strip())
    return dataclasses.replace(
        env,
        namenodes=tuple(args.namenode or hdfs.namenodes or env.namenodes),
        webhdfs_url=args.webhdfs or hdfs.webhdfs or env.webhdfs_url,
        hdfs_user=args.user or hdfs.user or env.hdfs_user,
        kafka_bootstrap=args.bootstrap or kafka.bootstrap or env.kafka_bootstrap,
        hadoop_conf_dir=hdfs.hadoop_conf_dir or env.hadoop_conf_dir,
        ca_file=hdfs.ca_file or env.ca_file,
        principal=kerberos.principal or env.principal,
        keytab=kerberos.keytab or env.keytab,
        authentication=hdfs.authentication,
        rpc_protection=protection or None,
        namenode_principal=hdfs.namenode_principal,
    )
