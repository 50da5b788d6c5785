"""What every file reader stands on: a file of known size read at any offset, the errors a remote
file can raise, and the rules both HDFS backends share.

`RandomAccessFile` is the interface the Parquet and Avro readers need (a path, a size and
`read_at`); `LocalFile` implements it over a local file (tests, `cat file:...`), and
`RemoteFile` is the part of an HDFS file that does not depend on how bytes travel:

- read-ahead: columnar readers ask for many small ranges (footers, page headers, block
  headers), so a small read fetches a whole window and the last few windows serve the next
  small reads; a large read (pyarrow coalesces a row group's column chunks into a few big
  ranges with `pre_buffer`) goes straight through, uncached. One read per row group, whatever
  the backend.
- identity: the file opened is checked against what the detector announced (`expected_size`,
  `expected_file_id`): another length or inode is `FileChanged`, a path that names nothing (or
  another file while the expected inode still exists) is `FileVanished` (`FileMoved`).
- retries: a transient failure (a connection, a DataNode, a standby NameNode) is retried with
  backoff, and reported as `ReadFailed` (transient) when it keeps failing; a failure that may
  mean the file changed is checked against a fresh stat first.

A backend says how to stat a path (`_stat`), how to read bytes (`_read`) and what its
exceptions mean (`_failure`). `FileIO` adapts any `RandomAccessFile` to the seekable file object
pyarrow and fastavro read from. Every call blocks: run it in a worker thread.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from hdfswatch.backoff import Backoff
from hdfswatch.errors import AccessError, KerberosCredentialsError, PermanentError, TransientError
from hdfswatch.listing import inode_path

DEFAULT_READ_AHEAD = 4 * 1024 * 1024
DEFAULT_CACHE_WINDOWS = 4
_BACKOFF_CAP = 5.0  # seconds between two attempts of one read, at most

__all__ = ["inode_path"]


class RangedReadError(Exception):
    """Base of the errors raised while reading a remote file by ranges. Each subclass has a kind
    (hdfswatch.errors): a file gone or changed is permanent, a read that kept failing transient."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class FileVanished(RangedReadError, PermanentError):
    """The file is gone (deleted, or renamed away and not known to exist) since it was opened.
    Nothing to retry."""


class FileMoved(FileVanished):
    """The path no longer names the file, but the file itself (its inode) still exists: it was
    renamed. `file_id` says which file to look for; reading it from its new path goes on where
    it stopped, since a rename changes nothing in the file."""

    def __init__(self, path: str, reason: str, file_id: int) -> None:
        super().__init__(path, reason)
        self.file_id = file_id


class FileChanged(RangedReadError, PermanentError):
    """The file is not the one that was announced: its length or inode id changed under us.

    Positions recorded for the old content mean nothing for the new one; the file must be
    treated as a new file (or quarantined), not resumed.
    """


class ReadFailed(RangedReadError, TransientError):
    """A read kept failing after all retries (network, DataNode or NameNode trouble): it may
    work later."""


class ReadRefused(RangedReadError, AccessError):
    """HDFS refused who this client is (no Kerberos where it is wanted, a principal or user
    without permission): retried, since a ticket or a permission granted later heals it."""


class ReadCredentialsError(RangedReadError, KerberosCredentialsError):
    """No usable Kerberos ticket to read with (none, expired, the KDC away, a clock too far
    off): retryable, as for the NameNode's IPC."""


class UnsupportedFile(RangedReadError, PermanentError):
    """A file this client cannot read (an encryption zone, an erasure-coding policy it does not
    know): quarantined, no retry changes it."""


@runtime_checkable
class RandomAccessFile(Protocol):
    """A file of known size that can be read at any offset."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Return `length` bytes from `offset` (fewer only at end of file)."""
        ...

    def close(self) -> None: ...


class LocalFile:
    """A local file as a `RandomAccessFile` (tests, `hdfs2kafka cat file:///...`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        try:
            self._fd = os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileVanished(self._path, "no such file") from None
        self._size = os.fstat(self._fd).st_size

    @property
    def path(self) -> str:
        return self._path

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        check_range(self._path, offset, length)
        return os.pread(self._fd, min(length, max(0, self._size - offset)), offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LocalFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Stat:
    """What a backend's stat says about a path: enough to tell whether it is the file opened."""

    kind: str  # "FILE", "DIRECTORY", "SYMLINK"
    length: int
    file_id: int | None


