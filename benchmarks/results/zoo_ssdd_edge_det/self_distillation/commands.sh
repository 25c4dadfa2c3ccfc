#!/bin/bash
# The zoo detector fine-tuned 4 epochs at lr 2e-4 three ways (2026-12-01, a 2-core AMD EPYC
# Zen 1 with AVX2 only; float32 steps, 2 threads; test runs shared one core with the first run
# for part of its time). Same source, schedule and seed (0); only the teacher differs.
# Run from the repository root with SARBRIDGE_DATA pointing at the data.
set -euo pipefail
OUT=benchmarks/results/zoo_ssdd_edge_det/self_distillation
# 1. its own test-time flips as the teacher (plain + h, v, hv views averaged)
sarbridge compress --method distill --from zoo:ssdd_edge_det --teacher zoo:ssdd_edge_det \
  --teacher-flips h,v,hv --epochs 4 --lr 2e-4 --threads 2 --out runs/ssdd_edge_det_selfkd_flips_e4
# 2. no teacher: the same fine-tuning, the baseline
sarbridge compress --method finetune --from zoo:ssdd_edge_det \
  --epochs 4 --lr 2e-4 --threads 2 --out runs/ssdd_edge_det_ft_e4
# 3. itself as the teacher, plain view only
sarbridge compress --method distill --from zoo:ssdd_edge_det --teacher zoo:ssdd_edge_det \
  --epochs 4 --lr 2e-4 --threads 2 --out runs/ssdd_edge_det_selfkd_e4
for run in ssdd_edge_det_selfkd_flips_e4 ssdd_edge_det_ft_e4 ssdd_edge_det_selfkd_e4; do
  cp runs/$run/run.json $OUT/$run.json
done
# the logs: each command's output (nohup ... > LOG 2>&1) with the progress bars stripped:
#   tr '\r' '\n' < LOG | grep -av "step, items\|step/s\]\|it/s\]\|s/it\]\|^ *$" > $OUT/<run>.log
