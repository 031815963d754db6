#!/usr/bin/env bash
# kdlab's first command: a small but real distillation on CIFAR-10, end to end, in minutes on a
# CPU. A wide-CNN teacher learns from the whole training split; the notebook's small CNN learns
# from 5,000 labelled images alone (baseline) and with the teacher's soft targets (logit KD, T 10,
# α 0.8); then the report: test accuracies, the student's Δ over its baseline, agreement with
# the teacher.
#
#   bash scripts/quickstart.sh [DATA_ROOT] [OUT] [HYDRA_OVERRIDE ...]
#
# DATA_ROOT (default $KDLAB_DATA or ./data) holds or receives cifar-10-batches-py/ (downloaded
# when missing; without internet, point it at a copy). OUT (default ./quickstart) gets the runs,
# the teacher store and report/. Overrides apply to all three runs. Running it again skips what
# already finished.
# Env: STUDENT_IMAGES (5000; "all" = the whole split), PYTHON.
set -euo pipefail
DATA=${1:-${KDLAB_DATA:-data}}
OUT=${2:-quickstart}
shift $(( $# < 2 ? $# : 2 ))
PYTHON=${PYTHON:-python}
STUDENT_IMAGES=${STUDENT_IMAGES:-5000}
[[ $STUDENT_IMAGES == all ]] && STUDENT_IMAGES=null
# a 1,000-image validation split: each student epoch validates in a fraction of a second
common=(data.root="$DATA" data.val_size=1000 paths.log_dir="$OUT/logs" logger=csv)
"$PYTHON" -m kdlab.train +experiment=teacher_cnn_wide "${common[@]}" "$@" \
  hydra.run.dir="$OUT/teacher"
for run in baseline_cnn:baseline cnn_wide_cnn_logit:distilled; do
  "$PYTHON" -m kdlab.train +experiment="${run%%:*}" data.train_size="$STUDENT_IMAGES" \
    "${common[@]}" "$@" hydra.run.dir="$OUT/${run##*:}"
done
"$PYTHON" -m kdlab.report "$OUT/teacher" "$OUT/baseline" "$OUT/distilled" --out "$OUT/report" \
  --no-figures