@dataclass(frozen=True)
class Failure:
    """What a backend makes of an exception: the file is missing, or the call may be retried
    (`retry`), or it failed for good (neither: `ReadFailed` at once)."""

    message: str
    missing: bool = False
    retry: bool = False
    answered: bool = False
    """HDFS answered and refused the read (not a connection lost): a changed file is likely,
    stat it before trying again."""


class RemoteFile:
    """One HDFS file read by byte ranges: the windows, the identity checks and the retries.

    Opening stats the file and checks it against `expected_size` and `expected_file_id`
    (`FileChanged` when they differ; `FileMoved` when the path names another file and the
    expected inode still exists). `requests` counts the reads sent to HDFS.
    """

    backend = "remote"

    def __init__(self, path: str, expected_size: int | None = None,
                 expected_file_id: int | None = None, *,
                 read_ahead: int = DEFAULT_READ_AHEAD,
                 cache_windows: int = DEFAULT_CACHE_WINDOWS,
                 retries: int = 5, backoff: float = 0.2) -> None:
        self._path = path
        self._read_ahead = max(0, read_ahead)
        self._cache_windows = max(1, cache_windows)
        self._retries = retries
        self._backoff = backoff
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.requests = 0  # reads sent to HDFS; tests and benchmarks look at it
        self._file_id: int | None = None
        self._size = 0
        status = self._retrying("stat", lambda: self._stat(path))
        if status is None:
            raise self._vanished("no such file in HDFS", expected_file_id)
        if status.kind != "FILE":
            raise self._vanished(f"not a file (type {status.kind})", expected_file_id)
        self._size = status.length
        self._file_id = status.file_id
        if (expected_file_id is not None and self._file_id is not None
                and expected_file_id != self._file_id):
            # The name belongs to another file now: the one expected was renamed away (it is
            # still there) or replaced (it is gone).
            gone = self._vanished(f"the path names another file now (fileId {self._file_id})",
                                  expected_file_id)
            if isinstance(gone, FileMoved):
                raise gone
            raise FileChanged(path, f"fileId is {self._file_id}, expected {expected_file_id} "
                                    "(the file was replaced)")
        if expected_size is not None and expected_size != self._size:
            raise FileChanged(path, f"length is {self._size} bytes, expected {expected_size}")

    # ------------------------------------------------------------------ backend hooks

    def _stat(self, path: str) -> Stat | None:
        """The path's status, None when nothing is there."""
        raise NotImplementedError

    def _read(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` of the file opened, in one request."""
        raise NotImplementedError

    def _failure(self, exc: Exception) -> Failure | None:
        """What `exc` means here; None: not the backend's, raise it as it is."""
        return None

    def _reset(self) -> None:
        """Called before a read is tried again after a transient failure."""

    # ------------------------------------------------------------------ the file

    @property
    def path(self) -> str:
        return self._path

    @property
    def size(self) -> int:
        return self._size

    @property
    def file_id(self) -> int | None:
        return self._file_id

    def read_at(self, offset: int, length: int) -> bytes:
        check_range(self._path, offset, length)
        length = min(length, max(0, self._size - offset))
        if length == 0:
            return b""
        with self._lock:
            hit = self._from_cache(offset, length)
            if hit is not None:
                return hit
            if length >= self._read_ahead:
                return self._fetch(offset, length)
            window_len = min(self._read_ahead, self._size - offset)
            window = self._fetch(offset, window_len)
            self._cache[offset] = window
            while len(self._cache) > self._cache_windows:
                self._cache.popitem(last=False)
            return window[:length]

    def verify(self) -> None:
        """Stat the file again: raise `FileVanished` or `FileChanged` if it is not as opened.

        Call before marking a file done, so that a file rewritten with the same length while it
        was read is not recorded as streamed.
        """
        status = self._retrying("stat", lambda: self._stat(self._path))
        if status is None:
            raise self._vanished("deleted while it was being read", self._file_id)
        self._check_status(status)

    def close(self) -> None:
        with self._lock:
            self._cache.clear()

    def __enter__(self) -> RemoteFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ inside

    def _from_cache(self, offset: int, length: int) -> bytes | None:
        for start, data in reversed(self._cache.items()):
            if start <= offset and offset + length <= start + len(data):
                self._cache.move_to_end(start)
                return data[offset - start:offset - start + length]
        return None

    def _fetch(self, offset: int, length: int) -> bytes:
        def once() -> bytes:
            self.requests += 1
            return self._read(offset, length)

        try:
            data = self._retrying(f"read {length} bytes at offset {offset}", once,
                                  check_file=True)
        except ReadFailed:
            # "Offset out of range" and the like: say so if the file changed under us.
            self.verify()
            raise
        if len(data) != length:
            # Within the size we were told: the file is shorter than when we opened it.
            self.verify()
            raise FileChanged(self._path, f"read {len(data)} of {length} bytes at offset "
                                          f"{offset}: the file changed while it was read")
        return data

    def _check_status(self, status: Stat) -> None:
        if status.length != self._size:
            raise FileChanged(self._path, f"length changed from {self._size} to {status.length} "
                                          "bytes while it was read")
        if (status.file_id is not None and self._file_id is not None
                and status.file_id != self._file_id):
            gone = self._vanished(f"the path names another file now (fileId {status.file_id})",
                                  self._file_id)
            if isinstance(gone, FileMoved):
                raise gone
            raise FileChanged(self._path, f"fileId changed from {self._file_id} to "
                                          f"{status.file_id}: the file was replaced while it "
                                          "was read")

    def _vanished(self, reason: str, file_id: int | None) -> FileVanished:
        """`FileMoved` if inode `file_id` is still a file (renamed away), else `FileVanished`."""
        if file_id is not None:
            status = self._retrying(f"stat inode {file_id}",
                                    lambda: self._stat(inode_path(file_id)), by_inode=True)
            if (status is not None and status.kind == "FILE"
                    and (status.file_id is None or status.file_id == file_id)):
                return FileMoved(self._path, f"{reason}: the file was moved (its inode {file_id} "
                                             "is still there)", file_id)
        return FileVanished(self._path, reason)

    def _retrying(self, what: str, call: Callable[[], Any], check_file: bool = False,
                  by_inode: bool = False) -> Any:
        backoff = Backoff(self._backoff, max(self._backoff, _BACKOFF_CAP))
        for attempt in range(self._retries + 1):
            try:
                return call()
            except ReadRefused:
                if check_file:
                    # WebHDFS refuses an offset past the end (HTTP 403) as it refuses a user:
                    # a file that changed says so first.
                    self.verify()
                raise
            except RangedReadError:
                raise  # already says what it is
            except Exception as exc:
                failure = self._failure(exc)
                if failure is None:
                    raise
                if failure.missing:
                    if by_inode:
                        return None
                    raise self._vanished(f"{what}: {failure.message}", self._file_id) from None
                if not failure.retry:
                    raise ReadFailed(self._path, f"{what}: {failure.message}") from exc
                if attempt == self._retries:
                    raise ReadFailed(self._path, f"{what}: {failure.message} (after "
                                                 f"{attempt + 1} attempts)") from exc
                if check_file and failure.answered:
                    # A read refused by HDFS is often a file that changed: find out now
                    # rather than after every retry.
                    self.verify()
            time.sleep(backoff.next_delay())
            if check_file:
                self._reset()
        raise AssertionError("unreachable")


def own_keytab(keytab: str | None) -> str | None:
    """`keytab`, unless the process's Kerberos defaults already log in from it
    ($KRB5_CLIENT_KTNAME, as the daemon sets it: pipeline.kerberos_login): then None, and a
    client takes the default credentials, so every connection shares one login and one
    ticket cache instead of keeping a cache of its own."""
    if not keytab:
        return None
    default = os.environ.get("KRB5_CLIENT_KTNAME", "")
    return None if default in (keytab, f"FILE:{keytab}") else keytab


def check_range(path: str, offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"{path}: bad range offset={offset} length={length}")


def first_line(text: str) -> str:
    """The first line of a server's message (Java errors carry their stack trace after it)."""
    text = (text or "").strip()
    return text.splitlines()[0].strip() if text else ""


class FileIO(io.RawIOBase):
    """A seekable, read-only file object over a `RandomAccessFile`, for pyarrow and fastavro.

    Wrap it in `pyarrow.PythonFile(FileIO(f), mode="r")` for pyarrow. Closing it does not close
    the underlying file.
    """

    def __init__(self, file: RandomAccessFile) -> None:
        super().__init__()
        self._file = file
        self._pos = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._file.path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._file.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._file.size - self._pos)
        data = self._file.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def size(self) -> int:
        return self._file.size
