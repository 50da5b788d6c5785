"""Types of the compiled row walker (_rows.c)."""

from typing import Any

def json_rows(
    schema_capsule: Any, array_capsule: Any, ts_mode: int, decimal_as_number: int,
    int64_as_string: int, mode: int, pins: list[bytes] | None = None, /,
) -> list[bytes | None]: ...
def avro_rows(
    schema_capsule: Any, array_capsule: Any, prefix: bytes, pins: list[bytes] | None = None, /,
) -> list[bytes]: ...
def split_avro_block(
    program: bytes, block: bytes | memoryview, count: int, prefix: bytes, /,
) -> list[bytes]: ...
def wrap_avro_fields(
    program: bytes, block: bytes | memoryview, count: int, wrap: bytes,
    programs: tuple[bytes | None, ...], /,
) -> bytes: ...
