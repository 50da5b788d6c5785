"""Moved: the byte layer is the `hdfsread` package now (`hdfsread.base`, `hdfsread.webhdfs`,
`hdfsread.native`). These names stay importable from here for code not yet moved over."""

from hdfsread.base import (  # noqa: F401
    DEFAULT_CACHE_WINDOWS,
    DEFAULT_READ_AHEAD,
    FileChanged,
    FileIO,
    FileMoved,
    FileVanished,
    LocalFile,
    RandomAccessFile,
    RangedReadError,
    ReadFailed,
    inode_path,
)
from hdfsread.webhdfs import (  # noqa: F401
    SpnegoUnavailable,
    UntrustedCertificate,
    WebHdfsCredentialsError,
    WebHdfsFile,
    WebHdfsPrincipalError,
    WebHdfsRefused,
    aopen_webhdfs,
    webhdfs_client,
)
