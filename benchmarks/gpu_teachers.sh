#!/usr/bin/env bash
# One GPU session for the teacher a CPU cannot afford: the m-scale edge detector
# (configs/det_edge_m_512.yaml: edge_m backbone, neck 192, 17.2 M parameters against the board
# model's 1.65 M) trained on SSDD, then the pruned board student (the zoo detector at 50 % of
# its MACs) distilled from it, beside the same student distilled from its own parent (the zoo
# detector), same schedule and seeds: does a larger teacher teach the board model more?
#
#   SARBRIDGE_DATA=<data root> OUT=<results dir> bash benchmarks/gpu_teachers.sh
#
# TEACHER_INIT: bnn (default: first a BNN with the edge_m backbone, configs/bnn_edge.yaml with
#   model.backbone=edge_m, as the zoo detector starts from its BNN) | random
# TEACHER_EPOCHS: the teacher's epochs (default 60: the zoo detector's recipe)
# TEACHER_LIMIT: seconds the teacher may train (default 300); a capped run keeps its last
#   finished epoch's checkpoint (no validation split: the zoo protocol trains on every train
#   image), and the students are taught by it
# STUDENTS: "teacher:seed" words (teacher: m | parent), default "m:0 m:1 parent:0 parent:1",
#   trained side by side on the GPU, STUDENT_EPOCHS epochs each (default 12), lr 1e-3 (the
#   CPU plan's, benchmarks/research/prune_pareto.py), STUDENT_LIMIT seconds each (default 240)
# RATIO: the share of the zoo detector's MACs the student keeps (default 0.5)
# BNN_LIMIT: seconds the teacher's BNN may train (default 120)
# STAGE: teacher | students | all (default): one device call holds at most 10 minutes, so a
#   session with the defaults runs STAGE=teacher, then STAGE=students on the same warm machine
#   (runs/ stays there between calls); a stage resumes what an earlier, capped call left.
# DRY=1 prints the commands and runs nothing.
#
# What comes back under $OUT: gpu.txt (device, versions), the logs, each run's run.json, the
# students' best.pt (a few MiB each; the teacher's weights stay on the machine) and summary.md
# (prune_pareto's table of the finished students: AP50 / AP50:95 / AP small on the SSDD test
# split, parameters, MACs). Never run on a GPU so far: no figure of it exists in this repository.
set -u
OUT=${OUT:?set OUT}
TEACHER_INIT=${TEACHER_INIT:-bnn}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-60}
TEACHER_LIMIT=${TEACHER_LIMIT:-300}
STUDENTS=${STUDENTS:-"m:0 m:1 parent:0 parent:1"}
STAGE=${STAGE:-all}
BNN_LIMIT=${BNN_LIMIT:-120}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-12}
STUDENT_LIMIT=${STUDENT_LIMIT:-240}
RATIO=${RATIO:-0.5}
PARENT=zoo:ssdd_edge_det
TEACHER=runs/det_edge_m_512_${TEACHER_INIT}_s0
PRUNED=runs/edge_p$(python3 -c "print(round(100 * $RATIO))")
exec 3>&1  # the commands are printed here, whatever their own output is redirected to
run() { echo "+ $*" >&3; [ "${DRY:-0}" = 1 ] || "$@"; }
LOGS=logs; [ "${DRY:-0}" = 1 ] && LOGS=$(mktemp -d)  # a dry run leaves nothing behind
mkdir -p "$OUT" runs "$LOGS"
if [ "${DRY:-0}" != 1 ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
  python3 -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0], 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
fi

# 1. the teacher (and its BNN start)
if [ "$STAGE" != students ]; then
  init=random
  if [ "$TEACHER_INIT" = bnn ]; then
    if [ ! -f runs/bnn_edge_m/sar_backbone.pt ]; then
      resume=(); [ -f runs/bnn_edge_m/checkpoint.pt ] && resume=(--resume)
      run timeout "$BNN_LIMIT" python3 -m sarbridge train bnn --config configs/bnn_edge.yaml \
          --set model.backbone=edge_m --name bnn_edge_m --no-progress "${resume[@]}" \
          > "$LOGS/bnn_edge_m.log" 2>&1
      run python3 -m sarbridge train bnn-export-backbone --from runs/bnn_edge_m \
          >> "$LOGS/bnn_edge_m.log" 2>&1
    fi
    init=bnn:runs/bnn_edge_m
  fi
  resume=(); [ -f "$TEACHER/checkpoint.pt" ] && resume=(--resume)
  run timeout "$TEACHER_LIMIT" python3 -m sarbridge train detect --config configs/det_edge_m_512.yaml \
      --init "$init" --name "$(basename "$TEACHER")" --set data.val_fraction=0 \
      --set optim.epochs="$TEACHER_EPOCHS" --set threads=4 --no-progress "${resume[@]}" \
      > "$LOGS/teacher.log" 2>&1
fi
[ "$STAGE" = teacher ] && { tail -3 "$LOGS/teacher.log" 2>/dev/null; exit 0; }

# 2. the pruned student (no fine-tuning: each student below starts from it)
[ -f "$PRUNED/run.json" ] || run python3 -m sarbridge compress --method prune --from "$PARENT" \
    --ratio "$RATIO" --epochs 0 --out "$PRUNED" > "$LOGS/prune.log" 2>&1

# 3. the students, side by side
names=$(basename "$PRUNED")
for s in $STUDENTS; do
  who=${s%%:*}; seed=${s##*:}
  [ "$who" = m ] && teacher=$TEACHER || teacher=$PARENT
  name=$(basename "$PRUNED")_kd${who}${STUDENT_EPOCHS}_s${seed}_gpu
  names=$names,$name
  run timeout "$STUDENT_LIMIT" python3 -m sarbridge compress --method distill --from "$PRUNED" \
      --teacher "$teacher" --epochs "$STUDENT_EPOCHS" --lr 1e-3 --seed "$seed" \
      --out "runs/$name" --resume > "$LOGS/$name.log" 2>&1 &
done
wait
[ "${DRY:-0}" = 1 ] && exit 0

# 4. what comes back
python3 -m sarbridge.benchmarks.research.prune_pareto --table --runs-dir runs --names "$names" \
    > "$OUT/summary.md" 2>&1
cp "$LOGS"/*.log "$OUT/" 2>/dev/null
for r in "$TEACHER" runs/bnn_edge_m runs/*_gpu; do
  [ -f "$r/run.json" ] || continue
  mkdir -p "$OUT/runs/$(basename "$r")"
  cp "$r/run.json" "$OUT/runs/$(basename "$r")/"
  case "$r" in *_gpu) [ -f "$r/best.pt" ] && cp "$r/best.pt" "$OUT/runs/$(basename "$r")/" ;; esac
done
cat "$OUT/summary.md"
