#!/usr/bin/env bash
# Exports, INT8 and the bench runs behind gpu_p30/ (the 30 % students of 30 epochs) and the
# OpenVINO INT8 rows of the pruned students. From the repository root, after the students
# (device_command.sh, then resume_cpu.sh) and iterative_cpu.sh:
#   bench_commands.sh prepare   exports and INT8 (any load)
#   bench_commands.sh bench     two bench runs, the models in opposite orders (nothing else running)
# The other models of the bench come from elsewhere: artifacts/ssdd_edge_det_int8_onnxruntime and
# _openvino from `make compress METHOD=int8` (TARGET=openvino), artifacts/edge_p50_kd24_s0 and its
# _int8_onnxruntime from ../bench_commands.sh prepare.
# Tried and stopped by hand (logs/prepare.log, logs/prepare2.log): OpenVINO INT8 of
# edge_p30_kdparent30_s0_gpu, with the default budget and with --max-ap-drop 0.03 (see README).
set -euo pipefail
cd "$(dirname "$0")/../../../.."
S=.venv/bin/sarbridge
OUTDIR=benchmarks/results/prune_pareto/gpu_p30
STUDENTS="edge_p30_kdparent30_s0_gpu edge_p30_kdparent30_s1_gpu edge_p30_ft30_s0_gpu edge_p30_ft30_s1_gpu
  edge_p50_p30_kd12_s0 edge_p50_p30_ft12_s0"  # the last two: iterative_cpu.sh
case "${1:-all}" in
  prepare|all)
    for r in $STUDENTS; do
      [ -f artifacts/$r/manifest.json ] || $S export onnx --from runs/$r --out artifacts/$r
    done
    # OpenVINO INT8 (NNCF's preset) of the 50 % student, default budget. The 30 % students get
    # no INT8 row: the guard found no INT8 within even 0.03 AP50 of the 30-epoch one (0.045-0.049
    # with 0-2 layers in float, prepare2.log), and at AP50:95 0.31 none of them is deployable
    r=edge_p50_kd24_s0
    [ -f artifacts/${r}_int8_openvino/manifest.json ] || $S compress --method int8 \
      --target openvino --from runs/$r --out artifacts/${r}_int8_openvino --threads 2 ;;&
  bench|all)
    .venv/bin/python $OUTDIR/bench_pairs.py $OUTDIR/bench_run1 2>&1 | tee $OUTDIR/bench_run1.log
    .venv/bin/python $OUTDIR/bench_pairs.py $OUTDIR/bench_run2 --reverse 2>&1 | tee $OUTDIR/bench_run2.log ;;
esac
