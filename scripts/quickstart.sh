#!/usr/bin/env bash
# The main job: set up, train the reference 1D CNN on MNIST-1D (generated offline), compress it with the default
# recipe (prune half of the channels, fine-tune with distillation, int8) and print the before/after table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh onnx
.venv/bin/effdl train --model cnn1d --data mnist1d --out runs/quickstart --no-progress -q "$@"
echo
.venv/bin/effdl compress default --checkpoint runs/quickstart/model.safetensors --out runs/quickstart/compressed \
  --restart --no-progress -q
