#!/usr/bin/env bash
# Install the Debian packages Astra-ROS needs outside the venv (runs as root).
# Idempotent and fast: apt is only touched when something is actually missing.
#   libosmesa6: software OpenGL (OSMesa) for headless MuJoCo rendering (MUJOCO_GL=osmesa).
set -euo pipefail

PACKAGES=(libosmesa6)

missing=()
for pkg in "${PACKAGES[@]}"; do
  # dpkg -s also succeeds for removed-but-not-purged packages, so check the status line
  # (captured first: piping into grep -q could SIGPIPE dpkg and, under pipefail, misreport).
  info=$(dpkg -s "$pkg" 2>/dev/null || true)
  if ! grep -qx 'Status: install ok installed' <<<"$info"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "[system_deps] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
