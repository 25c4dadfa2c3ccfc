#!/usr/bin/env bash
# The four 30 % students that the device call's time limit stopped after 21-22 of 30 epochs,
# resumed here on the CPU (two at a time, one core each). Before: each student's returned
# <name>.checkpoint.pt copied to runs/<name>/checkpoint.pt and best.pt (the same state: no
# validation split), its run.json from students.tar.gz to runs/<name>/run.json.
set -u
cd "$(dirname "$0")/../../../.."
export OMP_NUM_THREADS=1
one() {  # $1: the core, then the method's own arguments
  local core=$1; shift
  taskset -c "$core" .venv/bin/python -m sarbridge compress "$@" --from runs/edge_p30 \
    --epochs 30 --lr 1e-3 --threads 1 --resume
}
( one 0 --method distill --teacher zoo:ssdd_edge_det --seed 0 --out runs/edge_p30_kdparent30_s0_gpu
  one 0 --method finetune --seed 0 --out runs/edge_p30_ft30_s0_gpu ) &
( one 1 --method distill --teacher zoo:ssdd_edge_det --seed 1 --out runs/edge_p30_kdparent30_s1_gpu
  one 1 --method finetune --seed 1 --out runs/edge_p30_ft30_s1_gpu ) &
wait
