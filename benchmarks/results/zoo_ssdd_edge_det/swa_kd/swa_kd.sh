#!/usr/bin/env bash
# SWA12 with self-distillation: the released SWA12 command (../swa/swa_more.sh: same start, seed,
# schedule and averaging) with the released model (zoo:ssdd_edge_det, itself SWA12) as the
# teacher. Same start and seed as SWA12 (the distiller's adapters draw from the same random
# generator at the start, so the batches need not be the same ones).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
# the start: the zoo detector released before SWA12
mkdir -p runs && git show 5d9251b:zoo/ssdd_edge_det/checkpoint.pt > runs/ssdd_edge_det_prev.pt
.venv/bin/sarbridge train detect --config configs/det_edge_512.yaml --init det:runs/ssdd_edge_det_prev.pt \
  --name zoo_swa12_kd_lr1e-3_s0 \
  --set seed=0 --set threads=2 --set data.val_fraction=0 --set optim.amp=fp32 \
  --set optim.epochs=12 --set optim.lr=0.001 --set optim.schedule=cyclic --set optim.swa_epochs=12 \
  --set optim.warmup_steps=30 --set augment.mosaic=0 --set optim.ema=false \
  --set distill.teacher=zoo:ssdd_edge_det
