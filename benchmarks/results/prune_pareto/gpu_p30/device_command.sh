#!/usr/bin/env bash
# The one GPU call behind gpu_p30/ (2026-11-30, one NVIDIA H200, 16 CPU cores; 538 s held).
# The machine has torch, onnx, onnxruntime and numpy but not faster-coco-eval, torch-pruning or
# onnxslim, cannot download, and receives at most 64 MiB: the repository's code, configs and
# zoo/ssdd_edge_det/checkpoint.pt, plus a folder .gpu/ (ignored by git) made beforehand with
#   .gpu/data/SSDD        the SSDD dataset (hard links of <data root>/SSDD, 49 MiB)
#   .gpu/whl/             pip download --no-deps --only-binary=:all: --python-version 3.12
#                         --platform manylinux_2_28_x86_64 ... faster-coco-eval==1.8.0
#                         torch-pruning==1.6.1 onnxslim==0.1.98
#   .gpu/runs/edge_p30/   best.pt and run.json of the pruned model (no fine-tuning):
#                         sarbridge compress --method prune --from zoo:ssdd_edge_det --ratio 0.3
#                         --epochs 0 --out runs/edge_p30
# The results, the tests and the other zoo files stayed behind for the trip. On the machine,
# from the repository root (sarbridge imported from the source tree, not installed):
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 3
mkdir -p /tmp/pkg/sarbridge && cp src/sarbridge/*.py /tmp/pkg/sarbridge/ && for d in runtime train compress export benchmarks; do ln -sfn "$PWD/$d" /tmp/pkg/sarbridge/$d; done
export PYTHONPATH=/tmp/pkg:/tmp/site SARBRIDGE_DATA=$PWD/.gpu/data PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import sarbridge.train.recipes.detect as d, torch_pruning, faster_coco_eval, onnxslim, torch; print('imports ok', d.__file__, torch.__version__, torch.cuda.is_available())" || exit 4
mkdir -p runs && cp -r .gpu/runs/edge_p30 runs/
STAGE=students RATIO=0.3 STUDENTS="parent:0 parent:1 none:0 none:1" STUDENT_EPOCHS=30 STUDENT_LIMIT=480 bash benchmarks/gpu_teachers.sh > "$OUT/console.log" 2>&1; rc=$?
echo "rc=$rc"; tail -30 "$OUT/console.log"; ls -la "$OUT"; exit $rc
