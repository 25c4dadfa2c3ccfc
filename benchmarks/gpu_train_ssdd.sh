#!/usr/bin/env bash
# One GPU session: SSDD detectors trained side by side on one GPU, then PyTorch GPU
# latency/energy of the BNN-initialised edge detector (NVML).
#
#   SARBRIDGE_DATA=<data root> OUT=<results dir> bash benchmarks/gpu_train_ssdd.sh
#
# EDGE_RUNS: the edge detector runs, "init:seed" words (init: bnn | random); default
#   "bnn:0 bnn:1 random:0 random:1", on EDGE_CONFIG (default configs/det_edge_512.yaml: the
#   60-epoch 512 px recipe, bfloat16 autocast on CUDA) with EPOCHS epochs (default: the config's).
#   BNN runs start from runs/bnn_edge (made first by `make train-bnn` when it is missing).
# YOLOV3=1 (default): the paper's YOLOv3 Darknet53 (configs/det_yolov3_darknet53.yaml, random init).
# FASTER_RCNN=1: the paper's Faster R-CNN ResNet50-FPN (default 0: done in gpu_h200_ssdd).
# LATENCY=1 (default): torch_gpu_latency.py on the first BNN edge run.
# TRAIN_LIMIT: seconds each training may take (default 480); a capped run keeps its best
#   checkpoint, and its test split is scored from it afterwards (det_nms_sweep at the run's NMS).
# DET_EXTRA: more --set overrides for the edge runs.
# The first GPU call (gpu_h200_ssdd, 2026-11-27) was EDGE_CONFIG=configs/det_edge.yaml with
# DET_EXTRA="--set data.input_size=512 --set optim.batch_size=16 --set optim.warmup_steps=300
# --set optim.lr=0.003 --set augment.mosaic=0", EPOCHS=26, YOLOV3=0, FASTER_RCNN=1.
set -u
OUT=${OUT:?set OUT}
TRAIN_LIMIT=${TRAIN_LIMIT:-480}
EDGE_CONFIG=${EDGE_CONFIG:-configs/det_edge_512.yaml}
EDGE_RUNS=${EDGE_RUNS:-"bnn:0 bnn:1 random:0 random:1"}
mkdir -p "$OUT" runs logs
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee logs/gpu.txt
python3 -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])" | tee -a logs/gpu.txt
if [[ "$EDGE_RUNS" == *bnn* && ! -f runs/bnn_edge/sar_backbone.pt ]]; then
  python3 -m sarbridge train bnn --config configs/bnn_edge.yaml --name bnn_edge --no-progress > logs/bnn_edge.log 2>&1
  python3 -m sarbridge train bnn-export-backbone --from runs/bnn_edge >> logs/bnn_edge.log 2>&1
fi
common=(--set threads=3 --no-progress ${EPOCHS:+--set optim.epochs=$EPOCHS} ${DET_EXTRA:-})
base=$(basename "$EDGE_CONFIG" .yaml)
for r in $EDGE_RUNS; do
  init=${r%%:*}; seed=${r##*:}
  [ "$init" = bnn ] && init_arg=bnn:runs/bnn_edge || init_arg=$init
  timeout $TRAIN_LIMIT python3 -m sarbridge train detect --config "$EDGE_CONFIG" --init "$init_arg" \
      --name ${base}_${init}_s${seed}_gpu --set seed=$seed "${common[@]}" > logs/${base}_${init}_s${seed}.log 2>&1 &
done
if [ "${YOLOV3:-1}" = 1 ]; then
  timeout $TRAIN_LIMIT python3 -m sarbridge train detect --config configs/det_yolov3_darknet53.yaml \
      --init random --set threads=3 --no-progress > logs/yolov3.log 2>&1 &
fi
if [ "${FASTER_RCNN:-0}" = 1 ]; then
  timeout $TRAIN_LIMIT python3 -m sarbridge train detect --config configs/det_faster_rcnn_r50.yaml \
      --init random --set threads=3 --no-progress > logs/faster_rcnn.log 2>&1 &
fi
wait
# a capped run has no test score yet: score its best checkpoint at the run's own NMS settings
for run in runs/det_*; do
  [ -f "$run/best.pt" ] || continue
  nms=$(python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print('' if r.get('final') else r['config']['eval']['iou_threshold'])" "$run/run.json")
  [ -n "$nms" ] && timeout 120 python3 -m sarbridge.benchmarks.research.det_nms_sweep "$run" --iou "$nms" \
      --json "logs/$(basename "$run").test_from_best.json" > "logs/$(basename "$run").sweep.log" 2>&1
done
python3 - <<'PY'
# keep what fits the trip back: run records and the edge runs' best EMA weights
import shutil, torch
from pathlib import Path
for run in Path("runs").glob("det_*"):
    if (run / "run.json").is_file():
        shutil.copy(run / "run.json", f"logs/{run.name}.run.json")
    if run.name.startswith("det_edge") and (run / "best.pt").is_file():
        ck = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
        keep = {k: ck[k] for k in ("config", "classes", "epoch", "ema", "lineage") if k in ck}
        keep["model"] = ck.get("ema", ck["model"])
        torch.save(keep, f"{run.name}.weights.pt")
PY
first_bnn=$(ls -d runs/${base}_bnn_s*_gpu 2>/dev/null | head -n 1)
if [ "${LATENCY:-1}" = 1 ] && [ -n "$first_bnn" ]; then
  timeout 60 python3 -m sarbridge.benchmarks.research.torch_gpu_latency --run "$first_bnn" --size 512 \
      --out logs/torch_gpu_latency.json > logs/latency.log 2>&1
fi
tail -n 3 logs/*.log
tar czf "$OUT/logs.tar.gz" logs
cp det_edge_*.weights.pt "$OUT/" 2>/dev/null
ls "$OUT"
