#!/usr/bin/env bash
# The second seed of the 50 % students (seed 0: train_core*.log), one core each, same commands.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
S=.venv/bin/sarbridge
taskset -c 0 $S compress --method distill --teacher zoo:ssdd_edge_det --from runs/edge_p50 \
  --epochs 24 --lr 1e-3 --seed 1 --threads 1 --out runs/edge_p50_kd24_s1 --resume &
taskset -c 1 $S compress --method finetune --from runs/edge_p50 \
  --epochs 24 --lr 1e-3 --seed 1 --threads 1 --out runs/edge_p50_ft24_s1 --resume &
wait
