#!/usr/bin/env bash
# Latency run 4, right after run 3 (kd30.sh), the order reversed and the dense INT8 added; the
# seed-1 training (students.sh) stopped with SIGSTOP for its duration.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export SARBRIDGE_DATA=${SARBRIDGE_DATA:-../shared/data}
.venv/bin/python -m sarbridge.benchmarks.research.latency_blocks \
  artifacts/edge_z4_p20_kd30_lr3e3_s0@onnxruntime artifacts/edge_z4_p20_kd12_lr3e3_s0_int8_openvino@openvino \
  artifacts/edge_z4_p20_kd30_lr3e3_s0_int8_openvino@openvino artifacts/ssdd_edge_det_int8_openvino@openvino \
  zoo:ssdd_edge_det@onnxruntime \
  --threads 2 --rounds 11 --json benchmarks/results/prune_pareto/zen4/latency_run4.json
