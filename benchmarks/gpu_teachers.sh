#!/usr/bin/env bash
# A GPU session for the teacher a CPU cannot afford: the m-scale edge detector
# (configs/det_edge_m_512.yaml: edge_m backbone, neck 192, 17.2 M parameters against the board
# model's 1.65 M) trained on SSDD, then the pruned board student (the zoo detector at 50 % of
# its MACs) distilled from it, beside the same student distilled from its own parent (the zoo
# detector), same schedule and seeds: does a larger teacher teach the board model more?
#
#   STAGE=teacher  SARBRIDGE_DATA=<data root> OUT=<results dir> bash benchmarks/gpu_teachers.sh
#   STAGE=students SARBRIDGE_DATA=<data root> OUT=<results dir> bash benchmarks/gpu_teachers.sh
#
# One device call holds at most 10 minutes, so the two stages are two calls on the same warm
# machine (runs/ stays there between them); each stage skips what is finished and resumes what
# an earlier, capped call left. Carry runs/edge_p50 (the pruned student, 12 MiB, made here by
# `sarbridge compress --method prune --from zoo:ssdd_edge_det --ratio 0.5 --epochs 0`): the
# students stage then skips the pruning.
#
# STAGE: teacher | students (required)
# TEACHER_INIT: random (default) | bnn: first a BNN with the edge_m backbone (configs/bnn_edge.yaml
#   with model.backbone=edge_m, BNN_LIMIT seconds, default 120), as the zoo detector starts from
#   its BNN
# TEACHER_EPOCHS: the teacher's schedule (default 20: what 300 s hold at the 11-15 s per epoch
#   the H200 session measured for the board model at 512 px, benchmarks/results/gpu_h200_ssdd;
#   the zoo's recipe is 60), TEACHER_LIMIT seconds (default 300). No validation split (the zoo
#   protocol trains on every train image): the last finished epoch is the teacher's best.pt.
# STUDENTS: "teacher:seed" words (teacher: m | parent | none; none is plain fine-tuning, the
#   control), default "m:0 m:1 parent:0 parent:1", at most 4, trained side by side,
#   STUDENT_EPOCHS epochs each (default 8), lr 1e-3 (the CPU plan's,
#   benchmarks/research/prune_pareto.py), STUDENT_LIMIT seconds each (default 420)
# RATIO: the share of the zoo detector's MACs the student keeps (default 0.5); carry the
#   matching runs/edge_p<RATIO*100> (runs/edge_p30 for 0.3) or the stage prunes first
#
# The 30 % question (distillation against plain fine-tuning at a longer schedule than the CPU
# affords, 2 seeds): STAGE=students RATIO=0.3 STUDENTS="parent:0 parent:1 none:0 none:1"
#   STUDENT_EPOCHS=30 STUDENT_LIMIT=480 (one call; no m teacher needed). Run on 2026-11-30: four
#   students side by side took about 20.5 s per epoch on the H200, so 480 s held 21-22 epochs;
#   the rest were resumed on the CPU (benchmarks/results/prune_pareto/gpu_p30/)
# DRY=1 prints the commands and runs nothing.
#
# What comes back under $OUT (at most 8 files): gpu.txt (device, versions), <stage>.tar.gz
# (the logs, each run's run.json, status.txt with every command's exit code: 124 = stopped by
# its time limit), summary.md (prune_pareto's table of the finished students and the teacher's
# test AP) and, from the students stage, one file per student: <student>.pt, a finished
# student's deployed weights (slim), or <student>.checkpoint.pt, the checkpoint.pt of one its
# time limit stopped (also its best.pt: no validation split), to resume with the same command
# plus --resume, e.g. on a CPU (skipped when it would not fit the 16 MiB per file).
set -u
STAGE=${STAGE:-}
case "$STAGE" in teacher|students) ;; *) echo "set STAGE=teacher or STAGE=students" >&2; exit 2 ;; esac
OUT=${OUT:?set OUT}
TEACHER_INIT=${TEACHER_INIT:-random}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-20}
TEACHER_LIMIT=${TEACHER_LIMIT:-300}
BNN_LIMIT=${BNN_LIMIT:-120}
STUDENTS=${STUDENTS:-"m:0 m:1 parent:0 parent:1"}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-8}
STUDENT_LIMIT=${STUDENT_LIMIT:-420}
RATIO=${RATIO:-0.5}
PARENT=zoo:ssdd_edge_det
TEACHER=runs/det_edge_m_512_${TEACHER_INIT}_s0
PRUNED=runs/edge_p$(python3 -c "print(round(100 * $RATIO))")
for s in $STUDENTS; do
  case "${s%%:*}" in m|parent|none) ;; *) echo "STUDENTS: '$s': the teacher is m, parent or none" >&2; exit 2 ;; esac
