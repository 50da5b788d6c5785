"""The offline install bundle: built by `deploy/bundle/build`, installed by its install.sh on a
machine without network, and then the installed program runs and the installed unit verifies.

Building downloads the dependencies' wheels from PyPI (that is the build machine's job); the
install runs with every route to an index closed: no index, pip pointed at a closed port, proxies
at a closed port, and, where the kernel lets us, in a network namespace with no interface up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline import __version__

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "bundle" / "build"
EXAMPLE = ROOT / "deploy" / "examples" / "hdfs2kafka.toml"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens


def offline_env() -> dict[str, str]:
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k.lower() not in proxies and k != "VIRTUAL_ENV"}
    env.update(PIP_NO_INDEX="1", PIP_INDEX_URL=f"{CLOSED}/simple", PIP_CONFIG_FILE=os.devnull,
               http_proxy=CLOSED, https_proxy=CLOSED, HTTP_PROXY=CLOSED, HTTPS_PROXY=CLOSED,
               ALL_PROXY=CLOSED)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT / ".venv")))
    return env


def no_network_prefix() -> list[str]:
    """`unshare --net` when this process may create a network namespace, else nothing."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "true"], capture_output=True).returncode == 0:
        return [unshare, "--net"]
    return []


def run(*cmd: str | Path, cwd: Path | None = None, check: bool = True,
        timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*no_network_prefix(), *map(str, cmd)], cwd=cwd, env=offline_env(),
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([str(BUILD), "--python", sys.executable, "--out", str(out)],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    built = sorted(out.glob("*.tar.gz"))
    assert len(built) == 1, built
    assert str(built[0]) in result.stdout
    return built[0]


def unpack(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball) as tf:
        tf.extractall(dest, filter="tar")
    (bundle,) = dest.iterdir()
    return bundle


@pytest.fixture(scope="module")
def bundle(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(tarball, tmp_path_factory.mktemp("unpacked"))


@pytest.fixture(scope="module")
def root(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A machine's root directory with the bundle installed into it, offline."""
    root = tmp_path_factory.mktemp("root")
    # Run from an unrelated directory so that nothing is found in this checkout by accident.
    result = run(bundle / "install.sh", "--python", sys.executable, "--root", root, cwd=root)
    assert "checking the wheels against SHA256SUMS" in result.stdout
    return root


def test_bundle_holds_every_wheel_and_what_install_needs(tarball: Path, bundle: Path) -> None:
    v = sys.version_info
    assert re.fullmatch(rf"hdfs2kafka-{re.escape(__version__)}-cp{v.major}{v.minor}-linux_\w+\.tar\.gz",
                        tarball.name)
    info = dict(line.split("=", 1) for line in (bundle / "BUNDLE_INFO").read_text().splitlines())
    assert info["version"] == __version__
    assert info["python"] == f"{v.major}.{v.minor}"
    wheels = sorted(p.name for p in (bundle / "wheels").glob("*.whl"))
    summed = sorted(line.split()[1].removeprefix("wheels/")
                    for line in (bundle / "SHA256SUMS").read_text().splitlines())
    assert wheels == summed
    # hdfs2kafka's own wheel is built for this platform: it carries the compiled encoder.
    (own,) = [w for w in wheels if w.startswith("hdfs2kafka-")]
    assert re.fullmatch(rf"hdfs2kafka-{re.escape(__version__)}-cp3\d+-cp3\d+-linux_\w+\.whl", own)
    assert not [w for w in wheels if w.endswith(".tar.gz")]  # no sdists: nothing to compile there
    for name in ("install.sh", "README.md", "systemd/hdfs2kafka.service",
                 "systemd/hdfs2kafka.sysusers.conf", "examples/hdfs2kafka.toml",
                 "grafana/hdfs2kafka.json", "prometheus/alerts.yml"):
        assert (bundle / name).is_file(), name
    assert os.access(bundle / "install.sh", os.X_OK)


def test_installed_program_runs_with_the_network_unused(root: Path) -> None:
    exe = root / "opt/hdfs2kafka/bin/hdfs2kafka"
    assert exe.is_symlink()
    assert os.readlink(exe) == "../current/bin/hdfs2kafka"
    assert os.readlink(root / "opt/hdfs2kafka/current") == f"versions/{__version__}"
    assert run(exe, "--version", cwd=root).stdout.strip() == f"hdfs2kafka {__version__}"
    checked = run(exe, "check-config", EXAMPLE, cwd=root)
    assert "ok (instance edge-01; 2 source(s): clicks, orders)" in checked.stdout
    python = root / f"opt/hdfs2kafka/versions/{__version__}/bin/python"
    where = run(python, "-c", "import pipeline, pipeline.encoders._rows as r; print(pipeline.__file__, r.__file__)",
                cwd=root).stdout.split()
    venv = str(root / "opt/hdfs2kafka/versions")
    assert all(p.startswith(venv) for p in where), where  # the installed copy, not this checkout
    assert where[1].endswith(".so")


def test_installed_service_files(root: Path) -> None:
    unit = root / "etc/systemd/system/hdfs2kafka.service"
    assert unit.read_text() == (ROOT / "systemd/hdfs2kafka.service").read_text()
    users = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()]
    (user,) = [u for u in users if u[0] == "hdfs2kafka"]
    gid = int(user[3])
    conf = root / "etc/hdfs2kafka/hdfs2kafka.toml"
    st = conf.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, gid)
    assert (conf.parent.stat().st_mode & 0o777, conf.parent.stat().st_gid) == (0o750, gid)
    token = re.search(r'^admin_token = "(.*)"$', conf.read_text(), re.M)
    assert token and token.group(1) != "change-me" and len(token.group(1)) >= 32
    exe = root / "opt/hdfs2kafka/bin/hdfs2kafka"
    assert run(exe, "check-config", conf, cwd=root).returncode == 0
    for name in ("grafana/hdfs2kafka.json", "prometheus/alerts.yml", "examples/hdfs2kafka.toml"):
        assert (root / "opt/hdfs2kafka/share" / name).is_file()


def test_installed_unit_verifies_against_the_installed_binary(root: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: install Debian's systemd package "
                    "(deploy/tools/install-test-tools)")
    stock = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    result = subprocess.run([analyze, "verify", f"--root={root}", "--man=no", "hdfs2kafka.service"],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_reinstalling_the_same_version_needs_force(bundle: Path, root: Path) -> None:
    result = run(bundle / "install.sh", "--python", sys.executable, "--root", root, check=False)
    assert result.returncode != 0
    assert f"version {__version__} is already installed" in result.stderr
    assert (root / "opt/hdfs2kafka/bin/hdfs2kafka").exists()  # untouched


def test_a_damaged_bundle_is_refused_before_anything_is_installed(tarball: Path, tmp_path: Path) -> None:
    bundle = unpack(tarball, tmp_path / "unpacked")
    wheel = next((bundle / "wheels").glob("hdfs2kafka-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    result = run(bundle / "install.sh", "--python", sys.executable, "--root", tmp_path / "root",
                 check=False)
    assert result.returncode != 0
    assert "the bundle is damaged" in result.stderr
    assert not (tmp_path / "root/opt").exists()


def test_a_python_of_another_version_is_refused(bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "python3.9"
    other.write_text("#!/bin/sh\necho 3.9\n")
    other.chmod(0o755)
    result = run(bundle / "install.sh", "--python", other, "--root", tmp_path / "root", check=False)
    assert result.returncode != 0
    v = sys.version_info
    assert f"this bundle holds wheels for Python {v.major}.{v.minor} but {other} is 3.9" in result.stderr

