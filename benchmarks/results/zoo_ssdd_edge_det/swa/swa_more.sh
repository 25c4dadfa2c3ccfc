#!/usr/bin/env bash
# Two more weight-averaging arms from the zoo detector (the SWA8 seed-0 command differs only in
# name, seed and epochs), then each run's last single snapshot scored the same way.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
# the parent: the zoo detector released before these runs
mkdir -p runs && git show 5d9251b:zoo/ssdd_edge_det/checkpoint.pt > runs/ssdd_edge_det_prev.pt
common=(--config configs/det_edge_512.yaml --init det:runs/ssdd_edge_det_prev.pt --set threads=2
  --set data.val_fraction=0 --set optim.amp=fp32 --set optim.lr=0.001 --set optim.schedule=cyclic
  --set optim.warmup_steps=30 --set augment.mosaic=0 --set optim.ema=false)
.venv/bin/sarbridge train detect "${common[@]}" --name zoo_swa12_lr1e-3_s0 --set seed=0 \
  --set optim.epochs=12 --set optim.swa_epochs=12
.venv/bin/sarbridge train detect "${common[@]}" --name zoo_swa8_lr1e-3_s1 --set seed=1 \
  --set optim.epochs=8 --set optim.swa_epochs=8
mkdir -p logs
for r in zoo_swa8_lr1e-3_s0 zoo_swa12_lr1e-3_s0 zoo_swa8_lr1e-3_s1; do
  # checkpoint.pt holds the weights after the last epoch: the last snapshot, not the average
  .venv/bin/python -m sarbridge.benchmarks.research.det_nms_sweep runs/$r/checkpoint.pt \
    --iou 0.7 --vote-iou 0.7 --threads 2 --json logs/last_$r.json
done
