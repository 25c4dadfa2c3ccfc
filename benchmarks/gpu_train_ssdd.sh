#!/usr/bin/env bash
# One GPU session: the edge detector at 512 px from BNN and random initialisation, and the
# paper's Faster R-CNN ResNet50-FPN (random init, paper schedule), trained side by side on one
# GPU; then PyTorch GPU latency/energy of the BNN-initialised edge detector (NVML).
# Usage: SARBRIDGE_DATA=<data root> OUT=<results dir> bash benchmarks/gpu_train_ssdd.sh
# Each training is capped at TRAIN_LIMIT seconds; a capped run keeps its best checkpoint.
# DET_EXTRA: more --set overrides for the edge detector runs (e.g. "--set augment.mosaic=0").
set -u
OUT=${OUT:?set OUT}
TRAIN_LIMIT=${TRAIN_LIMIT:-370}
EPOCHS=${EPOCHS:-50}
mkdir -p "$OUT" runs logs
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee logs/gpu.txt
python3 -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])" | tee -a logs/gpu.txt
common=(--set threads=3 --set data.input_size=512 --set optim.batch_size=16 --set optim.epochs=$EPOCHS
        --set optim.warmup_steps=300 --set optim.lr=0.003 --no-progress ${DET_EXTRA:-})
timeout $TRAIN_LIMIT python3 -m sarbridge train detect --config configs/det_edge.yaml \
    --init bnn:runs/bnn_edge --name det_edge_bnn_512_e${EPOCHS}_gpu "${common[@]}" > logs/edge_bnn.log 2>&1 &
timeout $TRAIN_LIMIT python3 -m sarbridge train detect --config configs/det_edge.yaml \
    --init random --name det_edge_random_512_e${EPOCHS}_gpu "${common[@]}" > logs/edge_random.log 2>&1 &
if [ "${FASTER_RCNN:-1}" = 1 ]; then
timeout $TRAIN_LIMIT python3 -m sarbridge train detect --config configs/det_faster_rcnn_r50.yaml \
    --init random --set threads=4 --no-progress > logs/faster_rcnn.log 2>&1 &
fi
wait
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
[ "${LATENCY:-1}" = 1 ] && timeout 60 python3 benchmarks/torch_gpu_latency.py --run runs/det_edge_bnn_512_e${EPOCHS}_gpu --size 512 \
    --out logs/torch_gpu_latency.json > logs/latency.log 2>&1
tail -n 3 logs/*.log
tar czf "$OUT/logs.tar.gz" logs
cp det_edge_*.weights.pt "$OUT/" 2>/dev/null
ls -la "$OUT"
