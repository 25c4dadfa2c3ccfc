#!/bin/bash
# 30 % of the MACs: learning rate and per-layer pruning (2026-11-30, evening). One core each
# (taskset), SARBRIDGE_DATA=/work/shared/data; runs/edge_p30 is the one-step global pruning of
# prune_pareto/ (runs/edge_p30.json).
set -e
# per-layer ("uniform") pruning to the same 30 % of the MACs, not fine-tuned
sarbridge compress --method prune --from zoo:ssdd_edge_det --ratio 0.3 --no-global --epochs 0 \
  --threads 1 --name edge_p30u --out runs/edge_p30u
# 12 epochs of distillation at lr 3e-3 (the earlier students used 1e-3), global and per-layer
taskset -c 0 sarbridge compress --method distill --teacher zoo:ssdd_edge_det --from runs/edge_p30 \
  --epochs 12 --lr 0.003 --seed 0 --threads 1 --out runs/edge_p30_kd12_lr3e3_s0
taskset -c 0 sarbridge compress --method distill --teacher zoo:ssdd_edge_det --from runs/edge_p30u \
  --epochs 12 --lr 0.003 --seed 0 --threads 1 --out runs/edge_p30u_kd12_lr3e3_s0
# 30 epochs at lr 3e-3 (against edge_p30_kdparent30_s0_gpu: 30 epochs at 1e-3)
taskset -c 0 sarbridge compress --method distill --teacher zoo:ssdd_edge_det --from runs/edge_p30 \
  --epochs 30 --lr 0.003 --seed 0 --threads 1 --out runs/edge_p30_kd30_lr3e3_s0
# where the scores of a 30 % student lie, and whether re-estimating BatchNorm helps
python benchmarks/results/prune_pareto/p30_lr/score_range.py runs/edge_p30_kd12_lr3e3_s0
python benchmarks/results/prune_pareto/p30_lr/bn_reestimate.py runs/edge_p30_kd12_lr3e3_s0
# why no score passes 0.27: the sign of the class-output weights (also run on the p50 and the zoo)
python benchmarks/results/prune_pareto/p30_lr/score_ceiling.py runs/edge_p30_kd30_lr3e3_s0
# started 2026-12-01 01:03 to complete the comparison at lr 3e-3 (finetune seed 0, distill seed 1);
# if a session stops them, continue each with the same command + --resume
taskset -c 0 sarbridge compress --method finetune --from runs/edge_p30 --epochs 30 --lr 0.003 \
  --seed 0 --threads 1 --out runs/edge_p30_ft30_lr3e3_s0
taskset -c 1 sarbridge compress --method distill --teacher zoo:ssdd_edge_det --from runs/edge_p30 \
  --epochs 30 --lr 0.003 --seed 1 --threads 1 --out runs/edge_p30_kd30_lr3e3_s1
