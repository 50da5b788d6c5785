"""deploy/examples/hdfs2kafka.toml: valid, documents every setting, and shows true defaults."""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from pipeline import cli
from pipeline import config as config_mod
from pipeline.config import DaemonConfig, ErrorPolicy, HdfsConfig, KerberosConfig, SourceConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "hdfs2kafka.toml"
SECTIONS: dict[str, type] = {"daemon": DaemonConfig, "hdfs": HdfsConfig, "kerberos": KerberosConfig,
                             "sources": SourceConfig,
                             "sources.errors": ErrorPolicy}


def test_check_config_accepts_it(capsys: Any) -> None:
    assert cli.main(["check-config", str(EXAMPLE)]) == 0
    assert "ok (instance edge-01; 2 source(s): clicks, orders)" in capsys.readouterr().out


def settings_by_section() -> dict[str, dict[str, str | None]]:
    """Section -> setting -> the value of its commented-out line (None when it is set)."""
    out: dict[str, dict[str, str | None]] = {}
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        header = re.match(r"^\[\[?([a-z.]+)\]\]?$", line)
        if header:
            section = header.group(1)
            continue
        m = re.match(r'^(#\s*)?"?([a-z_.]+)"?\s*=\s*(.*)$', line)
        if m:
            commented, key, value = m.groups()
            value = re.sub(r"\s+#.*$", "", value) if commented else None
            out.setdefault(section, {}).setdefault(key, value)
    return out


def test_every_setting_is_documented() -> None:
    settings = settings_by_section()
    for section, cls in SECTIONS.items():
        missing = {f.name for f in fields(cls) if f.name != "errors"} - set(settings[section])
        assert missing == set(), f"[{section}] does not show {missing}"
    kafka_own = {"bootstrap", "ledger_topic", "ledger_replication", "client_properties", "schema_registry"}
    assert kafka_own == config_mod._KAFKA_OWN
    assert kafka_own - set(settings["kafka"]) == set()


def test_commented_defaults_are_the_real_defaults() -> None:
    checked = 0
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            value = settings_by_section()[section].get(f.name)
            if value is None or f.default is MISSING or f.default is None:
                continue  # set in the example, or an example value of an unset setting
            assert tomllib.loads(f"v = {value}")["v"] == f.default, f"[{section}] {f.name}"
            checked += 1
    assert checked >= 15
