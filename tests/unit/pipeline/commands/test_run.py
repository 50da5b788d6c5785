"""`hdfs2kafka run` refusing to start: one clear line and a nonzero exit code, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

CONFIG = """
[daemon]
instance_id = "port-test"
http = "127.0.0.1:{port}"
[hdfs]
namenodes = ["127.0.0.1:1"]
webhdfs = "http://127.0.0.1:1"
user = "hdfs"
[kafka]
bootstrap = "127.0.0.1:1"
[[sources]]
name = "s"
path = "/data/**"
topic = "s"
"""


def test_an_http_address_in_use_is_one_line_and_exit_code_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "h.toml"
        cfg.write_text(CONFIG.format(port=port))
        run = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0] and f"daemon.http in {cfg}" in lines[0]
