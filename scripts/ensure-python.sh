#!/usr/bin/env bash
# Create the virtual environment; on a fresh Debian-like machine install python3-venv first.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if [ -x "$venv/bin/python" ]; then exit 0; fi
if ! "$python" -m venv "$venv" 2>/dev/null; then
  rm -rf "$venv"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "python3 -m venv is not available: installing python3-venv" >&2
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
  "$python" -m venv "$venv"
fi
