#!/usr/bin/env bash
# Install waypost as a systemd service: a virtualenv under the prefix (default /opt/waypost) with
# the package from this checkout, the unit, its environment file and a starting config, the
# sysusers.d/tmpfiles.d snippets. Safe to re-run: the venv is upgraded in place and files an
# operator edits (/etc/waypost.d/waypost.env, waypost.hcl) are never overwritten.
#
#   systemd/install.sh [--destdir DIR] [--prefix /opt/waypost] [--python python3]
#                      [--dns-port-53] [--skip-venv] [--wheelhouse DIR]
#
# With --destdir (or DESTDIR=...) everything goes under DIR and the running system is not touched
# (packaging, tests). Without it, on a host booted with systemd, it also creates the user and the
# directories and runs `systemctl daemon-reload`; it never enables or starts the service.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
PREFIX="/opt/waypost"
PYTHON="${PYTHON:-python3}"
DNS53=0
SKIP_VENV=0
WHEELHOUSE=""

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) DESTDIR="$2"; shift 2 ;;
    --destdir=*) DESTDIR="${1#*=}"; shift ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#*=}"; shift ;;
    --python) PYTHON="$2"; shift 2 ;;
    --python=*) PYTHON="${1#*=}"; shift ;;
    --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
    --wheelhouse=*) WHEELHOUSE="${1#*=}"; shift ;;
    --dns-port-53) DNS53=1; shift ;;
    --skip-venv) SKIP_VENV=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

case "$PREFIX" in
  /*) ;;
  *) echo "install.sh: --prefix must be an absolute path, got $PREFIX" >&2; exit 2 ;;
esac
DESTDIR="${DESTDIR%/}"
ROOT="${DESTDIR}"
UNIT_DIR="$ROOT/etc/systemd/system"
CONF_DIR="$ROOT/etc/waypost.d"

say() { echo "==> $*"; }

# put a file in place only when its content changed (keeps mtimes stable on re-runs)
place() {  # place MODE SRC DEST
  local mode="$1" from="$2" to="$3"
  mkdir -p "$(dirname "$to")"
  if [ -f "$to" ] && cmp -s "$from" "$to"; then
    return 0
  fi
  install -m "$mode" "$from" "$to"
  say "installed $to"
}

# put a file in place only when there is none (operator-owned files)
place_once() {  # place_once MODE SRC DEST
  if [ -e "$3" ]; then
    say "kept existing $3"
    return 0
  fi
  place "$@"
}

# 1. the virtualenv
if [ "$SKIP_VENV" = 0 ]; then
  VENV="$ROOT$PREFIX"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  PIP_ARGS=(--quiet --disable-pip-version-check --upgrade)
  if [ -n "$WHEELHOUSE" ]; then
    PIP_ARGS+=(--no-index --find-links "$WHEELHOUSE")
  fi
  say "installing waypost from $SRC into $VENV"
  "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" "$SRC"
  "$VENV/bin/waypost" version >/dev/null
fi

# 2. units and snippets (the unit's paths follow --prefix)
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
sed "s#/opt/waypost/#${PREFIX%/}/#g" "$SRC/systemd/waypost.service" > "$TMP/waypost.service"
place 0644 "$TMP/waypost.service" "$UNIT_DIR/waypost.service"
place 0644 "$SRC/systemd/sysusers.d/waypost.conf" "$ROOT/usr/lib/sysusers.d/waypost.conf"
place 0644 "$SRC/systemd/tmpfiles.d/waypost.conf" "$ROOT/usr/lib/tmpfiles.d/waypost.conf"
place 0644 "$SRC/systemd/waypost-dns53.conf" "$ROOT${PREFIX%/}/share/waypost/waypost-dns53.conf"
if [ "$DNS53" = 1 ]; then
  place 0644 "$SRC/systemd/waypost-dns53.conf" "$UNIT_DIR/waypost.service.d/dns53.conf"
fi
place_once 0640 "$SRC/systemd/waypost.env" "$CONF_DIR/waypost.env"
place_once 0640 "$SRC/systemd/waypost.hcl" "$CONF_DIR/waypost.hcl"

# 3. the live system (only without DESTDIR, and only where systemd is running)
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
  systemd-sysusers waypost.conf 2>/dev/null || systemd-sysusers
  systemd-tmpfiles --create waypost.conf 2>/dev/null || systemd-tmpfiles --create
  chgrp waypost "$CONF_DIR" "$CONF_DIR/waypost.env" "$CONF_DIR/waypost.hcl" 2>/dev/null || true
  systemctl daemon-reload
  say "done: systemctl enable --now waypost   (reload: systemctl reload waypost)"
else
  say "done (files under ${DESTDIR:-/}; systemd not touched)"
fi
