#!/usr/bin/env bash
# 30 % of the MACs in two pruning steps: the 50 % student (edge_p50_kd24_s0, already distilled
# 24 epochs) pruned again to 60 % of its MACs (0.540 G, the one-shot edge_p30's 0.539 G), then
# 12 epochs with and without distillation from the zoo detector, on one core each (the CPU
# plan's schedule for the one-shot 30 % students).
set -euo pipefail
cd "$(dirname "$0")/../../../.."
export OMP_NUM_THREADS=1
S=.venv/bin/sarbridge
[ -f runs/edge_p50_p30/run.json ] || $S compress --method prune --from runs/edge_p50_kd24_s0 \
  --ratio 0.6 --epochs 0 --threads 1 --out runs/edge_p50_p30
taskset -c 0 $S compress --method distill --teacher zoo:ssdd_edge_det --from runs/edge_p50_p30 \
  --epochs 12 --lr 1e-3 --seed 0 --threads 1 --out runs/edge_p50_p30_kd12_s0 --resume &
taskset -c 1 $S compress --method finetune --from runs/edge_p50_p30 \
  --epochs 12 --lr 1e-3 --seed 0 --threads 1 --out runs/edge_p50_p30_ft12_s0 --resume &
wait
