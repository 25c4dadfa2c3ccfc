#!/usr/bin/env bash
# The 20 % student distilled for 30 epochs instead of 12 (students.sh with EPOCHS=30), its export
# and OpenVINO INT8 (default budget), then latency run 3: the dense model and both students'
# INT8, 11 rounds. Nothing else running.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export SARBRIDGE_DATA=${SARBRIDGE_DATA:-../shared/data}
S=.venv/bin/sarbridge
OUT=benchmarks/results/prune_pareto/zen4
st=edge_z4_p20_kd30_lr3e3_s0
[ -f runs/$st/run.json ] && grep -q '"status": "finished"' runs/$st/run.json || \
  EPOCHS=30 METHODS=distill $OUT/students.sh
[ -d artifacts/$st ] || $S export onnx --from runs/$st --out artifacts/$st
[ -d artifacts/${st}_int8_openvino ] || $S compress --method int8 --target openvino --from runs/$st \
  --threads 2 --out artifacts/${st}_int8_openvino
.venv/bin/python -m sarbridge.benchmarks.research.latency_blocks zoo:ssdd_edge_det@onnxruntime \
  artifacts/${st}_int8_openvino@openvino artifacts/edge_z4_p20_kd12_lr3e3_s0_int8_openvino@openvino \
  artifacts/$st@onnxruntime --threads 2 --rounds 11 --json $OUT/latency_run3.json
