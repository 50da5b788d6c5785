"""systemd/hdfs2kafka.service: systemd's own checker accepts it, and it says what the daemon does.

`systemd-analyze verify` checks that the ExecStart binary exists, so the unit is verified inside
a throwaway root (`--root`) holding systemd's stock units, the unit and a stand-in executable at
the installed path. tests/integration/test_offline_bundle.py verifies it again over a real
install from the bundle. The tests that run systemd's tools are marked `tools`: `make test`
installs them first, `make unit` leaves those tests out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from pipeline.config import DaemonConfig
from pipeline.daemon import EXIT_CONFIG

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "hdfs2kafka.service"
SYSUSERS = ROOT / "systemd" / "hdfs2kafka.sysusers.conf"
INSTALL_HINT = "install Debian's `systemd` package (`make tools` does it)"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: {INSTALL_HINT}")
    return path


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        key, _, value = line.partition("=")
        sections[current][key.strip()].append(value.strip())
    return sections


def make_root(tmp: Path, unit_text: str, with_binary: bool = True) -> Path:
    """A root with the host's stock units (targets the unit refers to), the unit, and the binary."""
    root = tmp / "root"
    stock = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/hdfs2kafka.service").write_text(unit_text)
    if with_binary:
        exec_start = parse_unit(unit_text)["Service"]["ExecStart"][0].split()[0]
        binary = root / exec_start.lstrip("/")
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("systemd-analyze"), "verify", f"--root={root}", "--man=no",
                           "hdfs2kafka.service"], capture_output=True, text=True, timeout=60)


@pytest.mark.tools
def test_systemd_analyze_verify_accepts_the_unit_without_a_word(tmp_path: Path) -> None:
    result = verify(make_root(tmp_path, UNIT.read_text()))
    # Unknown keys and bad values are only warnings with exit code 0: any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.tools
def test_verify_catches_what_it_is_here_to_catch(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("Type=notify\n", "Type=notfy\nWatchdogSecs=30\n")
    out = verify(make_root(tmp_path / "typo", broken))
    assert "Failed to parse service type" in out.stderr
    assert "Unknown key 'WatchdogSecs'" in out.stderr
    missing = verify(make_root(tmp_path / "nobin", UNIT.read_text(), with_binary=False))
    assert missing.returncode != 0
    assert "is not executable" in missing.stderr


@pytest.mark.tools
def test_hardening_exposure_is_rated_ok(tmp_path: Path) -> None:
    root = make_root(tmp_path, UNIT.read_text())
    # --threshold=20: fail above an exposure of 2.0 ("OK" in systemd's words; 10 is "UNSAFE").
    result = subprocess.run([tool("systemd-analyze"), "security", "--offline=yes", f"--root={root}",
                             "--threshold=20", "--no-pager", "hdfs2kafka.service"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for hdfs2kafka.service" in result.stdout


def test_the_unit_says_what_the_daemon_does() -> None:
    unit = parse_unit(UNIT.read_text())
    s = unit["Service"]

    def one(key: str) -> str:
        assert len(s[key]) == 1, f"{key}: {s[key]}"
        return s[key][0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"  # sd_notify comes from the daemon's own process
    assert one("WatchdogSec") == "30"
    assert one("ExecStart") == "/opt/hdfs2kafka/bin/hdfs2kafka run --config /etc/hdfs2kafka/hdfs2kafka.toml"
    assert s["ExecReload"] == [
        "/opt/hdfs2kafka/bin/hdfs2kafka check-config /etc/hdfs2kafka/hdfs2kafka.toml",
        "/bin/kill -HUP $MAINPID",
    ]
    assert one("Restart") == "on-failure"
    # The daemon's exit code that a restart cannot fix: a bad config.
    assert {int(c) for c in one("RestartPreventExitStatus").split()} == {EXIT_CONFIG}
    # Stopping drains: the open transaction gets shutdown_timeout_s, plus time to close.
    stop = one("TimeoutStopSec")
    assert stop.endswith("s") and int(stop[:-1]) >= DaemonConfig.shutdown_timeout_s * 2
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
        assert one(key) == value, key
    assert s["StateDirectory"] == ["hdfs2kafka"]
    assert not [k for k in s if k.startswith("ReadWritePaths")]  # nothing else is writable
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.tools
def test_sysusers_creates_the_user_the_unit_runs_as(tmp_path: Path) -> None:
    unit = parse_unit(UNIT.read_text())["Service"]
    (tmp_path / "etc").mkdir()
    result = subprocess.run([tool("systemd-sysusers"), f"--root={tmp_path}", str(SYSUSERS)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    user = users[unit["User"][0]]
    assert user[5] == "/var/lib/" + unit["StateDirectory"][0]
    assert user[6] == "/usr/sbin/nologin"
    assert int(user[2]) < 1000  # a system user
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert unit["Group"][0] in groups


def uncommented_credentials(text: str) -> str:
    """The unit with its commented credentials wiring switched on."""
    return re.sub(r"^#((?:LoadCredential|Environment)=.*)$", r"\1", text, flags=re.M)


def test_the_credentials_wiring_is_there_to_switch_on() -> None:
    s = parse_unit(uncommented_credentials(UNIT.read_text()))["Service"]
    names = {c.partition(":")[0] for c in s["LoadCredential"]}
    assert {"kafka-password", "admin-token", "http.key", "keytab"} <= names
    assert "KRB5_CLIENT_KTNAME=%d/keytab" in s["Environment"]
    assert "LoadCredential" not in parse_unit(UNIT.read_text())["Service"]  # off until wanted


@pytest.mark.tools
def test_systemd_analyze_verify_accepts_the_credentials_wiring(tmp_path: Path) -> None:
    result = verify(make_root(tmp_path, uncommented_credentials(UNIT.read_text())))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
