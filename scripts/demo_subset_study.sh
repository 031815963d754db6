#!/usr/bin/env bash
# A quick test of the whole study chain on the CIFAR-10 subset in ../shared/data (5,000 train /
# 1,000 test real images), minutes on a 2-core CPU: the notebook pair (PreResNet-56 teacher →
# small CNN), a CNN baseline over seeds, a logit-KD α × T grid over seeds, and `kdlab.report`.
# A few epochs on 4,500 images make weak teachers, so its numbers say nothing about
# distillation; the full CIFAR-10 study is scripts/notebook_study.sh (docs/results.md).
#
#   bash scripts/demo_subset_study.sh [DATA_ROOT] [OUT]      (defaults: ../shared/data, demo/)
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-demo}
EPOCHS=${EPOCHS:-4}
SEEDS=${SEEDS:-0,1,2}
common=(data.root="$DATA" data.val_size=500 data.num_workers=2 logger=csv
        callbacks.progress_bar=null paths.log_dir="$OUT/logs" trainer.max_epochs="$EPOCHS")

python -m kdlab.train +experiment=teacher_r56 "${common[@]}" hydra.run.dir="$OUT/teacher_r56"
python -m kdlab.train +experiment=baseline_cnn "${common[@]}" hydra.sweep.dir="$OUT/sweep" \
  hydra.sweep.subdir='baseline_s${seed}' -m seed="$SEEDS"
python -m kdlab.train +experiment=r56_cnn_logit "${common[@]}" hydra.sweep.dir="$OUT/sweep" \
  hydra.sweep.subdir='logit_a${distill.alpha}_T${distill.temperature}_s${seed}' -m distill.alpha=0.5,0.8 distill.temperature=4,10 seed="$SEEDS"
python -m kdlab.report "$OUT/sweep" "$OUT/teacher_r56" --out "$OUT/report"
