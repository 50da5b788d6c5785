"""Talking to a running daemon's HTTP surface from the command line."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the daemon's HTTP address (default: from --config, "
                                      "else $HDFS2KAFKA_URL, else http://127.0.0.1:9464)")
    parser.add_argument("--config", "-c", metavar="FILE", help="take the address and token from this config")
    parser.add_argument("--token", help="admin bearer token (default: from --config or $HDFS2KAFKA_TOKEN)")


def _target(args: argparse.Namespace) -> tuple[str, str | None, ssl.SSLContext | None]:
    url, token = args.url, args.token
    context = None
    if args.config:
        from pipeline import config as config_mod

        # Outside the service a token kept as a systemd credential cannot be read: then it
        # comes from --token or $HDFS2KAFKA_TOKEN.
        cfg = config_mod.load(args.config, unread_credentials=True)
        scheme = "https" if cfg.daemon.http_tls_cert else "http"
        url = url or f"{scheme}://{cfg.daemon.http}"
        unread = any(n.startswith("daemon.admin_token:") for n in cfg.notes)
        if cfg.daemon.admin_token and not unread:
            token = token or cfg.daemon.admin_token.reveal()
        if cfg.daemon.http_tls_cert:
            # The system's CAs, and the daemon's own certificate (a self-signed one trusts itself).
            context = ssl.create_default_context()
            context.load_verify_locations(cfg.daemon.http_tls_cert)
    url = url or os.environ.get("HDFS2KAFKA_URL") or "http://127.0.0.1:9464"
    token = token or os.environ.get("HDFS2KAFKA_TOKEN")
    if not url.startswith("http"):
        url = f"http://{url}"
    return url.rstrip("/"), token, context


def call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(HTTP status, the answer's document or error); status 0 when the daemon cannot be asked."""
    from pipeline.config import ConfigError

    try:
        url, token, context = _target(args)
    except ConfigError as exc:
        return 0, str(exc)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip()
        try:
            doc = json.loads(text)
        except ValueError:
            return exc.code, text
        return exc.code, doc.get("error", text) if isinstance(doc, dict) else text
    except OSError as exc:
        return 0, f"cannot reach the daemon at {url}: {exc}"
