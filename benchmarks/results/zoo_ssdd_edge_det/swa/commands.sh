#!/usr/bin/env bash
# What made this folder, in order (each script's own comments say more). Run from the repository
# root; the runs start from the release before this one (zoo:ssdd_edge_det at commit 5d9251b).
set -euo pipefail
D=benchmarks/results/zoo_ssdd_edge_det/swa
bash $D/swa.sh         # SWA8 seed 0          -> runs/zoo_swa8_lr1e-3_s0
bash $D/swa_more.sh    # SWA12 seed 0, SWA8 seed 1, last snapshots -> logs/last_*.json
bash $D/whole.sh       # exports with/without whole scenes, benches -> artifacts/, reports/
bash $D/swa24.sh       # SWA24 seed 0 (after the release)
# the logs here: tr '\r' '\n' < LOG | grep -av "%|\|^ *$"
