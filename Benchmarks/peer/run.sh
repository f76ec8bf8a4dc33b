#!/usr/bin/env bash
# Tidepool against Quix Streams on the same mock broker and events (compare.py), without building:
#   bash Benchmarks/peer/run.sh [--events N] [--customers N] [--partitions N] [--no-latency]
#   TIDEPOOL_BIN=.build/debug/tidepool bash Benchmarks/peer/run.sh --events 100000 --customers 10000 --partitions 32
# Creates the virtualenv .build/venv-bench from requirements.txt on first use (or when it changes).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.build/venv-bench
req=Benchmarks/peer/requirements.txt
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  }
fi
if ! cmp -s "$req" "$venv/requirements.installed"; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/requirements.installed"
fi
export TIDEPOOL_BIN="${TIDEPOOL_BIN:-$PWD/.build/release/tidepool}"
exec "$venv/bin/python" Benchmarks/peer/compare.py "$@"
