#!/usr/bin/env bash
# Train the shipped demo world model (astra_ros/demo_model) from scratch with the project's own commands:
# record the three MuJoCo worlds (with 3 counterfactual branches per seed for stage 3, and more seeds of the
# arm's and the camera's branches for their own worlds), then run every step of config/demo_recipe.yaml
# (the VAE, the action-free backbone, stage 3 on all worlds, the separate worlds' fine-tunes and the arm's
# renderer fits), each resumed from its latest checkpoint, so the script goes on where it stopped.
# Usage: scripts/train_demo.sh [RUN_DIR]   (default runs/demo; set STEPS_SCALE=0.1 for a quick dry run)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PY=.venv/bin/python
RUN=${1:-runs/demo}

[ -d data/train ] || $PY -m astra_ros.datagen --episodes 48 --frames 81 --seed 0 --out data/train
[ -d data/branched ] || $PY -m astra_ros.datagen --episodes 48 --frames 81 --seed 0 --branches 3 --out data/branched
[ -d data/val ] || $PY -m astra_ros.datagen --episodes 6 --frames 81 --seed 1000 --out data/val
[ -d data/val_branched ] || $PY -m astra_ros.datagen --episodes 6 --frames 81 --seed 1000 --branches 3 --out data/val_branched
[ -d data/branched_more/camera ] || $PY -m astra_ros.datagen --domains camera --episodes 144 --frames 41 --seed 48 \
  --branches 3 --out data/branched_more
[ -d data/branched_more2/camera ] || $PY -m astra_ros.datagen --domains camera --episodes 144 --frames 41 --seed 192 \
  --branches 3 --out data/branched_more2
[ -d data/branched_more/arm ] || $PY -m astra_ros.datagen --domains arm --episodes 144 --frames 41 --seed 48 \
  --branches 3 --out data/branched_more
[ -d data/branched_more2/arm ] || $PY -m astra_ros.datagen --domains arm --episodes 144 --frames 41 --seed 192 \
  --branches 3 --out data/branched_more2

$PY -m astra_ros.train --recipe config/demo_recipe.yaml --run-dir "$RUN" --steps-scale "${STEPS_SCALE:-1}"
