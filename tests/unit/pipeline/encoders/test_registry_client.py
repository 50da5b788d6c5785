"""The registry client the daemon's workers use when they open a file: a schema registered for
one file is not registered again for the next (one client per registry and CA file, built
once, against a stand-in registry on the loopback)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipeline.encoders.registry import register_blocking


@pytest.fixture
def registry() -> Iterator[tuple[str, list[str]]]:
    posts: list[str] = []

    class Registry(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(self.path)
            body = json.dumps({"id": 42}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", posts
    server.shutdown()
    server.server_close()


def test_a_schema_is_registered_once_for_many_files(registry: tuple[str, list[str]]) -> None:
    url, posts = registry
    schema = {"type": "record", "name": "R", "fields": [{"name": "id", "type": "long"}]}
    ids = [register_blocking(url, "rows-value", schema) for _ in range(20)]
    assert ids == [42] * 20
    assert posts == ["/subjects/rows-value/versions"]
    other = {**schema, "name": "S"}
    assert register_blocking(url, "rows-value", other) == 42
    assert len(posts) == 2
