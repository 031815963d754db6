#!/usr/bin/env bash
# The CIFAR-100 KD benchmark (CRD, Tian et al. ICLR 2020, Tables 1–2; + DKD, DIST, ReviewKD):
#   13 teacher → student pairs (pair experiments conf/experiment/<teacher>_<student>.yaml)
#   × 14 methods (kd = distill=logit with α 0.9, T 4; fitnet at sp cc vid rkd pkt nst ft crd dkd
#   dist reviewkd with their published weights) × seeds 0,1,2, plus the baseline_<student> runs:
#   13 × 14 × 3 + 9 × 3 = 573 jobs. Recipe: recipe/cifar100_bench (240 epochs, batch 64, SGD 0.05,
#   0.01 for MobileNetV2/ShuffleNets, ×0.1 at 150/180/210). Per pair it passes the published DKD β
#   (mdistiller configs/cifar100/dkd/*.yaml) and ReviewKD weight (ReviewKD script/reviewKD.sh).
# Teachers come from the teacher store (+experiment=teacher_<arch>; paths.teachers=…) or, with
# TEACHERS=DIR, from the released checkpoints as teacher.ckpt=…: DIR/<arch>_vanilla/ckpt_epoch_240.pth
# (RepDistiller scripts/fetch_pretrained_teachers.sh: save/models) or DIR/cifar_teachers/<arch>_vanilla/…
# (mdistiller's cifar_teachers.tar).
# Usage: scripts/cifar100_benchmark.sh [--launcher basic|local|slurm] [--dry-run] [HYDRA_OVERRIDE ...]
#   e.g. scripts/cifar100_benchmark.sh --dry-run
#        TEACHERS=download_ckpts scripts/cifar100_benchmark.sh --launcher slurm hydra.launcher.partition=gpu
#        PAIRS="resnet32x4_resnet8x4 vgg13_vgg8" METHODS="kd dkd" SEEDS=0 scripts/cifar100_benchmark.sh
# Env: PAIRS (default: all 13), METHODS (default: all 14), SEEDS (default 0,1,2), TEACHERS (default:
#      the store), BASELINES (1: baseline_<student> of the selected pairs, 0: none), PYTHON.
# Then: python -m kdlab.report logs/multiruns --reference cifar100 (published numbers beside kdlab's)
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
source "$(dirname "${BASH_SOURCE[0]}")/_sweep_lib.sh"
parse_args "$@"

ALL_PAIRS="resnet56_resnet20 resnet110_resnet20 resnet110_resnet32 resnet32x4_resnet8x4 \
wrn_40_2_wrn_16_2 wrn_40_2_wrn_40_1 vgg13_vgg8 vgg13_mobilenetv2 r50_mobilenetv2 r50_vgg8 \
resnet32x4_shufflev1 resnet32x4_shufflev2 wrn_40_2_shufflev1"
ALL_METHODS="kd fitnet at sp cc vid rkd pkt nst ft crd dkd dist reviewkd"
SEEDS=${SEEDS:-0,1,2}
PAIRS=${PAIRS:-$ALL_PAIRS}
METHODS=${METHODS:-$ALL_METHODS}
BASELINES=${BASELINES:-1}
TEACHERS=${TEACHERS:-}

