#!/usr/bin/env bash
# SWA24: the SWA12 seed-0 command with 24 epochs, all 24 averaged (its first 12 epochs repeat SWA12's).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p runs && git show 5d9251b:zoo/ssdd_edge_det/checkpoint.pt > runs/ssdd_edge_det_prev.pt
.venv/bin/sarbridge train detect --config configs/det_edge_512.yaml --init det:runs/ssdd_edge_det_prev.pt \
  --name zoo_swa24_lr1e-3_s0 --set seed=0 --set threads=2 --set data.val_fraction=0 --set optim.amp=fp32 \
  --set optim.epochs=24 --set optim.lr=0.001 --set optim.schedule=cyclic --set optim.swa_epochs=24 \
  --set optim.warmup_steps=30 --set augment.mosaic=0 --set optim.ema=false
mkdir -p logs
.venv/bin/python -m sarbridge.benchmarks.research.det_nms_sweep runs/zoo_swa24_lr1e-3_s0/checkpoint.pt \
  --iou 0.7 --vote-iou 0.7 --threads 2 --json logs/last_zoo_swa24_lr1e-3_s0.json
