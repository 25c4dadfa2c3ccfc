#!/usr/bin/env bash
# The deployed path (ONNX Runtime, 2 threads) of the zoo detector and the weight-averaged runs,
# each exported with the default whole-scene rule (1088 px for SSDD) and with it off (512 px tiles).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
# the parent: the zoo detector released before these runs
mkdir -p runs && git show 5d9251b:zoo/ssdd_edge_det/checkpoint.pt > runs/ssdd_edge_det_prev.pt
for src in runs/ssdd_edge_det_prev.pt runs/zoo_swa12_lr1e-3_s0 runs/zoo_swa8_lr1e-3_s0 runs/zoo_swa8_lr1e-3_s1; do
  name=$(basename "${src%.pt}"); [ "$name" = ssdd_edge_det_prev ] && name=ssdd_edge_det
  for mode in whole off; do
    extra=(); [ "$mode" = off ] && extra=(--whole-scene-max off)
    [ -f artifacts/${name}_$mode/manifest.json ] || \
      .venv/bin/sarbridge export onnx --from "$src" --out artifacts/${name}_$mode "${extra[@]}"
    .venv/bin/sarbridge bench --models artifacts/${name}_$mode --data SSDD --backends onnxruntime \
      --threads 2 --batch-sizes 1 --iterations 50 --power none --out reports/${name}_$mode
  done
done
