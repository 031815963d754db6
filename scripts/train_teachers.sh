#!/usr/bin/env bash
# Train (and export to the teacher store) every teacher of the studies (capacity gap, notebook, replication):
#   capacity gap, CIFAR-10: teacher_r34, teacher_r50, teacher_r101 × seeds 0,1,2
#   "Does KD really work?", CIFAR-100: teacher_preresnet20 × seeds 0–4 (self-KD and ensembles)
#   notebook: teacher_r56 on CIFAR-10 and CIFAR-100, seed 0
# Usage: scripts/train_teachers.sh [--launcher basic|local|slurm] [--dry-run] [HYDRA_OVERRIDE ...]
#   e.g. scripts/train_teachers.sh --launcher slurm hydra.launcher.partition=gpu
#        scripts/train_teachers.sh --dry-run            # print the commands and the job count
# Env: SEEDS (capacity-gap teacher seeds, default 0,1,2), PYTHON (default python).
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
source "$(dirname "${BASH_SOURCE[0]}")/_sweep_lib.sh"
parse_args "$@"

SEEDS=${SEEDS:-0,1,2}
for arch in r34 r50 r101; do
  sweep "+experiment=teacher_$arch" "seed=$SEEDS"
done
sweep +experiment=teacher_preresnet20 seed=0,1,2,3,4
sweep +experiment=teacher_r56 data=cifar10,cifar100 seed=0
finish
