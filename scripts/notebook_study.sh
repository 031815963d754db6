#!/usr/bin/env bash
# The introductory notebook's study on the full CIFAR-10 with kdlab's own commands
# (docs/results.md shows what it produced): a PreResNet-20 teacher, the small-CNN baseline and
# the logit-KD student (T 10, α 0.8, Adam 1e-3, early stopping, shared initial weights, teacher
# logits cached) over 3 seeds, an α × T grid on one seed, the report and the temperature figure.
#
#   bash scripts/notebook_study.sh DATA_ROOT OUT [--dry-run] [HYDRA_OVERRIDE ...]
#
# DATA_ROOT holds cifar-10-batches-py/ (a verified re-encoding: add data.verify=structure).
# Env: SEEDS (0,1,2), GRID_ALPHAS (0.5,0.8,0.95), GRID_TEMPS (2,4,10), GRID_SEED (0),
#      TEACHER_EPOCHS (5: about 30 min on one CPU core; on a GPU 200), PYTHON.
set -euo pipefail
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 2 && "$1" != -h && "$1" != --help ]] || { usage; exit 2; }
DATA=$1; OUT=$2; shift 2
DRY_RUN=0; EXTRA=()
for a in "$@"; do
  if [[ "$a" == --dry-run ]]; then DRY_RUN=1; else EXTRA+=("$a"); fi
done
PYTHON=${PYTHON:-python}
SEEDS=${SEEDS:-0,1,2}
GRID_ALPHAS=${GRID_ALPHAS:-0.5,0.8,0.95}
GRID_TEMPS=${GRID_TEMPS:-2,4,10}
GRID_SEED=${GRID_SEED:-0}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-5}
common=(data.root="$DATA" paths.log_dir="$OUT/logs" logger=csv ${EXTRA[@]+"${EXTRA[@]}"})

run() {  # print the command (always), run it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ $DRY_RUN -eq 0 ]]; then
    local start=$SECONDS
    "$@"
    echo "[$(( SECONDS - start )) s] $*" >>"$OUT/wall_times.txt"
  fi
}
[[ $DRY_RUN -eq 1 ]] || mkdir -p "$OUT"

run "$PYTHON" -m kdlab.train +experiment=teacher_preresnet20_cifar10 "${common[@]}" \
  trainer.max_epochs="$TEACHER_EPOCHS" hydra.run.dir="$OUT/teacher"
run "$PYTHON" -m kdlab.train -m +experiment=baseline_cnn "${common[@]}" \
  hydra.sweep.dir="$OUT/baseline" "seed=$SEEDS"
run "$PYTHON" -m kdlab.train -m +experiment=preresnet20_cnn_logit "${common[@]}" \
  hydra.sweep.dir="$OUT/kd" "seed=$SEEDS"
run "$PYTHON" -m kdlab.train -m +experiment=preresnet20_cnn_logit "${common[@]}" \
  hydra.sweep.dir="$OUT/grid" "distill.alpha=$GRID_ALPHAS" "distill.temperature=$GRID_TEMPS" "seed=$GRID_SEED"
run "$PYTHON" -m kdlab.report "$OUT/teacher" "$OUT/baseline" "$OUT/kd" "$OUT/grid" --out "$OUT/report"
verify=()
for a in ${EXTRA[@]+"${EXTRA[@]}"}; do [[ "$a" == data.verify=* ]] && verify=(--verify "${a#*=}"); done
run "$PYTHON" -m kdlab.analysis temperature --ckpt "$OUT/logs/teachers/cifar10/preresnet20/seed0.ckpt" \
  --data-root "$DATA" ${verify[@]+"${verify[@]}"} --index 0 --out "$OUT/report/temperature_preresnet20.png"
