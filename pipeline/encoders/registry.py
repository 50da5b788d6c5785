"""A client for the Confluent Schema Registry REST API (also served by Apicurio Registry under
/apis/ccompat/v7, by Karapace and by Redpanda): register a value schema under a subject, get a
schema by id.

Only what the Avro value format needs. Registration is idempotent on the registry's side (the
same schema under the same subject gets the same id) and cached here, so it is called once per
source and schema, not per batch. Errors name the subject or id and carry the registry's own
message and error code.

One client for two kinds of caller. The daemon registers a schema where a file is opened, in a
worker thread, so requests are plain blocking HTTP (`register_blocking`, `schema_blocking`);
asynchronous code (a consumer decoding values, the demo) awaits the same requests run in a
thread (`register`, `get_by_id`).

An https registry is verified with `ca_file` when given (the daemon passes `ssl.ca.location` of
[kafka], the stack's CA), else with the system's CAs.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from hdfswatch.errors import PermanentError, TransientError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
CONFLICT_RETRIES = 2
CONFLICT_RETRY_S = 0.2


class SchemaRegistryError(Exception):
    """The registry refused a request or could not be reached.

    Raising it gives the subclass of the right kind (hdfswatch.errors): `SchemaRegistryRefused`
    (permanent) for an HTTP 4xx answer, such as a schema the subject's compatibility rules
    reject; `SchemaRegistryUnavailable` (transient) for a 5xx answer, no answer or a bad one.
    """

    def __new__(cls, message: str, *, status: int | None = None,
                error_code: int | None = None) -> SchemaRegistryError:
        if cls is SchemaRegistryError:
            refused = status is not None and 400 <= status < 500
            cls = SchemaRegistryRefused if refused else SchemaRegistryUnavailable
        return super().__new__(cls, message)

    def __init__(self, message: str, *, status: int | None = None,
                 error_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class SchemaRegistryRefused(SchemaRegistryError, PermanentError):
    """The registry answered 4xx: asking again will get the same answer."""


class SchemaRegistryUnavailable(SchemaRegistryError, TransientError):
    """The registry answered 5xx, did not answer, or answered something that is not an answer:
    it may do better later."""


class SchemaRegistryClient:
    """The registry at `url`. It holds no connection (each request is one HTTP exchange), only
    the ids and schemas it has seen; `async with` and `close()` are there for callers that
    treat it as a resource."""

    def __init__(self, url: str, *, timeout: float = 10.0, ca_file: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.ca_file = ca_file
        self._tls: ssl.SSLContext | None = None
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Any] = {}
        self._locks_lock = threading.Lock()
        self._subject_locks: dict[str, threading.Lock] = {}  # one registration a subject at a time

    async def __aenter__(self) -> SchemaRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release; kept so that the client can be used as a resource."""

    async def register(self, subject: str, schema: dict[str, Any] | str,
                       schema_type: str = "AVRO") -> int:
        """`register_blocking` from async code."""
        return await asyncio.to_thread(self.register_blocking, subject, schema, schema_type)

    async def get_by_id(self, schema_id: int) -> Any:
        """`schema_blocking` from async code."""
        if schema_id in self._schemas:
            return self._schemas[schema_id]
        return await asyncio.to_thread(self.schema_blocking, schema_id)

    def register_blocking(self, subject: str, schema: dict[str, Any] | str,
                          schema_type: str = "AVRO") -> int:
        """Register `schema` under `subject` (a no-op when it is there already) and return its
        id. Refused when the subject's compatibility rules reject it."""
        text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
        cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        # Two workers opening the first two files of a new topic would otherwise both create
        # its subject, and a registry may refuse the second creation (Apicurio: HTTP 409,
        # "already exists"). The second one waits here and finds the id cached.
        with self._locks_lock:
            lock = self._subject_locks.setdefault(subject, threading.Lock())
        with lock:
            cached = self._ids.get((subject, text))
            if cached is not None:
                return cached
            return self._register(subject, text, schema_type)

    def _register(self, subject: str, text: str, schema_type: str) -> int:
        what = f"registering a schema under subject {subject!r}"
        body: dict[str, Any] = {"schema": text}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        path = f"/subjects/{quote(subject, safe='')}/versions"
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                reply = self._request("POST", path, body, what=what)
                break
            except SchemaRegistryRefused as exc:
                # 409 is both "incompatible with the subject's schemas" (asked again: the same
                # answer) and, from some registries, "created meanwhile by another client" (asked
                # again: the id). Asked again a moment later, only the first stays refused.
                if exc.status != 409 or attempt == CONFLICT_RETRIES:
                    raise
                time.sleep(CONFLICT_RETRY_S * (attempt + 1))
        try:
            schema_id = int(reply["id"])
        except (KeyError, TypeError, ValueError):
            raise SchemaRegistryError(
                f"{what}: the registry answered {reply!r}, with no schema id") from None
        self._ids[(subject, text)] = schema_id
        self._schemas.setdefault(schema_id, json.loads(text) if schema_type == "AVRO" else text)
        return schema_id

    def schema_blocking(self, schema_id: int) -> Any:
        """The schema with this id (parsed JSON for Avro schemas)."""
        if schema_id in self._schemas:
            return self._schemas[schema_id]
        what = f"getting schema id {schema_id}"
        reply = self._request("GET", f"/schemas/ids/{int(schema_id)}", None, what=what)
        text = reply.get("schema") if isinstance(reply, dict) else None
        if not isinstance(text, str):
            raise SchemaRegistryError(f"{what}: no schema in {reply!r}")
        kind = reply.get("schemaType", "AVRO")
        schema = json.loads(text) if kind == "AVRO" else text
        self._schemas[schema_id] = schema
        return schema

    def _request(self, method: str, path: str, body: Any, *, what: str) -> Any:
        headers = {"Accept": CONTENT_TYPE}
        data = None
        if body is not None:
            headers["Content-Type"] = CONTENT_TYPE
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self._tls_context()) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                reply = json.loads(raw) if raw else {}
            except ValueError:
                reply = {"message": raw[:300].decode("utf-8", "replace")}
            message = reply.get("message") if isinstance(reply, dict) else None
            code = reply.get("error_code") if isinstance(reply, dict) else None
            raise SchemaRegistryError(
                f"{what}: the registry at {self.url} answered HTTP {exc.code}"
                + (f" (error {code})" if code is not None else "")
                + f": {message or reply or exc.reason}",
                status=exc.code, error_code=code,
            ) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            verify = getattr(exc, "reason", exc)
            if isinstance(verify, ssl.SSLCertVerificationError):
                trust = f"the CA file {self.ca_file}" if self.ca_file else "the system's CAs"
                raise SchemaRegistryError(
                    f"{what}: the certificate of the registry at {self.url} is not trusted "
                    f"({verify.verify_message}; checked with {trust}): set kafka "
                    "ssl.ca.location to the PEM of the CA that signed it") from None
            raise SchemaRegistryError(
                f"{what}: Schema Registry at {self.url} not reachable ({exc.__class__.__name__}: "
                f"{exc})"
            ) from exc
        try:
            return json.loads(raw) if raw else {}
        except ValueError as exc:
            raise SchemaRegistryError(
                f"{what}: the registry at {self.url} answered something other than JSON: "
                f"{raw[:300].decode('utf-8', 'replace')!r}") from exc


    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        if self._tls is None:
            # Built once: loading a CA file for every request would cost more than the request.
            self._tls = ssl.create_default_context(cafile=self.ca_file)
        return self._tls


def register_blocking(url: str, subject: str, schema: dict[str, Any] | str,
                      timeout: float = 10.0, ca_file: str | None = None) -> int:
    """Register `schema` under `subject` at the registry at `url` and return its id, from code
    running in a worker thread (opening a file and building its encoders). One client per
    registry and CA file serves every file: its TLS context is built once and a schema
    registered once."""
    return _client(url, timeout, ca_file).register_blocking(subject, schema)


@functools.lru_cache(maxsize=16)
def _client(url: str, timeout: float, ca_file: str | None) -> SchemaRegistryClient:
    return SchemaRegistryClient(url, timeout=timeout, ca_file=ca_file)
