#!/usr/bin/env bash
# One bench run: the DFL box decode in the graph (the *_ingraph_decode artifacts, made before this
# change) against the same weights exported with the decode in the runtime (dense_dfl), then the
# 50 %-MACs student. Run from the repository root with SARBRIDGE_DATA set.
set -euo pipefail
D=${SARBRIDGE_DATA:-../shared/data}
sarbridge bench --models \
  artifacts/ssdd_edge_det_ingraph_decode zoo:ssdd_edge_det \
  artifacts/ssdd_edge_det_int8_onnxruntime_ingraph_decode artifacts/ssdd_edge_det_int8_onnxruntime \
  artifacts/ssdd_edge_det_int8_openvino_ingraph_decode artifacts/ssdd_edge_det_int8_openvino \
  artifacts/ssdd_edge_det_int8_tensorrt artifacts/ssdd_edge_det_qat_onnxruntime artifacts/ssdd_edge_det_fp16 \
  artifacts/edge_p50_kd24_s0 artifacts/edge_p50_kd24_s0_int8_onnxruntime artifacts/edge_p50_kd24_s0_int8_openvino \
  --data SSDD --backends onnxruntime,openvino --threads 2 --batch-sizes 1,8 --iterations 50 --power none \
  --scenes "$D/large_scenes_ioEclipse/vv2.jpg" "$D/large_scenes_ioEclipse/Test_image.png" \
  --out "${1:-reports/dfl_decode}"
