#!/usr/bin/env bash
# INT8 of the zoo detector for ONNX Runtime and OpenVINO, timed against its FP32 parent on this
# machine (AMD EPYC, AVX512-VNNI and AVX512-BF16, 2 cores), alone on it.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export SARBRIDGE_DATA=${SARBRIDGE_DATA:-$(cd .. && pwd)/shared/data}
OUT=${OUT:-benchmarks/results/int8_zen5}
mkdir -p "$OUT"
for t in onnxruntime openvino; do
  [ -f artifacts/ssdd_edge_det_int8_$t/manifest.json ] || \
  .venv/bin/sarbridge compress --method int8 --target $t --from zoo:ssdd_edge_det \
    --out artifacts/ssdd_edge_det_int8_$t --threads 2
done
.venv/bin/python -m sarbridge.benchmarks.research.latency_blocks \
  zoo:ssdd_edge_det@onnxruntime artifacts/ssdd_edge_det_int8_onnxruntime@onnxruntime \
  zoo:ssdd_edge_det@openvino artifacts/ssdd_edge_det_int8_openvino@openvino \
  --threads 2 --rounds 7 --json "$OUT/latency_blocks.json"
.venv/bin/sarbridge bench --models zoo:ssdd_edge_det artifacts/ssdd_edge_det_int8_onnxruntime \
  artifacts/ssdd_edge_det_int8_openvino --data SSDD --backends onnxruntime,openvino --threads 2 \
  --batch-sizes 1 --iterations 100 --power none \
  --scenes "$SARBRIDGE_DATA/large_scenes_ioEclipse/vv2.jpg" "$SARBRIDGE_DATA/large_scenes_ioEclipse/Test_image.png" \
  --out "$OUT/bench"
