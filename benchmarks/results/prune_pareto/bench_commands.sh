#!/usr/bin/env bash
# The exports, INT8 and the one bench run behind benchmarks/results/prune_pareto/README.md.
# Run from the repository root after benchmarks/research/prune_pareto.py:
#   bench_commands.sh prepare   exports and INT8 (any load)
#   bench_commands.sh bench     the one bench run (nothing else running)
set -euo pipefail
S=.venv/bin/sarbridge
STUDENTS="edge_p50_kd24_s0 edge_p50_ft24_s0 edge_p30_kd12_s0 edge_p30_ft12_s0"
QUANTIZED="edge_p50_kd24_s0 edge_p30_kd12_s0"
case "${1:-all}" in
  prepare|all)
    for r in $STUDENTS; do
      [ -f artifacts/$r/manifest.json ] || $S export onnx --from runs/$r --out artifacts/$r
    done
    for r in $QUANTIZED; do
      [ -f artifacts/${r}_int8_onnxruntime/manifest.json ] || \
        $S compress --method int8 --target onnxruntime --from runs/$r --max-ap-drop "${MAX_AP_DROP:-0.03}" \
          --out artifacts/${r}_int8_onnxruntime --threads "${THREADS:-2}"
    done ;;&
  bench|all)
    MODELS="zoo:ssdd_edge_det artifacts/ssdd_edge_det_int8_onnxruntime"
    for r in $STUDENTS; do MODELS="$MODELS artifacts/$r"; done
    for r in $QUANTIZED; do MODELS="$MODELS artifacts/${r}_int8_onnxruntime"; done
    $S bench --models $MODELS --data SSDD --backends onnxruntime --threads 2 --batch-sizes 1 \
      --iterations 50 --power none --out reports/prune_pareto ;;
esac
