"""Every error the data path raises has the kind its retry decision needs: a file that will not
get better is permanent, something away for now is transient, a daemon that cannot go on is
fatal (hdfswatch.errors)."""

from __future__ import annotations

import pytest

from hdfsread.base import FileChanged, FileMoved, FileVanished, ReadFailed
from hdfswatch.errors import (
    AccessControlError,
    CallTimeoutError,
    ConfigError,
    ConnectionLostError,
    FatalError,
    FileNotFound,
    NameNodeUnavailableError,
    PermanentError,
    TransientError,
    remote_error,
)
from pipeline.encoders.avro import AvroSchemaError
from pipeline.encoders.errors import EncodeError
from pipeline.encoders.keys import KeyColumnError
from pipeline.encoders.registry import SchemaRegistryError
from pipeline.readers import BadPosition, CorruptFile, EmptyFile, UnsupportedType

PERMANENT = [
    FileVanished("/f", "gone"), FileChanged("/f", "longer"), FileMoved("/f", "moved", 3),
    CorruptFile("/f", None, "bad"), EmptyFile("/f", None, "zero bytes"),
    UnsupportedType("/f", None, "x"), BadPosition("/f", None, "x"),
    EncodeError("x"), KeyColumnError("x"), AvroSchemaError("x"),
    SchemaRegistryError("incompatible", status=409), SchemaRegistryError("bad", status=422),
    remote_error("java.io.FileNotFoundException", "no"),
    remote_error("org.apache.hadoop.security.AccessControlException", "denied"),
]
TRANSIENT = [
    ReadFailed("/f", "reset"), ConnectionLostError("lost"), CallTimeoutError("slow"),
    NameNodeUnavailableError("none"), SchemaRegistryError("down", status=503),
    SchemaRegistryError("not reachable"),
    remote_error("org.apache.hadoop.ipc.StandbyException", "standby"),
    remote_error("org.apache.hadoop.ipc.RetriableException", "later"),
]
FATAL = [ConfigError("bad address"), remote_error("org.apache.hadoop.ipc.RPC$VersionMismatch", "v")]


def _kinds(exc: BaseException) -> set[str]:
    return {k.__name__ for k in (PermanentError, TransientError, FatalError) if isinstance(exc, k)}


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_permanent(exc: Exception) -> None:
    assert _kinds(exc) == {"PermanentError"}


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient(exc: Exception) -> None:
    assert _kinds(exc) == {"TransientError"}


@pytest.mark.parametrize("exc", FATAL, ids=lambda e: type(e).__name__)
def test_fatal(exc: Exception) -> None:
    assert _kinds(exc) == {"FatalError"}


def test_kinds_keep_what_callers_already_catch() -> None:
    assert isinstance(remote_error("java.io.FileNotFoundException", "no"), FileNotFound)
    assert isinstance(remote_error("org.apache.hadoop.security.AccessControlException", "x"),
                      AccessControlError)
    refused = SchemaRegistryError("incompatible", status=409, error_code=409)
    assert isinstance(refused, SchemaRegistryError) and refused.status == 409
    assert isinstance(KeyColumnError("x"), ValueError)
