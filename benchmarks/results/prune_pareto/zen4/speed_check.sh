#!/usr/bin/env bash
# Before training any student: how fast can a pruned + INT8 model of the zoo detector be on this
# CPU? Latency does not depend on training, so the pruned models are timed as pruned (epochs 0;
# their AP is 0 and their INT8 calibration meaningless for accuracy, not for speed).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export SARBRIDGE_DATA=${SARBRIDGE_DATA:-../shared/data}
S=.venv/bin/sarbridge
for r in 30 20; do
  [ -d runs/edge_z4_p$r ] || $S compress --method prune --from zoo:ssdd_edge_det --ratio 0.$r --epochs 0 \
    --threads 2 --out runs/edge_z4_p$r
  [ -d artifacts/edge_z4_p$r ] || $S export onnx --from runs/edge_z4_p$r --out artifacts/edge_z4_p$r
  [ -d artifacts/edge_z4_p${r}_int8_openvino ] || $S compress --method int8 --target openvino \
    --from runs/edge_z4_p$r --threads 2 --max-ap-drop 0.99 --out artifacts/edge_z4_p${r}_int8_openvino
done
[ -d artifacts/ssdd_edge_det_int8_openvino ] || $S compress --method int8 --target openvino \
  --from zoo:ssdd_edge_det --threads 2 --out artifacts/ssdd_edge_det_int8_openvino
[ -d artifacts/ssdd_edge_det_int8_onnxruntime ] || $S compress --method int8 --target onnxruntime \
  --from zoo:ssdd_edge_det --threads 2 --out artifacts/ssdd_edge_det_int8_onnxruntime
.venv/bin/python -m sarbridge.benchmarks.research.latency_blocks zoo:ssdd_edge_det@onnxruntime \
  artifacts/ssdd_edge_det_int8_onnxruntime@onnxruntime artifacts/ssdd_edge_det_int8_openvino@openvino \
  artifacts/edge_z4_p30@onnxruntime artifacts/edge_z4_p30_int8_openvino@openvino \
  artifacts/edge_z4_p20@onnxruntime artifacts/edge_z4_p20_int8_openvino@openvino \
  --threads 2 --rounds 7 --json benchmarks/results/prune_pareto/zen4/speed_check.json
