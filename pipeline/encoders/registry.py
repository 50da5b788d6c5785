"""A client for the Confluent Schema Registry REST API (also served by Apicurio Registry under
/apis/ccompat/v7, by Karapace and by Redpanda): register a value schema under a subject, get a
schema by id.

Only what the Avro value format needs. Registration is idempotent on the registry's side (the
same schema under the same subject gets the same id) and cached here, so it is called once per
source and schema, not per batch. Errors name the subject or id and carry the registry's own
message and error code.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

import aiohttp

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryError(Exception):
    """The registry refused a request or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None,
                 error_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class SchemaRegistryClient:
    """Async client; one per daemon (it holds an HTTP connection pool). Use `async with` or
    call `close()`."""

    def __init__(self, url: str, *, timeout: float = 10.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Any] = {}

    async def __aenter__(self) -> SchemaRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def register(self, subject: str, schema: dict[str, Any] | str,
                       schema_type: str = "AVRO") -> int:
        """Register `schema` under `subject` (a no-op when it is there already) and return its
        id. Refused when the subject's compatibility rules reject it."""
        text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
        cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        body: dict[str, Any] = {"schema": text}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        reply = await self._request(
            "POST", f"/subjects/{quote(subject, safe='')}/versions", body,
            what=f"registering a schema under subject {subject!r}",
        )
        try:
            schema_id = int(reply["id"])
        except (KeyError, TypeError, ValueError):
            raise SchemaRegistryError(
                f"registering a schema under subject {subject!r}: the registry answered "
                f"{reply!r}, with no schema id"
            ) from None
        self._ids[(subject, text)] = schema_id
        self._schemas.setdefault(schema_id, json.loads(text) if schema_type == "AVRO" else text)
        return schema_id

    async def get_by_id(self, schema_id: int) -> Any:
        """The schema with this id (parsed JSON for Avro schemas)."""
        if schema_id in self._schemas:
            return self._schemas[schema_id]
        reply = await self._request("GET", f"/schemas/ids/{int(schema_id)}", None,
                                    what=f"getting schema id {schema_id}")
        text = reply.get("schema")
        if not isinstance(text, str):
            raise SchemaRegistryError(f"getting schema id {schema_id}: no schema in {reply!r}")
        kind = reply.get("schemaType", "AVRO")
        schema = json.loads(text) if kind == "AVRO" else text
        self._schemas[schema_id] = schema
        return schema

    async def _request(self, method: str, path: str, body: Any, *, what: str) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._own_session = True
        headers = {"Accept": CONTENT_TYPE}
        data = None
        if body is not None:
            headers["Content-Type"] = CONTENT_TYPE
            data = json.dumps(body)
        url = self.url + path
        try:
            async with self._session.request(method, url, data=data, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SchemaRegistryError(
                f"{what}: Schema Registry at {self.url} not reachable ({exc.__class__.__name__}: "
                f"{exc})"
            ) from exc
        try:
            reply = json.loads(raw) if raw else {}
        except ValueError:
            reply = {"message": raw[:300].decode("utf-8", "replace")}
        if status >= 400:
            message = reply.get("message") if isinstance(reply, dict) else None
            code = reply.get("error_code") if isinstance(reply, dict) else None
            raise SchemaRegistryError(
                f"{what}: the registry at {self.url} answered HTTP {status}"
                + (f" (error {code})" if code is not None else "")
                + f": {message or reply}",
                status=status, error_code=code,
            )
        return reply


def register_blocking(url: str, subject: str, schema: dict[str, Any] | str,
                      timeout: float = 10.0) -> int:
    """`SchemaRegistryClient.register` for code running in a worker thread (opening a file and
    building its encoders): one plain HTTP request, same errors."""
    text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
    what = f"registering a schema under subject {subject!r}"
    base = url.rstrip("/")
    request = urllib.request.Request(
        f"{base}/subjects/{quote(subject, safe='')}/versions",
        data=json.dumps({"schema": text}).encode(), method="POST",
        headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            reply = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        code = body.get("error_code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        raise SchemaRegistryError(
            f"{what}: the registry at {base} answered HTTP {exc.code}"
            + (f" (error {code})" if code is not None else "") + f": {message or exc.reason}",
            status=exc.code, error_code=code,
        ) from None
    except (OSError, ValueError) as exc:
        raise SchemaRegistryError(
            f"{what}: Schema Registry at {base} not reachable ({exc.__class__.__name__}: {exc})"
        ) from exc
    try:
        return int(reply["id"])
    except (KeyError, TypeError, ValueError):
        raise SchemaRegistryError(f"{what}: the registry answered {reply!r}, with no schema id") from None
