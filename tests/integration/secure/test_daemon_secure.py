"""The daemon on the Kerberized dev stack: Parquet and Avro files from the secure HDFS (edit
stream over SASL, WebHDFS with SPNEGO over https) into the secure Kafka (SASL_SSL with
SCRAM-SHA-512 or GSSAPI, or mutual TLS with a client certificate; ACLs on), every row exactly
once and in file order, as a read_committed consumer over SASL_SSL sees it; through SIGKILLs at random moments; and the
one-line errors of what an operator must fix on the Kafka side (a wrong SCRAM password, an
untrusted or misnamed certificate, an unknown service principal, a missing ACL that is added
later), with the planted password nowhere in the daemon's log, /status or /metrics.

Topics and ledgers are named `secure-...` and instance ids give transactional ids
`hdfs2kafka-...`: the prefixes the stack grants the daemon's principal (User:hdfs2kafka).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.pipeline.harness import (
    DaemonProcess,
    SecureStack,
    consume,
    create_topic,
    free_port,
    ledger_entries,
    missing,
    put,
    sample_file,
    write_config,
)
from tests.integration.secure.conftest import devstack

ROWS = 4_000


@pytest.fixture(scope="module")
def sstack(secure: dict[str, str]) -> SecureStack:
    return SecureStack(dict(secure))


@pytest.fixture(scope="module")
def hdfs(sstack: SecureStack) -> Any:
    return sstack.webhdfs()


def check_every_row_once(landed: Any, files: int, rows: int) -> None:
    assert missing(landed, dict.fromkeys(range(files), rows)) == {}
    assert landed.duplicates() == {}
    assert landed.out_of_order() == []
    assert len(landed.records) == files * rows


def daemon_config(tmp_path: Path, stack: SecureStack, unique: str, topic: str, base: str,
                  **daemon: Any) -> Path:
    return write_config(tmp_path, stack, instance_id=f"sec-{unique}",
                        ledger_topic=f"secure-ledger-{unique}",
                        sources=[{"name": "secure", "path": f"{base}/**", "topic": topic,
                                  "start_from": "earliest"}], **daemon)


def log_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    out = []
    for line in daemon.log_text().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def wait_for_errors(daemon: DaemonProcess, needle: str, count: int = 2,
                    timeout: float = 90) -> list[str]:
    """The `error` of each log event that holds `needle`, once there are `count` (each a retry)."""
    deadline = time.monotonic() + timeout
    while True:
        errors = [e["error"] for e in log_events(daemon) if needle in str(e.get("error", ""))]
        if len(errors) >= count:
            return errors
        assert daemon.alive(), daemon.log_text()[-3000:]
        assert time.monotonic() < deadline, f"no {count} errors {needle!r}:\n{daemon.log_text()[-3000:]}"
        time.sleep(0.2)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "GSSAPI", "mTLS"])
async def test_parquet_and_avro_from_secure_hdfs_into_secure_kafka_exactly_once(
        sstack: SecureStack, hdfs: Any, unique: str, tmp_path: Path, mechanism: str) -> None:
    files = 6
    stack = sstack.with_kafka(mechanism)
    topic, base = f"secure-rows-{unique}", f"/tests/secure-daemon/{unique}"
    await create_topic(stack.sasl_bootstrap, topic, 3, settings=stack.client_settings())
    # Half the files wait before the start, half arrive while it streams.
    for f in range(files // 2):
        suffix, data = sample_file(f, ROWS)
        await asyncio.to_thread(put, hdfs, f"{base}/part-{f:03d}{suffix}", data)
    cfg = daemon_config(tmp_path, stack, unique, topic, base, unit_rows=1000)
    started = time.monotonic()
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        await asyncio.to_thread(daemon.wait_for_log, "ready: recovery done", 120)
        for f in range(files // 2, files):
            suffix, data = sample_file(f, ROWS)
            await asyncio.to_thread(put, hdfs, f"{base}/part-{f:03d}{suffix}", data)
        landed = await consume(stack.sasl_bootstrap, topic, expect=files * ROWS, timeout=120,
                               settings=stack.client_settings())
        elapsed = time.monotonic() - started
        check_every_row_once(landed, files, ROWS)
        entries = await ledger_entries(stack.sasl_bootstrap, f"secure-ledger-{unique}",
                                       f"sec-{unique}", settings=stack.client_settings())
        assert sorted(e.state for e in entries.values()) == ["done"] * files
        assert daemon.terminate() == 0, daemon.log_text()[-3000:]
    print(f"{mechanism}: {files * ROWS} rows in {elapsed:.1f}s from start to last row")


async def test_every_row_once_through_sigkills_on_the_secure_stack(
        sstack: SecureStack, hdfs: Any, unique: str, tmp_path: Path) -> None:
    """A short crash loop: SIGKILL at random moments (logging in, reading the ledger, streaming,
    committing), restart each time; every life logs in to the KDC again from the keytab."""
    files, kills = 10, 6
    rng = random.Random(unique)
    stack = sstack.with_kafka("GSSAPI")
    topic, base = f"secure-crashy-{unique}", f"/tests/secure-daemon/{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 3, settings=stack.client_settings())
    for f in range(files // 3):
        suffix, data = sample_file(f, ROWS)
        await asyncio.to_thread(put, hdfs, f"{base}/dt=0/part-{f:03d}{suffix}", data)
    writer_done = threading.Event()

    def writer() -> None:
        for f in range(files // 3, files):
            suffix, data = sample_file(f, ROWS)
            put(hdfs, f"{base}/dt={f % 3}/part-{f:03d}{suffix}", data)
            time.sleep(rng.uniform(0.2, 1.0))
        writer_done.set()

    cfg = daemon_config(tmp_path, stack, unique, topic, base, unit_rows=1000)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            daemon.kill()
            daemon.start()
        await asyncio.to_thread(thread.join, 120)
        assert writer_done.is_set()
        landed = await consume(stack.kafka_bootstrap, topic, expect=files * ROWS, timeout=180,
                               settle=4, settings=stack.client_settings())
        assert daemon.alive(), daemon.log_text()[-3000:]
        check_every_row_once(landed, files, ROWS)
        assert daemon.starts == kills + 1
        assert daemon.terminate() == 0, daemon.log_text()[-3000:]


# --------------------------------------------------------------------------- what to fix


PLANTED = "planted-Scram-Pa55word-7d3e41"


async def test_a_wrong_scram_password_is_one_line_retried_and_never_shown(
        sstack: SecureStack, unique: str, tmp_path: Path) -> None:
    stack = sstack.with_kafka("SCRAM-SHA-512", sasl_password=PLANTED)
    http = free_port()
    cfg = write_config(tmp_path, stack, instance_id=f"sec-{unique}",
                       ledger_topic=f"secure-ledger-{unique}", http_port=http,
                       sources=[{"name": "secure", "path": f"/tests/secure-daemon/{unique}/**",
                                 "topic": f"secure-rows-{unique}"}])
    assert PLANTED in cfg.read_text()
    line = ("Kafka at localhost:17092 refused the SASL login of user hdfs2kafka (SCRAM-SHA-512): "
            "check kafka sasl.username / sasl.password")
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        # Retried (with backoff), not the end of the daemon: a credential fixed on the broker
        # heals it.
        await asyncio.to_thread(wait_for_errors, daemon, line)
        assert daemon.alive()
        async with aiohttp.ClientSession() as session:
            status = await (await session.get(f"http://127.0.0.1:{http}/status")).text()
            metrics = await (await session.get(f"http://127.0.0.1:{http}/metrics")).text()
        assert line in status
        assert daemon.terminate() == 0
        log = daemon.log_text()
    assert [e for e in log_events(daemon) if line in e.get("error", "")]
    for text in (log, status, metrics):
        assert PLANTED not in text


async def _relay(host: str, target: tuple[str, int]) -> asyncio.Server:
    """A TCP relay on `host` to `target`: the broker reached by an address its certificate does
    not name."""
    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            w.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection(*target)
        except OSError:
            w.close()
            return
        await asyncio.gather(pipe(r, tw), pipe(tr, w))

    return await asyncio.start_server(handle, host, 0)


@pytest.mark.parametrize("case", ["untrusted-ca", "host-mismatch", "service-name", "no-txn-acl"])
async def test_each_kafka_security_failure_is_one_line_naming_the_fix_and_retried(
        sstack: SecureStack, unique: str, tmp_path: Path, case: str) -> None:
    relay: asyncio.Server | None = None
    stack = sstack
    ledger = f"secure-ledger-{unique}"
    if case == "untrusted-ca":
        # A PEM that is no CA of the broker's certificate: the daemon's own client certificate.
        stack = sstack.with_kafka(ssl_ca_location=sstack.env["KAFKA_SSL_CERTFILE"])
        line = (f"ssl.ca.location ({sstack.env['KAFKA_SSL_CERTFILE']}) does not hold it): set "
                "kafka ssl.ca.location to the PEM file of the CA that signed the broker's "
                "certificate")
    elif case == "host-mismatch":
        host, port = sstack.kafka_bootstrap.rsplit(":", 1)
        relay = await _relay("127.0.0.2", (host, int(port)))
        address = f"127.0.0.2:{relay.sockets[0].getsockname()[1]}"
        stack = sstack.with_env(KAFKA_BOOTSTRAP=address)
        line = (f"Kafka's certificate at {address} does not name '127.0.0.2': bootstrap through a "
                "host name its certificate names")
    elif case == "service-name":
        stack = sstack.with_kafka("GSSAPI", sasl_kerberos_service_name="kafkax")
        line = ("the KDC does not know kafkax/localhost, the principal Kafka's GSSAPI asks for at "
                "localhost:17092: set kafka sasl.kerberos.service.name")
    else:
        # The analyst may create and read the ledger topic, but has no ACL for the daemon's
        # consumer group (through which it joins its group) nor its transactional ids: the
        # group's is the first it meets.
        analyst = Path(sstack.env["HDFS2KAFKA_ANALYST_SCRAM_PASSWORD_FILE"])
        stack = sstack.with_kafka("SCRAM-SHA-512", sasl_username="analyst",
                                  sasl_password="${file:" + str(analyst) + "}")
        grant = await asyncio.to_thread(devstack, "acl", "grant", ledger, "--principal",
                                        "User:analyst", timeout=120)
        assert grant.returncode == 0, grant.stderr
        line = (f"no Kafka ACL lets User:analyst (SCRAM-SHA-512 user analyst) Read group "
                f"hdfs2kafka-sec-{unique}: kafka-acls --bootstrap-server localhost:17092 --add "
                f"--allow-principal User:analyst --operation Read --group hdfs2kafka-sec-{unique}")
    cfg = write_config(tmp_path, stack, instance_id=f"sec-{unique}", ledger_topic=ledger,
                       sources=[{"name": "secure", "path": f"/tests/secure-daemon/{unique}/**",
                                 "topic": f"secure-rows-{unique}"}])
    try:
        with DaemonProcess(cfg, tmp_path) as daemon:
            daemon.start()
            errors = await asyncio.to_thread(wait_for_errors, daemon, line)
            assert daemon.alive()
            assert all("\n" not in e for e in errors)
            if case == "untrusted-ca":
                assert errors[0].startswith("Kafka's certificate at localhost:17092 is not trusted")
            assert daemon.terminate() == 0
    finally:
        if relay is not None:
            relay.close()
        if case == "no-txn-acl":
            await asyncio.to_thread(devstack, "acl", "revoke", ledger, "--principal",
                                    "User:analyst", timeout=120)


async def test_a_missing_topic_acl_stalls_nothing_is_lost_and_granting_it_heals(
        sstack: SecureStack, hdfs: Any, unique: str, tmp_path: Path) -> None:
    """The daemon's topic lies outside what its principal may write: each attempt is the line
    naming the ACL, no row lands, no file is quarantined; once the ACL is added every row
    arrives once, in order."""
    files = 3
    topic, base = f"acl-{unique}", f"/tests/secure-daemon/{unique}"
    settings = sstack.client_settings()
    # The topic exists (created while an ACL allowed it), then the ACL goes.
    for action in ("grant", "revoke"):
        if action == "revoke":
            await create_topic(sstack.kafka_bootstrap, topic, 2, settings=settings)
        done = await asyncio.to_thread(devstack, "acl", action, topic, timeout=120)
        assert done.returncode == 0, done.stderr
    for f in range(files):
        suffix, data = sample_file(f, ROWS)
        await asyncio.to_thread(put, hdfs, f"{base}/part-{f:03d}{suffix}", data)
    cfg = daemon_config(tmp_path, sstack, unique, topic, base, unit_rows=1000)
    line = (f"no Kafka ACL lets User:hdfs2kafka (SCRAM-SHA-512 user hdfs2kafka) Write topic "
            f"{topic}: kafka-acls --bootstrap-server localhost:17092 --add --allow-principal "
            f"User:hdfs2kafka --operation Write --topic {topic}")
    try:
        with DaemonProcess(cfg, tmp_path) as daemon:
            daemon.start()
            await asyncio.to_thread(wait_for_errors, daemon, line)
            entries = await ledger_entries(sstack.kafka_bootstrap, f"secure-ledger-{unique}",
                                           f"sec-{unique}", settings=settings)
            assert all(e.state not in ("done", "quarantined") for e in entries.values()), entries
            granted = await asyncio.to_thread(devstack, "acl", "grant", topic, timeout=120)
            assert granted.returncode == 0, granted.stderr
            landed = await consume(sstack.kafka_bootstrap, topic, expect=files * ROWS,
                                   timeout=120, settings=settings)
            check_every_row_once(landed, files, ROWS)
            entries = await ledger_entries(sstack.kafka_bootstrap, f"secure-ledger-{unique}",
                                           f"sec-{unique}", settings=settings)
            assert sorted(e.state for e in entries.values()) == ["done"] * files
            events = log_events(daemon)
            assert not [e for e in events if "will be quarantined" in e["event"]]
            assert all(e.get("quarantined", 0) == 0 for e in events)
            assert daemon.terminate() == 0
    finally:
        await asyncio.to_thread(devstack, "acl", "revoke", topic, timeout=120)


# --------------------------------------------------------------------------- ticket lifetimes

TICKET_LIFE_S = 40


@pytest.fixture
def short_tickets(secure: dict[str, str], tmp_path: Path) -> Iterator[int]:
    """The daemon's principal gets tickets of TICKET_LIFE_S (DEVSTACK_TICKET_LIFETIME, applied by
    `up` to the running stack, no restart); the lifetime the stack had comes back afterwards,
    and the test shell's ticket cache gets a ticket of that length again."""
    settings = Path(secure["DEVSTACK_SECURE_STATE"]) / "settings.json"
    before = int(json.loads(settings.read_text())["ticket_lifetime_s"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_TICKET_")}
    up = devstack("up", env={**env, "DEVSTACK_TICKET_LIFETIME": f"{TICKET_LIFE_S}s"})
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        # A ticket from the keytab now lives TICKET_LIFE_S (in a cache of the test's own).
        cache = f"FILE:{tmp_path / 'ccache'}"
        subprocess.run(["kinit", "-kt", secure["HDFS2KAFKA_KEYTAB"], secure["HDFS2KAFKA_PRINCIPAL"]],
                       env={**os.environ, "KRB5CCNAME": cache}, check=True, timeout=30)
        life = subprocess.run(["klist", "-c", cache], capture_output=True, text=True, check=True)
        print(life.stdout)
        yield TICKET_LIFE_S
    finally:
        restore = devstack("up", env={**env, "DEVSTACK_TICKET_LIFETIME": f"{before}s"})
        assert restore.returncode == 0, restore.stderr[-3000:]
        devstack("kinit", timeout=60)


async def test_every_row_once_across_three_ticket_lifetimes(
        sstack: SecureStack, hdfs: Any, unique: str, tmp_path: Path, short_tickets: int) -> None:
    """Files keep arriving for more than three ticket lifetimes while every connection (edit
    stream, native reads, Kafka GSSAPI) needs Kerberos: MIT krb5 takes new tickets from the
    client keytab (KRB5_CLIENT_KTNAME) with no kinit. After the first ticket has expired the
    NameNode is restarted, so the edit stream and the reader must log in again too; the daemon
    never meets a Kerberos failure, and every row lands once."""
    # Idle Kafka connections close after 3 s, so new ones (a GSSAPI login each) are opened
    # between files all along, long after the first ticket expired. (Neither the broker nor the
    # NameNode drops an open connection when its ticket expires.)
    stack = sstack.with_kafka("GSSAPI", connections_max_idle_ms="3000")
    topic, base = f"secure-tickets-{unique}", f"/tests/secure-daemon/{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 2, settings=stack.client_settings())
    cfg = daemon_config(tmp_path, stack, unique, topic, base, unit_rows=1000)
    rows, run_s, every_s = 2_000, 3.3 * short_tickets, 6.0
    files = 0
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        await asyncio.to_thread(daemon.wait_for_log, "ready: recovery done", 120)
        started = time.monotonic()
        restarted = False
        while time.monotonic() - started < run_s:
            suffix, data = sample_file(files, rows)
            await asyncio.to_thread(put, hdfs, f"{base}/part-{files:03d}{suffix}", data)
            files += 1
            await asyncio.sleep(every_s)
            if not restarted and time.monotonic() - started > 1.5 * short_tickets:
                # Every connection to the NameNode (the edit stream's, the native reader's) is
                # cut and opened again with tickets the first one no longer covers.
                done = await asyncio.to_thread(devstack, "restart", "namenode", timeout=300)
                assert done.returncode == 0, done.stderr[-3000:]
                restarted = True
        assert restarted
        landed = await consume(stack.kafka_bootstrap, topic, expect=files * rows, timeout=120,
                               settings=stack.client_settings())
        check_every_row_once(landed, files, rows)
        assert daemon.alive()
        events = log_events(daemon)
        troubles = [e for e in events if e.get("level") in ("warning", "error", "critical")]
        for e in troubles:
            print("daemon:", {k: e[k] for k in ("event", "error", "level", "logger") if k in e})
        assert daemon.starts == 1
        kerberos = [e for e in troubles if any(w in str(e.get("error", "")).lower()
                                               for w in ("kerberos", "ticket", "gss"))]
        assert not kerberos, kerberos
        assert daemon.terminate() == 0
