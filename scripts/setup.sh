#!/usr/bin/env bash
# Create .venv/ at the repo root with everything Astra-ROS needs, pinned.
# Idempotent: each step is skipped when the inputs it depends on are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3}

stamp_ok() {  # stamp_ok NAME HASH: true when the step NAME last ran with inputs hashing to HASH
  [ -f "$VENV/.stamp-$1" ] && [ "$(cat "$VENV/.stamp-$1")" = "$2" ]
}

[ -x scripts/system_deps.sh ] && scripts/system_deps.sh
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"

deps_hash=$(cat requirements.txt | sha256sum | cut -d' ' -f1)
if ! stamp_ok deps "$deps_hash"; then
  echo "[setup] installing pinned requirements into .venv (first run takes a few minutes)"
  "$VENV/bin/pip" install --quiet --no-warn-script-location -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
  echo "$deps_hash" > "$VENV/.stamp-deps"
fi

pkg_hash=$(cat setup.py setup.cfg package.xml | sha256sum | cut -d' ' -f1)
if ! stamp_ok package "$pkg_hash"; then
  echo "[setup] installing astra-ros (editable)"
  "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e . 2> >(grep -v "^WARNING: Location" >&2)
  echo "$pkg_hash" > "$VENV/.stamp-package"
fi

if [ -x scripts/build_interfaces.sh ]; then
  msgs_hash=$(find msg scripts/build_interfaces.sh -type f | sort | xargs cat | sha256sum | cut -d' ' -f1)
  if ! stamp_ok msgs "$msgs_hash"; then
    echo "[setup] building the astra_msgs interfaces"
    scripts/build_interfaces.sh "$VENV"
    echo "$msgs_hash" > "$VENV/.stamp-msgs"
  fi
fi
echo "[setup] ready: $VENV"
