"""Avro values that have no Arrow column type, carried to the JSON encoder as their own bytes.

Arrow has no type for a record that contains itself (a linked list, a tree), for an Avro union
of several non-null branches that polars can hold, or for Avro's `duration` (months, days,
milliseconds). The Avro reader passes such a field's value through as its Avro binary encoding,
in a binary column whose field metadata (`AVRO_JSON_KEY`) holds a program compiled here from
the writer schema; the compiled walker (`_rows.c`) writes the value's JSON from those bytes,
with the same mapping as every other column (json.py) and the same options.

Avro type -> JSON, inside such a field:

| Avro                                   | JSON                                                  |
| -------------------------------------- | ----------------------------------------------------- |
| null, boolean, int, string             | null, true/false, number, string                      |
| long                                   | number (`int64_as_string`: string)                    |
| float, double                          | number, shortest round-trip text; NaN and infinities  |
|                                        | as "NaN", "Infinity", "-Infinity"                     |
| bytes, fixed                           | string, standard base64 with padding                  |
| enum                                   | string, the symbol                                    |
| decimal (bytes or fixed)               | string with the scale: "-12.30" (`decimal_as_number`) |
| date                                   | "YYYY-MM-DD"                                          |
| time-millis, time-micros               | "HH:MM:SS.fffffffff" (nine digits, as the reader's    |
|                                        | Arrow columns give them elsewhere)                    |
| timestamp-* / local-timestamp-*        | ISO text with digits by unit, `Z` when not local      |
|                                        | (or an epoch count with the `timestamps` option)      |
| duration                               | ISO 8601 "P<months>M<days>DT<seconds>.<ms>S"          |
| uuid                                   | string                                                |
| record, array, map                     | object (fields in schema order), array, object        |
| union of null and one type             | null, or the value                                    |
| union of several non-null types        | null, or {"<branch>": value}: the branch's type name  |
|                                        | (`string`, `long`, `array`, `map`, a named type's     |
|                                        | full name), as Avro's own JSON encoding writes it     |

Why branch-wrapped: in a union such as ["string", "bytes"], ["int", "long"], [enum, "string"]
or two records with the same fields, the plain JSON value does not say which branch the writer
chose, so a consumer could not rebuild the Avro value (or even tell base64 from text). The
wrapper keeps it lossless, and it is the form Avro's JSON decoders read. A union of null and
one type stays plain, as it is for every nullable column.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from pipeline.encoders.errors import EncodeError

# Field metadata key of a binary column holding Avro-encoded values to write as JSON; the value
# is the program (see `compile_json_program`).
AVRO_JSON_KEY = b"hdfs2kafka.avro"

# Opcodes of the program read by _rows.c (avro_json). Words are int32; strings are (offset,
# length) into the string area after the words.
(J_NULL, J_BOOL, J_INT, J_LONG, J_FLOAT, J_DOUBLE, J_STRING, J_BYTES, J_FIXED, J_DEC_BYTES,
 J_DEC_FIXED, J_DATE, J_TIME, J_TS, J_DURATION, J_ENUM, J_RECORD, J_ARRAY, J_MAP,
 J_UNION) = range(20)

_PRIMITIVES = {"null": J_NULL, "boolean": J_BOOL, "int": J_INT, "long": J_LONG,
               "float": J_FLOAT, "double": J_DOUBLE, "bytes": J_BYTES, "string": J_STRING}
_TS_UNITS = {"millis": 1, "micros": 2, "nanos": 3}


class AvroJsonProgramError(EncodeError):
    """A writer schema the JSON program cannot be compiled from."""


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


class _Compiler:
    def __init__(self) -> None:
        self.nodes: list[list[Any]] = []  # words; ("ref", node) entries resolved at the end
        self.strings = bytearray()
        self.named: dict[str, int] = {}

    def text(self, raw: str) -> tuple[int, int]:
        data = raw.encode("utf-8")
        at = len(self.strings)
        self.strings += data
        return at, len(data)

    def emit(self, words: list[Any]) -> int:
        self.nodes.append(words)
        return len(self.nodes) - 1

    def node(self, s: Any, namespace: str | None) -> int:
        if isinstance(s, str):
            if s in _PRIMITIVES:
                return self.emit([_PRIMITIVES[s]])
            key = s if s in self.named else _full_name(s, namespace)
            if key not in self.named:
                raise AvroJsonProgramError(f"unknown Avro type name {s!r}")
            return self.named[key]
        if isinstance(s, list):
            return self.union(s, namespace)
        if not isinstance(s, dict):
            raise AvroJsonProgramError(f"bad Avro schema element {s!r}")
        kind = s.get("type")
        logical = s.get("logicalType")
        if kind in ("record", "error", "enum", "fixed"):
            ns = s.get("namespace", namespace)
            name = _full_name(s["name"], ns)
            if kind == "enum":
                words: list[Any] = [J_ENUM, len(s["symbols"])]
                for sym in s["symbols"]:
                    words += self.text(json.dumps(sym))
                self.named[name] = self.emit(words)
            elif kind == "fixed":
                size = int(s["size"])
                if logical == "decimal":
                    words = [J_DEC_FIXED, size, int(s.get("scale", 0))]
                elif logical == "duration" and size == 12:
                    words = [J_DURATION]
                else:
                    words = [J_FIXED, size]
                self.named[name] = self.emit(words)
            else:
                fields = s.get("fields", [])
                index = self.emit([J_RECORD, len(fields)] + [0, 0, 0] * len(fields))
                self.named[name] = index  # before the fields: a record may refer to itself
                inner_ns = name.rpartition(".")[0] or None
                for k, f in enumerate(fields):
                    at, n = self.text(json.dumps(f["name"]) + ":")
                    child = self.node(f["type"], inner_ns)
                    self.nodes[index][2 + 3 * k: 5 + 3 * k] = [at, n, ("ref", child)]
            return self.named[name]
        if kind == "array":
            index = self.emit([J_ARRAY, 0])
            self.nodes[index][1] = ("ref", self.node(s["items"], namespace))
            return index
        if kind == "map":
            index = self.emit([J_MAP, 0])
            self.nodes[index][1] = ("ref", self.node(s["values"], namespace))
            return index
        if isinstance(kind, dict | list):
            return self.node(kind, namespace)
        if kind == "bytes" and logical == "decimal":
            return self.emit([J_DEC_BYTES, int(s.get("scale", 0))])
        if kind == "int" and logical == "date":
            return self.emit([J_DATE])
        if kind == "int" and logical == "time-millis":
            return self.emit([J_TIME, 1])
        if kind == "long" and logical == "time-micros":
            return self.emit([J_TIME, 2])
        if kind == "long" and isinstance(logical, str) and logical.endswith(
                tuple(f"timestamp-{u}" for u in _TS_UNITS)):
            local = logical.startswith("local-")
            unit = _TS_UNITS[logical.rpartition("-")[2]]
            return self.emit([J_TS, unit, 0 if local else 1])
        return self.node(kind, namespace)  # other logical types read as their base type

    def union(self, branches: list[Any], namespace: str | None) -> int:
        wrap = int(sum(1 for b in branches if b != "null") > 1)
        index = self.emit([J_UNION, len(branches), wrap] + [0, 0, 0] * len(branches))
        for k, branch in enumerate(branches):
            child = self.node(branch, namespace)
            at, n = self.text("{" + json.dumps(_branch_name(branch, namespace)) + ":")
            self.nodes[index][3 + 3 * k: 6 + 3 * k] = [("ref", child), at, n]
        return index

    def program(self) -> tuple[bytes, list[int]]:
        offsets: list[int] = []
        position = 0
        for words in self.nodes:
            offsets.append(position)
            position += len(words)
        flat = [offsets[w[1]] if isinstance(w, tuple) else w for words in self.nodes for w in words]
        return struct.pack(f"<{len(flat)}i", *flat) + bytes(self.strings), offsets


def _branch_name(branch: Any, namespace: str | None) -> str:
    """The name Avro's JSON encoding gives a union branch."""
    if isinstance(branch, str):
        return branch if branch in _PRIMITIVES else _full_name(branch, namespace)
    if isinstance(branch, dict):
        kind = branch.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            return _full_name(branch["name"], branch.get("namespace", namespace))
        if isinstance(kind, str):
            return kind if kind in ("array", "map") or kind in _PRIMITIVES else _full_name(
                kind, namespace)
        return _branch_name(kind, namespace)
    raise AvroJsonProgramError(f"a union cannot hold a union directly: {branch!r}")


def compile_json_programs(record_schema: dict[str, Any],
                          fields: list[int]) -> dict[int, bytes]:
    """For each index in `fields` of the top-level `record_schema`, the metadata value that
    makes the walker write that field's Avro-encoded values as JSON: the root node's word
    offset, the number of words, the words, then the strings."""
    c = _Compiler()
    root = c.node(record_schema, None)
    prog, offsets = c.program()
    nwords = sum(len(w) for w in c.nodes)
    words = struct.unpack_from(f"<{nwords}i", prog)
    out: dict[int, bytes] = {}
    record = offsets[root]
    for k in fields:
        field_node = words[record + 2 + 3 * k + 2]
        out[k] = struct.pack("<ii", field_node, nwords) + prog
    return out
