#!/usr/bin/env bash
# A second latency run after bench.sh, in reversed order, with the pruned model before training
# (speed_check.sh) beside the trained student: same architecture, other weights.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export SARBRIDGE_DATA=${SARBRIDGE_DATA:-../shared/data}
st=edge_z4_p20_kd12_lr3e3_s0
.venv/bin/python -m sarbridge.benchmarks.research.latency_blocks \
  artifacts/edge_z4_p20_int8_openvino@openvino artifacts/${st}_int8_openvino@openvino \
  artifacts/edge_z4_p20@onnxruntime artifacts/$st@onnxruntime \
  artifacts/ssdd_edge_det_int8_openvino@openvino artifacts/ssdd_edge_det_int8_onnxruntime@onnxruntime \
  zoo:ssdd_edge_det@onnxruntime \
  --threads 2 --rounds 7 --json benchmarks/results/prune_pareto/zen4/latency_run2.json