done
USES_M=0; [[ " $STUDENTS" == *" m:"* ]] && USES_M=1  # a student distilled from the m teacher
if [ "$(echo $STUDENTS | wc -w)" -gt 4 ]; then  # 8 files come back: 3, one per student, 1 spare
  echo "STUDENTS: at most 4 per call (each brings back one file)" >&2; exit 2
fi
exec 3>&1  # the commands are printed here, whatever their own output is redirected to
if [ "${DRY:-0}" = 1 ]; then
  LOGS=/dev/null
  run() { echo "+ $*" >&3; }
  log() { echo /dev/null; }
else
  LOGS=logs/gpu_teachers
  mkdir -p "$OUT" runs "$LOGS"
  run() {  # the command's exit code goes to status.txt (124: stopped by its time limit)
    echo "+ $*" >&3; "$@"; local rc=$?; echo "$rc $*" >> "$LOGS/status.txt"; return $rc
  }
  log() { echo "$LOGS/$1.log"; }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt"
  python3 -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0], 'cuda', torch.cuda.is_available())" >> "$OUT/gpu.txt"
  cat "$OUT/gpu.txt"
fi
has() { python3 -c "import json, sys; sys.exit(0 if sys.argv[2] in json.load(open(sys.argv[1])) else 1)" "$1/run.json" "$2" 2>/dev/null; }

pack() {  # $1: the stage; what comes back: logs, run records, the summary
  [ "${DRY:-0}" = 1 ] && return 0
  local names=$(basename "$PRUNED")
  for s in $STUDENTS; do names=$names,$(student_name "$s"); done
  python3 -m sarbridge.benchmarks.research.prune_pareto --table --runs-dir runs --names "$names" \
      > "$OUT/summary.md" 2>&1
  if [ "$1" = teacher ] || [ "$USES_M" = 1 ]; then  # the teacher's own score
  python3 - "$TEACHER" >> "$OUT/summary.md" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1]) / "run.json"
r = json.loads(run.read_text()) if run.is_file() else {}
t = (r.get("final") or {}).get("test")
print(f"\nteacher {run.parent.name}: " + (
    f"test AP50 {t['AP50']:.4f}, AP50:95 {t['AP50_95']:.4f}, AP small {t['AP_small']:.4f} "
    f"after {len(r.get('history', []))} epochs" if t else
    f"no test score (status {r.get('status', 'not started')}, {len(r.get('history', []))} epochs)"))
