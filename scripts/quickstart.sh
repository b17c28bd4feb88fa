#!/usr/bin/env bash
# The main job: set up, train the reference 1D CNN on MNIST-1D (generated offline), print its profile.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/effdl train --model cnn1d --data mnist1d --out runs/quickstart "$@"
