#!/usr/bin/env bash
# After front.sh: each student it trained exported (FP32) and made INT8 for OpenVINO (default
# calibration; default accuracy budget, AP50 drop <= 0.01 on 200 train images the calibration
# did not read; where it cannot be met, 0.02, and the log says so), the dense zoo detector's INT8
# models (OpenVINO, ONNX Runtime), then ONE sarbridge bench of all of them on the SSDD test split
# (deployed path, batch 1, 2 threads, ONNX Runtime and OpenVINO rows), and latency_blocks
# (alternating blocks in one process) for the ratios. Nothing else running. RUN=_run2: a second
# run into bench_run2/ and latency_blocks_run2.json (after front.sh c). STUDENTS (run names under
# runs/, space-separated) replaces the twelve-epoch seed-0 students, e.g. after front.sh d and e:
#   STUDENTS="edge_z4_p50_kd24_lr3e3_s0 edge_z4_p30_kd12_lr3e3_s1 edge_z4_p30_ft12_lr3e3_s1" RUN=_run3
# PREP_ONLY=1: the exports and INT8 models only (e.g. on one core while a student still trains on
# the other), no bench.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export SARBRIDGE_DATA=${SARBRIDGE_DATA:-../shared/data}
S=.venv/bin/sarbridge
OUT=benchmarks/results/prune_pareto/front
models=(zoo:ssdd_edge_det)
[ -d artifacts/ssdd_edge_det_int8_onnxruntime ] || $S compress --method int8 --target onnxruntime \
  --from zoo:ssdd_edge_det --threads 2 --out artifacts/ssdd_edge_det_int8_onnxruntime
[ -d artifacts/ssdd_edge_det_int8_openvino ] || $S compress --method int8 --target openvino \
  --from zoo:ssdd_edge_det --threads 2 --out artifacts/ssdd_edge_det_int8_openvino
models+=(artifacts/ssdd_edge_det_int8_onnxruntime artifacts/ssdd_edge_det_int8_openvino)
blocks=(zoo:ssdd_edge_det@onnxruntime artifacts/ssdd_edge_det_int8_openvino@openvino)
students=()
for r in 75 50 30; do for tag in kd ft; do students+=(edge_z4_p${r}_${tag}12_lr3e3_s0); done; done
[ -n "${STUDENTS:-}" ] && read -ra students <<< "$STUDENTS"
for st in "${students[@]}"; do
  grep -qs '"compare"' runs/$st/run.json || { echo "$st: not trained (front.sh), left out"; continue; }
  [ -d artifacts/$st ] || $S export onnx --from runs/$st --out artifacts/$st
  q=artifacts/${st}_int8_openvino
  if [ ! -d $q ]; then
    $S compress --method int8 --target openvino --from runs/$st --threads 2 --out $q ||
      { echo "$st: default budget missed, INT8 with --max-ap-drop 0.02"
        $S compress --method int8 --target openvino --from runs/$st --threads 2 \
          --max-ap-drop 0.02 --out $q; }
  fi
  models+=(artifacts/$st $q)
  [[ $st = *_kd* ]] && blocks+=(artifacts/$st@onnxruntime $q@openvino)
done
[ -n "${PREP_ONLY:-}" ] && { echo "PREP_ONLY: the artifacts are made, no bench"; exit 0; }
$S bench --models "${models[@]}" --data SSDD --backends onnxruntime,openvino --threads 2 \
  --batch-sizes 1 --iterations 100 --power none --out $OUT/bench${RUN:-}
.venv/bin/python -m sarbridge.benchmarks.research.latency_blocks "${blocks[@]}" \
  --threads 2 --rounds 5 --json $OUT/latency_blocks${RUN:-}.json
