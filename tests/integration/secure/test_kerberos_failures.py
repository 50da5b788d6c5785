"""Kerberos failures an operator meets, provoked for real on the Kerberized stack, each seen as
the one line that names its fix: a clock an hour off the KDC's (libfaketime), and a keytab
whose key the KDC no longer has (the principal's key changed after the keytab was written)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _watch(env: dict[str, str], *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "pipeline.cli", "watch", "--path", "/**",
                           "--duration", "5"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def _own_cache(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The stack's client settings with an empty ticket cache of this test's own."""
    return {**os.environ, **env, "KRB5CCNAME": f"FILE:{tmp_path}/ccache"}


def test_a_clock_an_hour_off_is_named_clock_skew(secure, tmp_path):
    faketime = shutil.which("faketime")
    assert faketime, "faketime is installed by deploy/tools/install-test-tools"
    # MIT krb5 corrects its clock by the KDC's reply unless told not to (kdc_timesync): a
    # client that does not is what a host with a wrong clock and no NTP looks like.
    conf = tmp_path / "krb5.conf"
    conf.write_text(Path(secure["KRB5_CONFIG"]).read_text()
                    .replace("[libdefaults]", "[libdefaults]\n    kdc_timesync = 0", 1))
    env = _own_cache(secure, tmp_path) | {"KRB5_CONFIG": str(conf), "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    out = _watch(env, faketime, "-f", "+1h")
    assert out.returncode != 0, out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "clock skew: sync this host's clock with NTP" in lines[0]

    # The same client with the clock right: the edit stream opens.
    again = tmp_path / "again"
    again.mkdir()
    ok = _watch(_own_cache(secure, again))
    assert ok.returncode == 0, ok.stderr
    assert '"event": "watching"' in ok.stdout


@pytest.fixture
def stale_keytab(secure, tmp_path):
    """A principal of this test's own and a keytab of it that the KDC no longer accepts."""
    name = f"stale-{uuid.uuid4().hex[:8]}@{secure['HDFS2KAFKA_PRINCIPAL'].split('@')[1]}"
    keytab = tmp_path / "stale.keytab"
    kadmin = shutil.which("kadmin.local") or "/usr/sbin/kadmin.local"
    env = {**os.environ, **secure}

    def admin(query: str) -> None:
        done = subprocess.run([kadmin, "-q", query], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "error" not in done.stderr.lower(), done.stderr

    admin(f"addprinc -randkey {name}")
    admin(f"ktadd -k {keytab} {name}")
    admin(f"cpw -randkey {name}")  # a new key: the keytab holds the old one
    yield name, keytab
    admin(f"delprinc -force {name}")


def test_a_keytab_with_an_old_key_is_named_with_the_principal(secure, tmp_path, stale_keytab):
    principal, keytab = stale_keytab
    env = _own_cache(secure, tmp_path) | {"HDFS2KAFKA_PRINCIPAL": principal,
                                          "HDFS2KAFKA_KEYTAB": str(keytab),
                                          "KRB5_CLIENT_KTNAME": f"FILE:{keytab}"}
    out = _watch(env)
    assert out.returncode != 0, out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert principal.split("@")[0] in lines[0]
    assert "check the principal and the keytab" in lines[0]
