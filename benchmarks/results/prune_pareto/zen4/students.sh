#!/usr/bin/env bash
# The 20 % student (runs/edge_z4_p20 from speed_check.sh: the zoo detector pruned to 20 % of its
# MACs, --class-evidence 4 by default), 12 epochs at lr 3e-3 (the schedule of ../p30_evidence/),
# distilled from the zoo detector and, as the baseline, without a teacher; same seed.
# float32 steps, 2 threads, one run at a time. EPOCHS=30 METHODS=distill: the longer schedule.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export SARBRIDGE_DATA=${SARBRIDGE_DATA:-../shared/data}
S=.venv/bin/sarbridge
seed=${SEED:-0}
ep=${EPOCHS:-12}
for method in ${METHODS:-distill finetune}; do
  tag=$([ $method = distill ] && echo kd || echo ft)
  out=runs/edge_z4_p20_${tag}${ep}_lr3e3_s$seed
  teacher=$([ $method = distill ] && echo "--teacher zoo:ssdd_edge_det" || true)
  resume=$([ -d $out ] && echo --resume || true)
  $S compress --method $method $teacher --from runs/edge_z4_p20 --epochs $ep --lr 0.003 \
    --seed $seed --threads 2 --out $out $resume
done
