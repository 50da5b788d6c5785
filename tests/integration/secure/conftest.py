"""The Kerberized dev stack for the tests under tests/integration/secure: `secure` brings it up
when it is not (with a NameNode accepting every QOP), puts its client settings in the
environment and a ticket of the daemon's principal in the stack's ticket cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hdfswatch.hadoop_conf import load_rpc_security

ROOT = Path(__file__).resolve().parents[3]
DEVSTACK = ROOT / "deploy" / "devstack" / "devstack"
ALL_QOPS = "authentication,integrity,privacy"
TICKET_LIFETIME_S = 36000  # the stack's default (10h)


def devstack(*args: str, env: dict[str, str] | None = None, timeout: float = 900
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEVSTACK), *args, "--secure"], env=env,
                          capture_output=True, text=True, timeout=timeout)


def secure_env() -> dict[str, str]:
    out = devstack("env", timeout=60)
    assert out.returncode == 0, out.stderr
    env = {}
    for line in out.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


@pytest.fixture(scope="module")
def secure() -> Iterator[dict[str, str]]:
    """The secure stack up with a NameNode accepting every QOP, its client settings in the
    environment and a ticket of the daemon's principal in its cache."""
    env = secure_env() if devstack("status", timeout=60).returncode == 0 else {}
    # The client conf is written by the last `up`, with the NameNode's hadoop.rpc.protection.
    accepted = set(load_rpc_security(env["HADOOP_CONF_DIR"]).protection) if env else set()
    # Settings stick on the stack: a run killed while a test had shortened the tickets left
    # them short for everyone after it.
    settings = Path(env["DEVSTACK_SECURE_STATE"]) / "settings.json" if env else None
    lifetime = (json.loads(settings.read_text()).get("ticket_lifetime_s")
                if settings is not None and settings.exists() else None)
    if not {"authentication", "integrity", "privacy"} <= accepted or lifetime not in (None, TICKET_LIFETIME_S):
        up = devstack("up", env={**os.environ, "DEVSTACK_RPC_PROTECTION": ALL_QOPS,
                                 "DEVSTACK_TICKET_LIFETIME": f"{TICKET_LIFETIME_S}s"})
        assert up.returncode == 0, up.stderr[-3000:]
        env = secure_env()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        kinit = devstack("kinit", timeout=60)
        assert kinit.returncode == 0, kinit.stderr
        yield env


