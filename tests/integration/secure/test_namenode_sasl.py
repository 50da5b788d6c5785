"""The NameNode client on the Kerberized dev stack (`devstack up --secure`): SASL with GSSAPI
against a real KDC and a secure NameNode, the edit stream read with each QOP, and the one-line
errors of what an operator must fix (no ticket, a user without superuser rights, a client
still on SIMPLE, a principal the KDC does not know).

The stack's NameNode is asked to accept all three QOPs (hadoop.rpc.protection =
authentication,integrity,privacy), so that the client choosing each one is enough; that the
negotiated QOP is the one asked is checked on the connection.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hdfswatch.errors import (
    AuthMethodMismatch,
    FatalError,
    KerberosCredentialsError,
    NotSuperuserError,
    ServicePrincipalError,
    TransientError,
)
from hdfswatch.events import CloseEvent, CreateEvent
from hdfswatch.hadoop_conf import RpcSecurity, load_rpc_security
from hdfswatch.namenode import NameNodeClient
from tests.integration.hdfswatch.hdfswatch_support import Namespace


def client(security: RpcSecurity, **kwargs: object) -> NameNodeClient:
    return NameNodeClient([os.environ["HDFS_NAMENODE"]], security=security, retry_for=10,
                          **kwargs)  # type: ignore[arg-type]


def stack_security() -> RpcSecurity:
    return load_rpc_security(os.environ["HADOOP_CONF_DIR"])


@pytest.fixture
async def scratch(secure: dict[str, str]) -> AsyncIterator[str]:
    """A directory of this test's own in the secure HDFS, deleted afterwards."""
    path = f"/tmp/sasl-{uuid.uuid4().hex[:8]}"
    yield path
    async with client(stack_security()) as nn:
        await Namespace(nn).delete(path)


async def events_until_closed(nn: NameNodeClient, since: int, path: str
                              ) -> list[tuple[str, str]]:
    """(event kind, path) of the edit stream from `since` until `path` is closed."""
    seen: list[tuple[str, str]] = []
    txid = since
    for _ in range(100):
        reply = await nn.get_edits_from_txid(txid)
        for batch in reply.batches:
            for event in batch.events:
                if isinstance(event, CreateEvent | CloseEvent) and event.path.startswith(path):
                    seen.append((type(event).__name__, event.path))
        if ("CloseEvent", path) in seen:
            return seen
        txid = max(txid, reply.last_txid + 1)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no CLOSE of {path} in the edit stream; saw {seen}")


@pytest.mark.parametrize("protection", ["authentication", "integrity", "privacy"])
async def test_the_edit_stream_is_read_with_each_qop(secure, scratch, protection):
    security = stack_security().with_overrides(protection=(protection,))
    async with client(security) as nn:
        since = await nn.get_current_txid() + 1
        assert nn.protection == protection  # what was negotiated, not only what was asked
        assert nn.user == os.environ["HDFS2KAFKA_PRINCIPAL"]
        path = f"{scratch}/part-0.parquet"
        await Namespace(nn).touch(path)
        seen = await events_until_closed(nn, since, path)
        names = [entry.name async for entry in nn.list_dir(scratch)]
    assert ("CreateEvent", path) in seen and seen[-1] == ("CloseEvent", path)
    assert names == ["part-0.parquet"]


async def test_a_user_without_superuser_rights_is_told_the_edit_stream_needs_it(secure):
    keytab = Path(os.environ["HDFS2KAFKA_KEYTAB"]).with_name("analyst.keytab")
    realm = os.environ["HDFS2KAFKA_PRINCIPAL"].rsplit("@", 1)[1]
    security = stack_security().with_overrides(client_principal=f"analyst@{realm}",
                                               keytab=str(keytab))
    async with client(security) as nn:
        assert [e.name async for e in nn.list_dir("/")]  # the analyst may list
        with pytest.raises(NotSuperuserError) as err:
            await nn.get_edits_from_txid(1)
    text = str(err.value)
    assert "\n" not in text
    assert f"'analyst@{realm}'" in text and "superuser privilege is required" in text


async def test_without_a_ticket_the_error_says_kinit_and_a_ticket_later_heals_it(
        secure, tmp_path, monkeypatch):
    cache = tmp_path / "ccache"
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{cache}")
    monkeypatch.delenv("KRB5_CLIENT_KTNAME")  # else MIT krb5 logs in from it by itself
    async with client(stack_security()) as nn:
        with pytest.raises(KerberosCredentialsError) as err:
            await nn.get_current_txid()
        text = str(err.value)
        assert "no Kerberos ticket" in text and "run kinit or set the keytab" in text
        assert "\n" not in text and isinstance(err.value, TransientError)
        kinit = await asyncio.create_subprocess_exec(
            "kinit", "-kt", os.environ["HDFS2KAFKA_KEYTAB"], os.environ["HDFS2KAFKA_PRINCIPAL"])
        assert await kinit.wait() == 0
        assert await nn.get_current_txid() > 0  # the same client, once there is a ticket


async def test_a_client_still_on_simple_is_told_to_set_kerberos(secure):
    async with client(RpcSecurity()) as nn:
        with pytest.raises(AuthMethodMismatch) as err:
            await nn.get_current_txid()
    assert "hadoop.security.authentication=kerberos" in str(err.value)
    assert isinstance(err.value, FatalError)


async def test_a_namenode_principal_the_kdc_does_not_know_is_named(secure):
    # Right service and host, wrong realm: the KDC has no such principal.
    security = stack_security().with_overrides(namenode_principal="nn/_HOST@ELSEWHERE.TEST")
    async with client(security) as nn:
        with pytest.raises(ServicePrincipalError) as err:
            await nn.get_current_txid()
    assert "dfs.namenode.kerberos.principal" in str(err.value)
    assert isinstance(err.value, FatalError)
