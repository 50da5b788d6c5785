"""NameNode error replies as typed exceptions that say what to do."""

from __future__ import annotations

import pytest

from hdfswatch.errors import (
    AccessControlError,
    FileNotFound,
    HdfsWatchError,
    NotSuperuserError,
    RemoteError,
    RetriableRemoteError,
    SafeModeError,
    StandbyError,
    UnknownRemoteError,
    remote_error,
)


@pytest.mark.parametrize(("java_class", "expected"), [
    ("org.apache.hadoop.ipc.StandbyException", StandbyError),
    ("org.apache.hadoop.ipc.RetriableException", RetriableRemoteError),
    ("org.apache.hadoop.hdfs.server.namenode.SafeModeException", SafeModeError),
    ("org.apache.hadoop.security.AccessControlException", AccessControlError),
    ("java.io.FileNotFoundException", FileNotFound),
    ("org.apache.hadoop.fs.SomethingNew", UnknownRemoteError),
])
def test_exception_classes_map_to_types(java_class, expected):
    err = remote_error(java_class, "message\n\tat stack...", method="getFileInfo")
    assert type(err) is expected
    assert isinstance(err, RemoteError) and isinstance(err, HdfsWatchError)
    assert (err.exception_class, err.method) == (java_class, "getFileInfo")
    assert "stack" not in str(err)


def test_missing_superuser_privilege_names_the_privilege_and_the_way_out():
    err = remote_error("org.apache.hadoop.security.AccessControlException",
                       "Access denied for user etl. Superuser privilege is required for "
                       "operation getEditsFromTxid", method="getEditsFromTxid", user="etl")
    assert isinstance(err, NotSuperuserError) and isinstance(err, AccessControlError)
    text = str(err)
    assert "superuser privilege" in text and "'etl'" in text
    assert "dfs.permissions.superusergroup" in text
    assert "ListingDetector" in text and "--listing" in text


def test_other_permission_errors_stay_plain():
    err = remote_error("org.apache.hadoop.security.AccessControlException",
                       "Permission denied: user=etl, access=READ_EXECUTE", method="getListing")
    assert type(err) is AccessControlError
