#!/usr/bin/env bash
# Creates .venv with Python 3.11+, installs torch 2.13 (CPU) first, then effdl and the extras named in $1
# (e.g. "test"). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  py=""
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      py="$candidate"; break
    fi
  done
  [ -n "$py" ] || { echo "setup: Python 3.11 or newer is needed (python3.11 not found)" >&2; exit 1; }
  "$py" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

# torch first and pinned: any later resolution then sees 2.13 installed and never pulls a CUDA build.
# Elsewhere, set TORCH_INDEX_URL to a CPU wheel index to avoid the CUDA packages.
if ! .venv/bin/python -c 'import torch, sys; sys.exit(not torch.__version__.startswith("2.13."))' 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then pip install "torch==2.13.0" --index-url "$TORCH_INDEX_URL"; else pip install "torch==2.13.0"; fi
fi
if [ -n "$extras" ]; then pip install -e ".[$extras]"; else pip install -e .; fi
