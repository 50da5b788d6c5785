"""A small client of Toxiproxy's HTTP API (v2): proxies and the toxics that degrade them.

Toxiproxy is a TCP proxy whose connections can be slowed, cut, stalled or throttled while they
are open ("toxics"). The fault-injection tests put one in front of each server the daemon talks
to. PyPI's clients for it are unmaintained, and the API is a handful of JSON calls, so this
speaks it with `requests` (already a dependency of the `hdfs` package the daemon reads with).

A toxic acts on one direction of every connection of its proxy, those open and those to come:
`downstream` is server -> client, `upstream` client -> server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

BOTH = ("upstream", "downstream")


class ToxiproxyError(Exception):
    """Toxiproxy refused a call (unknown proxy or toxic, a port in use)."""


class Toxiproxy:
    """The API of one Toxiproxy server, e.g. `Toxiproxy("http://127.0.0.1:8474")`."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = self.session.request(method, f"{self.url}{path}", json=body, timeout=10)
        if resp.status_code >= 300:
            raise ToxiproxyError(f"{method} {path}: {resp.status_code} {resp.text.strip()}")
        return resp.json() if resp.content else None

    def version(self) -> str:
        return str(self.session.get(f"{self.url}/version", timeout=2).text.strip())

    def create(self, name: str, listen: str, upstream: str) -> Proxy:
        """A proxy listening on `listen` ("127.0.0.1:PORT") that forwards to `upstream`."""
        self.call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                       "enabled": True})
        return Proxy(self, name, listen, upstream)

    def reset(self) -> None:
        """Every proxy enabled again and every toxic removed: the network healed."""
        self.call("POST", "/reset")


@dataclass
class Proxy:
    api: Toxiproxy
    name: str
    listen: str
    upstream: str

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    # ---- whole proxy

    def disable(self) -> None:
        """Close every connection and refuse new ones (the server looks down)."""
        self.api.call("POST", f"/proxies/{self.name}", {"enabled": False})

    def enable(self) -> None:
        self.api.call("POST", f"/proxies/{self.name}", {"enabled": True})

    # ---- toxics

    def add(self, kind: str, *, stream: str = "downstream", toxicity: float = 1.0,
            name: str | None = None, **attributes: int) -> str:
        """Add a toxic of `kind` to one direction; returns its name (for `remove`)."""
        name = name or f"{kind}_{stream}"
        self.api.call("POST", f"/proxies/{self.name}/toxics",
                      {"name": name, "type": kind, "stream": stream, "toxicity": toxicity,
                       "attributes": attributes})
        return name

    def add_both(self, kind: str, **attributes: int) -> list[str]:
        return [self.add(kind, stream=s, **attributes) for s in BOTH]

    def remove(self, *names: str) -> None:
        for name in names:
            self.api.call("DELETE", f"/proxies/{self.name}/toxics/{name}")

    def toxics(self) -> list[str]:
        return [t["name"] for t in self.api.call("GET", f"/proxies/{self.name}/toxics")]

    def clear(self) -> None:
        self.remove(*self.toxics())

    def latency(self, ms: int, jitter: int = 0) -> list[str]:
        """Every chunk of data, both ways, held `ms` (± jitter) before it is passed on."""
        return self.add_both("latency", latency=ms, jitter=jitter)

    def bandwidth(self, kb_per_s: int) -> list[str]:
        """Both directions throttled to `kb_per_s` KB/s."""
        return self.add_both("bandwidth", rate=kb_per_s)

    def reset_peer(self, after_ms: int = 0) -> list[str]:
        """Connections reset (TCP RST) `after_ms` after data arrives; new ones too."""
        return [self.add("reset_peer", stream="upstream", timeout=after_ms)]

    def blackhole(self, close_after_ms: int = 0) -> list[str]:
        """No data gets through either way; with `close_after_ms` > 0 the connection is then
        closed, with 0 it stays open and silent until the toxic is removed."""
        return self.add_both("timeout", timeout=close_after_ms)

    def slow_close(self, delay_ms: int) -> list[str]:
        """A connection the server closes stays open `delay_ms` longer on the client's side."""
        return [self.add("slow_close", stream="downstream", delay=delay_ms)]

    def limit_data(self, nbytes: int) -> list[str]:
        """Each connection closed once `nbytes` went downstream through it."""
        return [self.add("limit_data", stream="downstream", bytes=nbytes)]