PY
  fi
  for r in "$TEACHER" runs/bnn_edge_m "$PRUNED" runs/*_gpu; do
    [ -f "$r/run.json" ] && cp "$r/run.json" "$LOGS/$(basename "$r").run.json"
  done
  tar czf "$OUT/$1.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
  cat "$OUT/summary.md"
}

student_name() {  # none: plain fine-tuning (ft), else distilled from m or the parent (kd...)
  local how=kd${1%%:*}; [ "${1%%:*}" = none ] && how=ft
  echo "$(basename "$PRUNED")_${how}${STUDENT_EPOCHS}_s${1##*:}_gpu"
}

if [ "$STAGE" = teacher ]; then
  init=random
  if [ "$TEACHER_INIT" = bnn ]; then
    if [ ! -f runs/bnn_edge_m/sar_backbone.pt ]; then
      resume=(); [ -f runs/bnn_edge_m/checkpoint.pt ] && resume=(--resume)
      run timeout "$BNN_LIMIT" python3 -m sarbridge train bnn --config configs/bnn_edge.yaml \
          --set model.backbone=edge_m --name bnn_edge_m --no-progress ${resume[@]+"${resume[@]}"} \
          > "$(log bnn_edge_m)" 2>&1
      run python3 -m sarbridge train bnn-export-backbone --from runs/bnn_edge_m \
          >> "$(log bnn_edge_m)" 2>&1
      if [ "${DRY:-0}" != 1 ] && [ ! -f runs/bnn_edge_m/sar_backbone.pt ]; then
        echo "the BNN left no backbone (see $(log bnn_edge_m)); TEACHER_INIT=random skips it" >&2
        pack teacher; exit 1
      fi
    fi
    init=bnn:runs/bnn_edge_m
  fi
  if has "$TEACHER" final; then
    echo "$TEACHER: finished"
  else
    resume=(); [ -f "$TEACHER/checkpoint.pt" ] && resume=(--resume)
    run timeout "$TEACHER_LIMIT" python3 -m sarbridge train detect \
        --config configs/det_edge_m_512.yaml --init "$init" --name "$(basename "$TEACHER")" \
        --set data.val_fraction=0 --set optim.epochs="$TEACHER_EPOCHS" --set threads=4 \
        --no-progress ${resume[@]+"${resume[@]}"} > "$(log teacher)" 2>&1
  fi
  pack teacher
  exit 0
fi

# students: the pruned model (no fine-tuning) each of them starts from, then the students
if [ "${DRY:-0}" = 1 ] || ! has "$PRUNED" compare; then
  run python3 -m sarbridge compress --method prune --from "$PARENT" --ratio "$RATIO" --epochs 0 \
      --threads 1 --out "$PRUNED" --resume > "$(log prune)" 2>&1 || { pack students; exit 1; }
fi
if [ "${DRY:-0}" != 1 ] && [ "$USES_M" = 1 ] && [ ! -f "$TEACHER/best.pt" ]; then
  echo "$TEACHER has no best.pt: run STAGE=teacher first (the m students need it)" >&2
fi
pids=()
for s in $STUDENTS; do
  case "${s%%:*}" in
    m) how=(--method distill --teacher "$TEACHER") ;;
    parent) how=(--method distill --teacher "$PARENT") ;;
    none) how=(--method finetune) ;;
  esac
  name=$(student_name "$s")
  if has "runs/$name" compare; then echo "runs/$name: finished"; continue; fi
  # --threads 1: the step's own ONNX Runtime latency, as in the CPU plan (four run at once)
  run timeout "$STUDENT_LIMIT" python3 -m sarbridge compress "${how[@]}" --from "$PRUNED" \
      --epochs "$STUDENT_EPOCHS" --lr 1e-3 --seed "${s##*:}" --threads 1 \
      --out "runs/$name" --resume > "$(log "$name")" 2>&1 &
  pids+=($!)
done
failed=0
for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" || failed=1; done
[ "${DRY:-0}" = 1 ] && exit 0
python3 - "$OUT" $(for s in $STUDENTS; do echo "runs/$(student_name "$s")"; done) <<'PY'
# one file per student, within the return's limits (16 MiB a file, 64 MiB in all): a finished
# student's deployed weights, slim (<name>.pt); an unfinished one's checkpoint.pt, to resume
# (<name>.checkpoint.pt), unless it is too large (then its run.json alone says where it stopped)
import json, shutil, sys
from pathlib import Path
from sarbridge.train.checkpoint import release_checkpoint
out, left = Path(sys.argv[1]), 48 * 2**20  # the rest of 64 MiB: logs, summary, console
for run in map(Path, sys.argv[2:]):
    record = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    if "compare" in record:
        made = release_checkpoint(run, out / f"{run.name}.pt")
    elif (run / "checkpoint.pt").is_file():
        made = out / f"{run.name}.checkpoint.pt"
        if (run / "checkpoint.pt").stat().st_size > min(15 * 2**20, left):
            print(f"{run}: checkpoint.pt too large to bring back", file=sys.stderr)
            continue
        shutil.copy2(run / "checkpoint.pt", made)
    else:
        continue
    left -= made.stat().st_size
PY
pack students
exit $failed
