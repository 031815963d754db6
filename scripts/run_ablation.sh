#!/usr/bin/env bash
# The full capacity-gap grid of the capacity-gap study on CIFAR-10 (teachers first: scripts/train_teachers.sh):
#   pairs r34→r18, r50→r18, r50→r34, r101→r34, each with
#     logit KD   α ∈ {0.3, 0.5, 0.7} × T ∈ {2, 3, 4}
#     feature KD α ∈ {0.3, 0.5, 0.7}, β = 0.5
#   plus the baselines r18 and r34; every point × seeds 0,1,2 (SEEDS=0,1,2,3,4: extended version).
# Usage: scripts/run_ablation.sh [--launcher basic|local|slurm] [--dry-run] [HYDRA_OVERRIDE ...]
#   e.g. scripts/run_ablation.sh --launcher slurm hydra.launcher.partition=gpu logger.wandb.mode=online
#        SEEDS=0,1,2,3,4 scripts/run_ablation.sh --dry-run
# Env: SEEDS (default 0,1,2), PAIRS (default "r34_r18 r50_r18 r50_r34 r101_r34"), PYTHON.
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
source "$(dirname "${BASH_SOURCE[0]}")/_sweep_lib.sh"
parse_args "$@"

SEEDS=${SEEDS:-0,1,2}
PAIRS=${PAIRS:-r34_r18 r50_r18 r50_r34 r101_r34}
for pair in $PAIRS; do
  sweep "+experiment=${pair}_logit" distill.alpha=0.3,0.5,0.7 distill.temperature=2,3,4 "seed=$SEEDS"
  sweep "+experiment=${pair}_feature" distill.alpha=0.3,0.5,0.7 distill.beta=0.5 "seed=$SEEDS"
done
for arch in r18 r34; do
  sweep "+experiment=baseline_$arch" "seed=$SEEDS"
done
finish
