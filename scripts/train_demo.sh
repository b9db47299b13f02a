#!/usr/bin/env bash
# Train the shipped demo world model from scratch with the project's own commands:
# record the three MuJoCo worlds, then the three training stages, then copy the result into the package.
# Usage: scripts/train_demo.sh [RUN_DIR]   (default runs/demo; set STEPS_SCALE=0.1 for a quick dry run)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PY=.venv/bin/python
RUN=${1:-runs/demo}
SCALE=${STEPS_SCALE:-1}
steps() { $PY -c "print(max(2, int($1 * $SCALE)))"; }

[ -d data/train ] || $PY -m astra_ros.datagen --episodes 24 --frames 81 --seed 0 --out data/train
[ -d data/val ] || $PY -m astra_ros.datagen --episodes 6 --frames 81 --seed 1000 --out data/val

$PY -m astra_model.train config/train_vae.yaml --resume --set out_dir=$RUN/vae steps=$(steps 300)
$PY -m astra_model.train config/train_backbone.yaml --resume \
  --set out_dir=$RUN/backbone init_from=$RUN/vae/final steps=$(steps 600)
$PY -m astra_model.train config/train_astra.yaml --resume \
  --set out_dir=$RUN/astra init_from=$RUN/backbone/final steps=$(steps 600)
echo "trained: $RUN/astra/final"
