#!/usr/bin/env bash
# The Pareto front from the current zoo detector: pruned to 75 %, 50 % and 30 % of its MACs
# (--epochs 0, default criterion and round-to), each fine-tuned 12 epochs at lr 3e-3 (the schedule
# of ../zen4/students.sh) distilled from the zoo detector and without a teacher, seed 0, float32 steps.
#   front.sh prune      the three pruned models, one after the other, 2 threads
#   front.sh a | b      one of two chains of students, each pinned to its own core (taskset); a and b
#                       run side by side and carry about the same work (the teacher's forward included)
#   THREADS=2 front.sh c   the 75 % student without a teacher: left out of the two chains when their
#                       first epochs showed that all six would not fit one working session here
#   front.sh prune 50 30   only the pruned models named (a later session: runs/ is not kept)
#   front.sh d | e      later, one per core: d the second seed (1) of both 30 % students, same
#                       schedule; e the 50 % student with its teacher for 24 epochs instead of 12
#   THREADS=2 front.sh f   after e: 12 more epochs of the 50 % student with its teacher, the
#                       weight averaging of the zoo detector's last step (cyclic lr from 1e-3,
#                       the 12 end-of-epoch weights averaged, no EMA; compress --set)
# THREADS is compress's --threads, the inference threads while scoring (default 1); training takes
# the config's threads (2), on the core taskset gives it or, unpinned, on both.
# Finished runs are skipped, an interrupted one resumes from its checkpoint.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export SARBRIDGE_DATA=${SARBRIDGE_DATA:-../shared/data}
S=.venv/bin/sarbridge
student() {  # ratio-percent method [epochs [seed]]
  local r=$1 method=$2 epochs=${3:-12} seed=${4:-0} tag out teacher=() resume=()
  tag=$([ "$method" = distill ] && echo kd || echo ft)
  out=runs/edge_z4_p${r}_${tag}${epochs}_lr3e3_s${seed}
  [ -f "$out/run.json" ] && grep -q '"compare"' "$out/run.json" && return 0
  [ "$method" = distill ] && teacher=(--teacher zoo:ssdd_edge_det)
  [ -d "$out" ] && resume=(--resume)
  $S compress --method "$method" "${teacher[@]}" --from "runs/edge_z4_p$r" --epochs "$epochs" --lr 0.003 \
    --seed "$seed" --threads "${THREADS:-1}" --out "$out" "${resume[@]}"
}
case ${1:?prune, a, b, c, d, e or f} in
  prune)
    shift
    rs=("$@"); [ ${#rs[@]} -gt 0 ] || rs=(75 50 30)
    for r in "${rs[@]}"; do
      [ -d "runs/edge_z4_p$r" ] || $S compress --method prune --from zoo:ssdd_edge_det \
        --ratio "0.$r" --epochs 0 --threads 2 --out "runs/edge_z4_p$r"
    done ;;
  a) student 75 distill; student 30 distill ;;
  b) student 50 distill; student 50 finetune; student 30 finetune ;;
  c) student 75 finetune ;;
  d) student 30 distill 12 1; student 30 finetune 12 1 ;;
  e) student 50 distill 24 0 ;;
  f)
    src=runs/edge_z4_p50_kd24_lr3e3_s0 out=runs/edge_z4_p50_kd24_kdswa12_lr1e3_s0 resume=()
    [ -f "$out/run.json" ] && grep -q '"compare"' "$out/run.json" && exit 0
    [ -d "$out" ] && resume=(--resume)
    $S compress --method distill --teacher zoo:ssdd_edge_det --from "$src" --epochs 12 --lr 0.001 \
      --seed 0 --threads "${THREADS:-1}" --set optim.schedule=cyclic --set optim.swa_epochs=12 \
      --set optim.ema=false --set optim.warmup_steps=30 --out "$out" "${resume[@]}" ;;
esac
