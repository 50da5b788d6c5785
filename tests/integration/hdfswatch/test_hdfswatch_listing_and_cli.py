"""The listing detector, the non-superuser path, and `hdfs2kafka watch`, on the shared stack."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from hdfswatch_support import ROOT, Namespace

from hdfswatch.errors import NotSuperuserError
from hdfswatch.listing import ListingDetector
from hdfswatch.namenode import NameNodeClient
from hdfswatch.tailer import EditTailer


async def test_listing_finds_complete_files_page_by_page(nn, ns: Namespace, webhdfs, unique):
    base = f"/tests/hdfswatch/{unique}"
    # More than one getListing page (dfs.ls.limit = 1000) in one directory.
    names = [f"{base}/many/f-{i:04d}.avro" for i in range(1005)]
    for chunk in range(0, len(names), 100):
        await asyncio.gather(*(ns.touch(p) for p in names[chunk:chunk + 100]))
    await asyncio.to_thread(webhdfs.write, f"{base}/t/dt=2024-01-01/part-0.parquet", b"p")
    for ignored in (f"{base}/t/_SUCCESS", f"{base}/t/.part-0.parquet.crc",
                    f"{base}/t/x.parquet._COPYING_", f"{base}/t/_temporary/0/part-9.parquet"):
        await asyncio.to_thread(webhdfs.write, ignored, b"i")
    await ns.create_open(f"{base}/t/dt=2024-01-01/still-writing.parquet")

    listing = ListingDetector(nn, [f"{base}/many/*.avro", f"{base}/t"])
    found = [r async for r in listing.scan()]
    assert sorted(r.path for r in found) == sorted(
        [*names, f"{base}/t/dt=2024-01-01/part-0.parquet"])
    assert len({r.file_id for r in found}) == len(found)
    assert {r.reason for r in found} == {"listing"}

    # A second scan yields only what is new or changed.
    assert [r async for r in listing.scan()] == []
    await asyncio.to_thread(webhdfs.write, f"{base}/many/f-0000.avro", b"more", append=True)
    await ns.complete(f"{base}/t/dt=2024-01-01/still-writing.parquet")
    again = [r async for r in listing.scan()]
    assert sorted(r.path for r in again) == [
        f"{base}/many/f-0000.avro", f"{base}/t/dt=2024-01-01/still-writing.parquet"]

    # With the caller's own knowledge (the daemon's ledger), the detector keeps none.
    known = {r.file_id for r in found}
    fresh = ListingDetector(nn, [f"{base}/**"])
    unknown = [r async for r in fresh.scan(lambda status: status.file_id in known)]
    assert [r.path for r in unknown] == [f"{base}/t/dt=2024-01-01/still-writing.parquet"]


async def test_a_non_superuser_is_told_what_is_missing_and_what_to_use(stack, webhdfs, unique):
    base = f"/tests/hdfswatch/{unique}"
    await asyncio.to_thread(webhdfs.write, f"{base}/visible.parquet", b"v")
    async with NameNodeClient([stack.namenode], "hdfswatch-not-a-superuser",
                              retry_for=10) as client:
        with pytest.raises(NotSuperuserError) as err:
            await client.get_edits_from_txid(1)
        message = str(err.value)
        assert "superuser privilege" in message
        assert "hdfswatch-not-a-superuser" in message
        assert "ListingDetector" in message
        assert err.value.exception_class == "org.apache.hadoop.security.AccessControlException"

        with pytest.raises(NotSuperuserError):
            await anext(EditTailer(client))

        # The way out works for that user.
        found = [r async for r in ListingDetector(client, [f"{base}/*.parquet"]).scan()]
        assert [r.path for r in found] == [f"{base}/visible.parquet"]
        assert found[0].txid is None  # no edit-stream anchor without the privilege


def _watch(stack, *args: str) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, **stack.env()}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "watch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)


async def test_watch_command_prints_ready_files_as_json_lines(stack, webhdfs, unique):
    base = f"/tests/hdfswatch/{unique}"
    proc = _watch(stack, "--namenode", stack.namenode, "--path", f"{base}/**", "--count", "1",
                  "--duration", "60")
    try:
        assert proc.stdout is not None
        first = json.loads(await asyncio.to_thread(proc.stdout.readline))
        assert first["event"] == "watching" and first["from_txid"] > 0
        await asyncio.to_thread(webhdfs.write, f"{base}/a.parquet._COPYING_", b"abc")
        await asyncio.to_thread(webhdfs.rename, f"{base}/a.parquet._COPYING_",
                                f"{base}/a.parquet")
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["event"], x["path"], x["size"], x["reason"]) for x in lines] == [
        ("ready", f"{base}/a.parquet", 3, "rename")]


async def test_watch_command_takes_its_connection_from_the_environment(stack):
    proc = _watch(stack, "--path", "/tests/hdfswatch/none/**", "--user", "hdfswatch-nobody",
                  "--duration", "30")
    out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 3
    assert out == ""
    assert "superuser privilege" in err and "--listing" in err
