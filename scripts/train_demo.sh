#!/usr/bin/env bash
# Train the shipped demo world model from scratch with the project's own commands:
# record the three MuJoCo worlds (stage 3 also reads 3 counterfactual branches per seed), then the three
# training stages, the VAE in two runs, and last the VAE decoder of the trained model tuned on long
# streams (encoder frozen); steps come from config/train_*.yaml.
# Usage: scripts/train_demo.sh [RUN_DIR]   (default runs/demo; set STEPS_SCALE=0.1 for a quick dry run)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PY=.venv/bin/python
RUN=${1:-runs/demo}
SCALE=${STEPS_SCALE:-1}
steps() { $PY -c "import yaml; print(max(2, int(yaml.safe_load(open('$1'))['steps'] * $SCALE)))"; }

[ -d data/train ] || $PY -m astra_ros.datagen --episodes 48 --frames 81 --seed 0 --out data/train
[ -d data/branched ] || $PY -m astra_ros.datagen --episodes 48 --frames 81 --seed 0 --branches 3 --out data/branched
[ -d data/val ] || $PY -m astra_ros.datagen --episodes 6 --frames 81 --seed 1000 --out data/val
[ -d data/val_branched ] || $PY -m astra_ros.datagen --episodes 6 --frames 81 --seed 1000 --branches 3 --out data/val_branched

$PY -m astra_model.train config/train_vae.yaml --resume \
  --set out_dir=$RUN/vae steps=$(steps config/train_vae.yaml)
$PY -m astra_model.train config/train_vae_long.yaml --resume \
  --set out_dir=$RUN/vae_long init_from=$RUN/vae/final steps=$(steps config/train_vae_long.yaml)
$PY -m astra_model.train config/train_backbone.yaml --resume \
  --set out_dir=$RUN/backbone init_from=$RUN/vae_long/final steps=$(steps config/train_backbone.yaml)
$PY -m astra_model.train config/train_astra.yaml --resume \
  --set out_dir=$RUN/astra init_from=$RUN/backbone/final steps=$(steps config/train_astra.yaml)
$PY -m astra_model.train config/train_decoder.yaml --resume \
  --set out_dir=$RUN/decoder init_from=$RUN/astra/final steps=$(steps config/train_decoder.yaml)
echo "trained: $RUN/decoder/final"
