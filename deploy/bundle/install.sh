#!/usr/bin/env bash
# Installs hdfs2kafka from this offline bundle: no network, no compiler.
#
#   sudo ./install.sh                       install or upgrade, as root, on this machine
#   ./install.sh --root /tmp/r --no-system-calls
#                                           lay everything out under /tmp/r instead of /
#
# Options:
#   --python PYTHON   Python to build the virtualenv with (default: python3); its minor version
#                     must be the bundle's (see BUNDLE_INFO)
#   --prefix DIR      program directory (default: /opt/hdfs2kafka)
#   --root DIR        prefix every path with DIR (to prepare an image or a test)
#   --no-system       install the program only: no user, unit, or config
#   --no-system-calls do not run systemctl (implied by --root)
#   --force           reinstall a version that is already installed
#
# Layout:
#   /opt/hdfs2kafka/versions/<version>/   a virtualenv per installed version
#   /opt/hdfs2kafka/current               -> versions/<version>, switched atomically
#   /opt/hdfs2kafka/bin/hdfs2kafka        -> ../current/bin/hdfs2kafka (the unit's ExecStart)
#   /opt/hdfs2kafka/share/                README, Grafana dashboard, Prometheus alert rules
#   /etc/hdfs2kafka/hdfs2kafka.toml       the config, root:hdfs2kafka 0640 (kept on upgrade)
#   /etc/systemd/system/hdfs2kafka.service, /etc/sysusers.d/hdfs2kafka.conf
# A previous version stays in versions/ until removed by hand: roll back by pointing
# `current` at it again and restarting.
set -euo pipefail

BUNDLE=$(cd "$(dirname "$0")" && pwd)
PYTHON=python3
PREFIX=/opt/hdfs2kafka
ROOT=
SYSTEM=yes
CALLS=yes
FORCE=no

usage() { sed -n '2,28s/^# \{0,1\}//p' "$0"; }
die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PYTHON=$2; shift 2 ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --root) ROOT=$(mkdir -p "$2" && cd "$2" && pwd); CALLS=no; shift 2 ;;
        --no-system) SYSTEM=no; shift ;;
        --no-system-calls) CALLS=no; shift ;;
        --force) FORCE=yes; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path" ;; esac

info() { sed -n "s/^$1=//p" "$BUNDLE/BUNDLE_INFO"; }
VERSION=$(info version)
WANT_PY=$(info python)
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; give the Python $WANT_PY to use with --python"
HAVE_PY=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$HAVE_PY" = "$WANT_PY" ] || die "this bundle holds wheels for Python $WANT_PY but $PYTHON is $HAVE_PY; pass --python /path/to/python$WANT_PY or build a bundle with that Python"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PYTHON cannot create virtualenvs (on Debian/Ubuntu: apt-get install python$WANT_PY-venv)"

echo "install.sh: checking the wheels against SHA256SUMS"
(cd "$BUNDLE" && sha256sum --check --quiet SHA256SUMS) || die "the bundle is damaged: SHA256SUMS does not match"

DEST="$ROOT$PREFIX"
VENV="$DEST/versions/$VERSION"
if [ -e "$VENV" ]; then
    [ "$FORCE" = yes ] || die "version $VERSION is already installed in $VENV (--force reinstalls it)"
    rm -rf "$VENV"
fi

echo "install.sh: creating $VENV"
mkdir -p "$DEST/versions"
"$PYTHON" -m venv "$VENV"
# Only the bundle's wheels: no index, and no pip.conf from this machine adding other sources.
PIP_CONFIG_FILE=/dev/null "$VENV/bin/pip" install --quiet --no-index --no-cache-dir \
    --disable-pip-version-check --find-links "$BUNDLE/wheels" "hdfs2kafka==$VERSION"
"$VENV/bin/hdfs2kafka" --version >/dev/null

ln -sfn "versions/$VERSION" "$DEST/current.new"
mv -T "$DEST/current.new" "$DEST/current"
mkdir -p "$DEST/bin" "$DEST/share"
ln -sfn ../current/bin/hdfs2kafka "$DEST/bin/hdfs2kafka"
cp "$BUNDLE/README.md" "$DEST/README.md"
cp -r "$BUNDLE/grafana" "$BUNDLE/prometheus" "$BUNDLE/examples" "$DEST/share/"
echo "install.sh: $PREFIX/bin/hdfs2kafka is version $VERSION"

[ "$SYSTEM" = yes ] || exit 0

# The dedicated user, with systemd-sysusers where there is one.
install -D -m 0644 "$BUNDLE/systemd/hdfs2kafka.sysusers.conf" "$ROOT/etc/sysusers.d/hdfs2kafka.conf"
if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers ${ROOT:+--root="$ROOT"} "$ROOT/etc/sysusers.d/hdfs2kafka.conf"
elif ! grep -q '^hdfs2kafka:' "$ROOT/etc/passwd" 2>/dev/null; then
    useradd ${ROOT:+--root "$ROOT"} --system --user-group --home-dir /var/lib/hdfs2kafka \
        --no-create-home --shell /usr/sbin/nologin --comment "hdfs2kafka daemon" hdfs2kafka
fi
GID=$(awk -F: '$1 == "hdfs2kafka" { print $3 }' "$ROOT/etc/group")
[ -n "$GID" ] || die "group hdfs2kafka was not created"

# The unit, pointed at this prefix.
UNIT="$ROOT/etc/systemd/system/hdfs2kafka.service"
mkdir -p "$(dirname "$UNIT")"
sed "s#/opt/hdfs2kafka#$PREFIX#g" "$BUNDLE/systemd/hdfs2kafka.service" > "$UNIT.new"
chmod 0644 "$UNIT.new"
mv "$UNIT.new" "$UNIT"

# The config: readable by the daemon's group only (it can hold passwords); never overwritten.
CONF="$ROOT/etc/hdfs2kafka/hdfs2kafka.toml"
install -d -m 0750 -o 0 -g "$GID" "$ROOT/etc/hdfs2kafka"
if [ -e "$CONF" ]; then
    echo "install.sh: keeping the existing $CONF"
else
    TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))')
    sed "s#^admin_token = \"change-me\"#admin_token = \"$TOKEN\"#" "$BUNDLE/examples/hdfs2kafka.toml" > "$CONF.new"
    chown 0:"$GID" "$CONF.new"
    chmod 0640 "$CONF.new"
    mv "$CONF.new" "$CONF"
    echo "install.sh: wrote the example config to $CONF (with a random admin_token): edit it"
fi
"$DEST/bin/hdfs2kafka" check-config "$CONF" || echo "install.sh: fix $CONF before starting" >&2

if [ "$CALLS" = yes ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if systemctl is-active --quiet hdfs2kafka; then
        echo "install.sh: hdfs2kafka is running the previous version: systemctl restart hdfs2kafka"
    else
        echo "install.sh: start it with: systemctl enable --now hdfs2kafka"
    fi
fi
