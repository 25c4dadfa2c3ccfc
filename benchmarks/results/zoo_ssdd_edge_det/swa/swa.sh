#!/usr/bin/env bash
# SWA8: 8 cyclic-lr epochs from the zoo detector, weights averaged over all 8 epochs.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
# the parent: the zoo detector released before these runs
mkdir -p runs && git show 5d9251b:zoo/ssdd_edge_det/checkpoint.pt > runs/ssdd_edge_det_prev.pt
.venv/bin/sarbridge train detect --config configs/det_edge_512.yaml --init det:runs/ssdd_edge_det_prev.pt \
  --name zoo_swa8_lr1e-3_s0 \
  --set seed=0 --set threads=2 --set data.val_fraction=0 --set optim.amp=fp32 \
  --set optim.epochs=8 --set optim.lr=0.001 --set optim.schedule=cyclic --set optim.swa_epochs=8 \
  --set optim.warmup_steps=30 --set augment.mosaic=0 --set optim.ema=false
