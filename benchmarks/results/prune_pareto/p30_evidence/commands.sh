#!/bin/bash
# 30 % of the MACs with --class-evidence 4 (the default since 2026-12-01): each class output keeps
# its 4 strongest channels with a positive and 4 with a negative class weight. One core each
# (taskset), SARBRIDGE_DATA=/work/shared/data, on a 2-core AMD EPYC with AVX2 only (no AVX-512):
# the parent's bfloat16 steps would be emulated there, so the fine-tuning ran in float32.
set -e
sarbridge compress --method prune --from zoo:ssdd_edge_det --ratio 0.3 --epochs 0 --threads 1 \
  --name edge_p30e --out runs/edge_p30e
# against p30_lr's edge_p30_kd12_lr3e3_s0 (the same step from runs/edge_p30, --class-evidence 0)
taskset -c 0 sarbridge compress --method distill --teacher zoo:ssdd_edge_det --from runs/edge_p30e \
  --epochs 12 --lr 0.003 --seed 0 --threads 1 --out runs/edge_p30e_kd12_lr3e3_s0
# the same student without a teacher (plain fine-tuning), same schedule and seed
taskset -c 1 sarbridge compress --method finetune --from runs/edge_p30e --epochs 12 --lr 0.003 \
  --seed 0 --threads 1 --out runs/edge_p30e_ft12_lr3e3_s0
# second seeds (started 2026-12-01 03:35 and 03:43)
taskset -c 1 sarbridge compress --method finetune --from runs/edge_p30e --epochs 12 --lr 0.003 \
  --seed 1 --threads 1 --out runs/edge_p30e_ft12_lr3e3_s1
taskset -c 0 sarbridge compress --method distill --teacher zoo:ssdd_edge_det --from runs/edge_p30e \
  --epochs 12 --lr 0.003 --seed 1 --threads 1 --out runs/edge_p30e_kd12_lr3e3_s1
# where the scores can reach, per level (the script of p30_lr/)
python benchmarks/results/prune_pareto/p30_lr/score_ceiling.py runs/edge_p30e_kd12_lr3e3_s0
# INT8 (OpenVINO, default budget), the FP32 export, the dense INT8 for comparison
sarbridge compress --method int8 --target openvino --from runs/edge_p30e_kd12_lr3e3_s0 --threads 1 \
  --out artifacts/edge_p30e_kd12_lr3e3_s0_int8_openvino
sarbridge export onnx --from runs/edge_p30e_kd12_lr3e3_s0 --out artifacts/edge_p30e_kd12_lr3e3_s0
sarbridge compress --method int8 --target openvino --from zoo:ssdd_edge_det --threads 1 \
  --out artifacts/ssdd_edge_det_int8_openvino
# batch-1 latency, alternating blocks in one process, the training runs stopped (SIGSTOP)
python -m sarbridge.benchmarks.research.latency_blocks zoo:ssdd_edge_det@onnxruntime \
  artifacts/ssdd_edge_det_int8_openvino@openvino artifacts/edge_p30e_kd12_lr3e3_s0@onnxruntime \
  artifacts/edge_p30e_kd12_lr3e3_s0_int8_openvino@openvino --threads 2 --rounds 7 \
  --json benchmarks/results/prune_pareto/p30_evidence/latency_blocks.json
python benchmarks/results/prune_pareto/p30_lr/score_ceiling.py runs/edge_p30e_kd12_lr3e3_s1  # and the others
