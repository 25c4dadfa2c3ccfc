#!/usr/bin/env bash
# The trained 20 % student (students.sh) exported and made INT8 for OpenVINO (default accuracy
# budget), then timed against the dense zoo detector in one process (latency_blocks: 7 rounds,
# alternating blocks), and one sarbridge bench of the deployed path on the SSDD test split.
# Nothing else running.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export SARBRIDGE_DATA=${SARBRIDGE_DATA:-../shared/data}
S=.venv/bin/sarbridge
OUT=benchmarks/results/prune_pareto/zen4
st=edge_z4_p20_kd12_lr3e3_s0
[ -d artifacts/$st ] || $S export onnx --from runs/$st --out artifacts/$st
[ -d artifacts/${st}_int8_openvino ] || $S compress --method int8 --target openvino --from runs/$st \
  --threads 2 --out artifacts/${st}_int8_openvino
# the dense INT8 models come from speed_check.sh
.venv/bin/python -m sarbridge.benchmarks.research.latency_blocks zoo:ssdd_edge_det@onnxruntime \
  artifacts/ssdd_edge_det_int8_onnxruntime@onnxruntime artifacts/ssdd_edge_det_int8_openvino@openvino \
  artifacts/$st@onnxruntime artifacts/${st}_int8_openvino@openvino \
  --threads 2 --rounds 7 --json $OUT/latency_blocks.json
$S bench --models zoo:ssdd_edge_det artifacts/ssdd_edge_det_int8_openvino artifacts/$st \
  artifacts/${st}_int8_openvino --data SSDD --backends onnxruntime,openvino --threads 2 \
  --batch-sizes 1 --iterations 100 --power none --out $OUT/bench
