#!/usr/bin/env bash
# Sets up the test dependencies and runs the default test suite (slow tests excluded; add `-m slow` for them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -m "not slow" -q "$@"
