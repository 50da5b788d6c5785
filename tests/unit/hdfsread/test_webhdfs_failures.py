"""What the WebHDFS backend makes of HTTP answers, against a stand-in WebHDFS served on the
loopback: a failed DataNode connection says where without the redirect's query (where the
delegation token travels); a 403 refuses only who we are, any other 403 is retried; a 401
asking for Kerberos of a client configured without it is a configuration error."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hdfsread.base import ReadFailed, ReadRefused
from hdfsread.webhdfs import WebHdfsAuthMismatch, WebHdfsFile, WebHdfsRefused
from hdfswatch.errors import AccessError, FatalError, TransientError

TOKEN = "SECRETtokenQQ0123456789"
DATA = bytes(range(256)) * 40


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Answer = Callable[[str, dict[str, str]], tuple[int, dict[str, str], bytes]]


@pytest.fixture
def webhdfs() -> Iterator[Callable[[Answer], str]]:
    """Serve a stand-in WebHDFS whose OPEN answers as the test says; GETFILESTATUS is a file
    of len(DATA) bytes. Returns its URL."""
    servers: list[ThreadingHTTPServer] = []

    def serve(open_answer: Answer) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if query.get("op") == "GETFILESTATUS":
                    status, headers, body = 200, {}, json.dumps({"FileStatus": {
                        "type": "FILE", "length": len(DATA), "fileId": 7}}).encode()
                else:
                    status, headers, body = open_answer(parts.path, query)
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _remote(status: int, exception: str, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {}, json.dumps({"RemoteException": {
        "exception": exception, "javaClassName": f"x.{exception}", "message": message}}).encode()


def test_a_datanode_that_cannot_be_reached_is_named_without_the_token(webhdfs) -> None:
    port = _closed_port()
    url = webhdfs(lambda path, query: (307, {"Location": (
        f"http://127.0.0.1:{port}{path}?op=OPEN&delegation={TOKEN}"
        "&namenoderpcaddress=nn:8020&offset=0")}, b""))
    f = WebHdfsFile(url, "/data/f.bin", user="alice", retries=1, backoff=0.001)
    with pytest.raises(ReadFailed) as info:
        f.read_at(0, 100)
    text = str(info.value)
    assert TOKEN not in text and "delegation" not in text, text
    assert f"http://127.0.0.1:{port}/webhdfs/v1/.reserved/.inodes/7" in text, text
    assert "connection refused" in text.lower() and len(text.splitlines()) == 1, text
    assert TOKEN not in repr(info.value.args)


@pytest.mark.parametrize("exception", ["AccessControlException", "AuthorizationException",
                                       "SecurityException", "InvalidToken"])
def test_a_403_that_refuses_who_we_are_is_refused(webhdfs, exception: str) -> None:
    url = webhdfs(lambda path, query: _remote(403, exception, "Permission denied: user=alice"))
    f = WebHdfsFile(url, "/data/f.bin", user="alice", retries=3, backoff=0.001)
    with pytest.raises(WebHdfsRefused) as info:
        f.read_at(0, 100)
    assert isinstance(info.value, ReadRefused) and isinstance(info.value, AccessError)
    assert "Permission denied: user=alice" in str(info.value)


@pytest.mark.parametrize("exception", ["IOException", "BlockMissingException"])
def test_any_other_403_is_an_io_error_retried_then_transient(webhdfs, exception: str) -> None:
    answers = iter([_remote(403, exception, "Could not obtain block"), None])

    def answer(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        got = next(answers, None)
        if got is not None:
            return got
        offset, length = int(query["offset"]), int(query["length"])
        return 200, {"Content-Type": "application/octet-stream"}, DATA[offset:offset + length]

    url = webhdfs(answer)
    f = WebHdfsFile(url, "/data/f.bin", user="alice", retries=3, backoff=0.001, read_ahead=0)
    assert f.read_at(10, 100) == DATA[10:110]  # the second try reads it

    url = webhdfs(lambda path, query: _remote(403, exception, "Could not obtain block"))
    f = WebHdfsFile(url, "/data/f.bin", user="alice", retries=2, backoff=0.001)
    with pytest.raises(ReadFailed) as info:
        f.read_at(0, 100)
    assert not isinstance(info.value, ReadRefused) and isinstance(info.value, TransientError)
    assert "3 attempts" in str(info.value) and exception in str(info.value)


def test_a_401_wanting_kerberos_of_a_simple_client_is_a_configuration_error(webhdfs) -> None:
    url = webhdfs(lambda path, query: (401, {"WWW-Authenticate": "Negotiate"}, b""))
    f = WebHdfsFile(url, "/data/f.bin", user="alice", retries=3, backoff=0.001)
    with pytest.raises(WebHdfsAuthMismatch) as info:
        f.read_at(0, 100)
    assert isinstance(info.value, FatalError) and not isinstance(info.value, TransientError)
    assert "wants Kerberos (SPNEGO)" in str(info.value)