# pair_info PAIR → "teacher student dkd_beta reviewkd_weight" (published per-pair settings:
# DKD β of mdistiller configs/cifar100/dkd/*.yaml, 8 where a pair has none; ReviewKD weight of
# ReviewKD CIFAR-100/script/reviewKD.sh, kdlab's default 5 where the script has no such pair)
pair_info() {
  case "$1" in
    resnet56_resnet20) echo resnet56 resnet20 2.0 0.6 ;;
    resnet110_resnet20) echo resnet110 resnet20 8.0 5.0 ;;
    resnet110_resnet32) echo resnet110 resnet32 2.0 1.0 ;;
    resnet32x4_resnet8x4) echo resnet32x4 resnet8x4 8.0 5.0 ;;
    wrn_40_2_wrn_16_2) echo wrn_40_2 wrn_16_2 6.0 5.0 ;;
    wrn_40_2_wrn_40_1) echo wrn_40_2 wrn_40_1 6.0 5.0 ;;
    vgg13_vgg8) echo vgg13 vgg8 6.0 5.0 ;;
    vgg13_mobilenetv2) echo vgg13 mobilenetv2 6.0 5.0 ;;
    r50_mobilenetv2) echo r50 mobilenetv2 8.0 5.0 ;;
    r50_vgg8) echo r50 vgg8 8.0 5.0 ;;
    resnet32x4_shufflev1) echo resnet32x4 shufflev1 8.0 5.0 ;;
    resnet32x4_shufflev2) echo resnet32x4 shufflev2 8.0 8.0 ;;
    wrn_40_2_shufflev1) echo wrn_40_2 shufflev1 8.0 5.0 ;;
    *) return 1 ;;
  esac
}

# method_args METHOD DKD_BETA REVIEWKD_WEIGHT → the overrides that select it on a pair experiment
NO_KD="~distill.alpha ~distill.temperature"  # the pair's KD settings, which other methods do not take
method_args() {
  case "$1" in
    kd) echo "distill=logit method=logit distill.alpha=0.9 distill.temperature=4" ;;  # 0.1·CE + 0.9·KD
    dkd) echo "distill=dkd method=dkd $NO_KD distill.terms.dkd.beta=$2" ;;
    reviewkd) echo "distill=reviewkd method=reviewkd $NO_KD distill.weights.reviewkd=$3" ;;
    fitnet|at|sp|cc|vid|rkd|pkt|nst|ft|crd|dist) echo "distill=$1 method=$1 $NO_KD" ;;
    *) return 1 ;;
  esac
}

# the released checkpoint of a benchmark teacher under $TEACHERS (RepDistiller or mdistiller layout)
teacher_ckpt() {
  local base=$TEACHERS name=$1
  [[ -d "$base/cifar_teachers" ]] && base=$base/cifar_teachers
  [[ "$name" == r50 ]] && name=ResNet50
  echo "${base%/}/${name}_vanilla/ckpt_epoch_240.pth"
}

fail() { echo "error: $*" >&2; exit 2; }
for pair in $PAIRS; do
  pair_info "$pair" >/dev/null || fail "unknown pair '$pair'; PAIRS takes some of: $ALL_PAIRS"
done
for m in $METHODS; do
  method_args "$m" 0 0 >/dev/null || fail "unknown method '$m'; METHODS takes some of: $ALL_METHODS"
done
if [[ -n "$TEACHERS" && $DRY_RUN -eq 0 ]]; then
  for pair in $PAIRS; do
    read -r t _ <<<"$(pair_info "$pair")"
    ckpt=$(teacher_ckpt "$t")
    [[ -f "$ckpt" ]] || fail "TEACHERS=$TEACHERS: no $ckpt" \
      "(expected DIR/<arch>_vanilla/ckpt_epoch_240.pth or DIR/cifar_teachers/<arch>_vanilla/…)"
  done
fi

if [[ "$BASELINES" == 1 ]]; then
  seen=" "
  for pair in $PAIRS; do
    read -r _ s _ <<<"$(pair_info "$pair")"
    [[ "$seen" == *" $s "* ]] && continue
    seen+="$s "
    sweep "+experiment=baseline_$s" "seed=$SEEDS"
  done
fi
for pair in $PAIRS; do
  read -r t _ beta weight <<<"$(pair_info "$pair")"
  teacher=()
  [[ -n "$TEACHERS" ]] && teacher=("teacher.ckpt=$(teacher_ckpt "$t")")
  for m in $METHODS; do
    read -r -a args <<<"$(method_args "$m" "$beta" "$weight")"
    sweep "+experiment=$pair" "${args[@]}" ${teacher[@]+"${teacher[@]}"} "seed=$SEEDS"
  done
done
finish
