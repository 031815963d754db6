#!/usr/bin/env bash
# Real CIFAR-100 runs that fit a CPU machine (docs/results_cifar100.md): the CIFAR-100 benchmark
# recipe scaled to EPOCHS epochs (same lr, batch and decay factor; lr × 0.1 at 62.5 / 75 / 87.5 %
# of the epochs, where the 240-epoch recipe decays at 150 / 180 / 210), two studies:
#   bench        resnet56 → resnet20 with a released resnet56 (TEACHER_CKPT): baseline_resnet20,
#                then KD (α 0.9, T 4), DKD (β 2), DIST on the pair experiment resnet56_resnet20
#   replication  "Does KD really work?" (PreResNet-20, its own cosine recipe scaled to EPOCHS):
#                teacher_preresnet20 seed 0 → the store, baseline_preresnet20 seed 1 (an
#                independently trained network, exported to OUT/replication/independent),
#                self_preresnet20_logit seed 0 from that teacher, then the test agreement of
#                the two independent networks (OUT/replication/agreement_independent.md)
# Every job has a fixed sweep folder under OUT, so running the same command again skips what
# finished and resumes an interrupted job from its last.ckpt (nothing is lost when a session ends).
# Usage: scripts/cifar100_cpu_study.sh [--dry-run] [HYDRA_OVERRIDE ...]
#   e.g. TEACHER_CKPT=teachers/cifar100_resnet56-f2eff4c8.pt DATA_ROOT=data/cifar100 scripts/cifar100_cpu_study.sh
#        STUDIES=replication EPOCHS=16 scripts/cifar100_cpu_study.sh --dry-run
# Env: STUDIES (default "bench replication"), METHODS (bench, default "kd dkd dist"), EPOCHS
#      (default 8), OUT (default logs/cifar100_cpu), DATA_ROOT (holds cifar-100-python/; default
#      data), TEACHER_CKPT (the released resnet56 file; needed by the bench study), PYTHON.
# Then: python -m kdlab.report $OUT/bench --reference cifar100; python -m kdlab.report $OUT/replication
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
source "$(dirname "${BASH_SOURCE[0]}")/_sweep_lib.sh"
parse_args "$@"

STUDIES=${STUDIES:-bench replication}
METHODS=${METHODS:-kd dkd dist}
EPOCHS=${EPOCHS:-8}
OUT=${OUT:-logs/cifar100_cpu}
DATA_ROOT=${DATA_ROOT:-data}
TEACHER_CKPT=${TEACHER_CKPT:-}

fail() { echo "error: $*" >&2; exit 2; }
[[ "$EPOCHS" =~ ^[0-9]+$ && "$EPOCHS" -ge 4 ]] || fail "EPOCHS must be an integer ≥ 4, got '$EPOCHS'"
for s in $STUDIES; do
  [[ "$s" == bench || "$s" == replication ]] || fail "unknown study '$s'; STUDIES takes bench, replication"
done
for m in $METHODS; do
  [[ "$m" =~ ^(kd|dkd|dist)$ ]] || fail "unknown method '$m'; METHODS takes some of: kd dkd dist"
done
if [[ " $STUDIES " == *" bench "* && $DRY_RUN -eq 0 && ! -f "$TEACHER_CKPT" ]]; then
  fail "the bench study needs TEACHER_CKPT=<the released cifar100_resnet56-f2eff4c8.pt>, got '$TEACHER_CKPT'"
fi

# decay epochs at 62.5 / 75 / 87.5 % of EPOCHS, rounded to the nearest epoch
milestones() {
  local e=$1
  echo "[$(((e * 625 + 500) / 1000)),$(((e * 750 + 500) / 1000)),$(((e * 875 + 500) / 1000))]"
}

DATA="data=cifar100 data.root=$DATA_ROOT data.verify=structure data.download=false"
EPOCH_ARGS="trainer.max_epochs=$EPOCHS"
STORE="paths.teachers=$OUT/teachers"

if [[ " $STUDIES " == *" bench "* ]]; then
  BENCH="$DATA $EPOCH_ARGS scheduler.milestones=$(milestones "$EPOCHS")"
  # shellcheck disable=SC2086  # word splitting of the override lists is intended
  sweep +experiment=baseline_resnet20 seed=0 $BENCH "hydra.sweep.dir=$OUT/bench/baseline_resnet20"
  for m in $METHODS; do
    case "$m" in
      kd) margs="distill=logit method=logit distill.alpha=0.9 distill.temperature=4" ;;
      dkd) margs="distill=dkd method=dkd ~distill.alpha ~distill.temperature distill.terms.dkd.beta=2.0" ;;
      dist) margs="distill=dist method=dist ~distill.alpha ~distill.temperature" ;;
    esac
    # shellcheck disable=SC2086
    sweep +experiment=resnet56_resnet20 seed=0 $margs $BENCH "teacher.ckpt=$TEACHER_CKPT" \
      "hydra.sweep.dir=$OUT/bench/resnet56_resnet20_$m"
  done
fi

if [[ " $STUDIES " == *" replication "* ]]; then
  REPL="$DATA $EPOCH_ARGS"
  # shellcheck disable=SC2086
  sweep +experiment=teacher_preresnet20 seed=0 $REPL $STORE "hydra.sweep.dir=$OUT/replication/teacher_preresnet20"
  # the independent network exports its weights too, to a store of its own (not a teacher)
  INDEPENDENT=$OUT/replication/independent
  # shellcheck disable=SC2086
  sweep +experiment=baseline_preresnet20 seed=1 $REPL export_teacher=true "paths.teachers=$INDEPENDENT" \
    "hydra.sweep.dir=$OUT/replication/baseline_preresnet20"
  # shellcheck disable=SC2086
  sweep +experiment=self_preresnet20_logit seed=0 teacher.seed=0 $REPL $STORE \
    "hydra.sweep.dir=$OUT/replication/self_preresnet20_logit"
  # the study's yardstick of fidelity: test agreement of the two independently trained networks
  step "$PYTHON" -m kdlab.analysis agreement "$OUT/teachers/cifar100/preresnet20/seed0.ckpt" \
    "$INDEPENDENT/cifar100/preresnet20/seed1.ckpt" --data-root "$DATA_ROOT" --verify structure \
    --out "$OUT/replication/agreement_independent.md"
fi

finish
