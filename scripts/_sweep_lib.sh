#!/usr/bin/env bash
# Shared by scripts/train_teachers.sh and scripts/run_ablation.sh (sourced, not run).
# Parses --launcher basic|local|slurm, --dry-run and -h; everything else goes to Hydra as is.
# Each sweep is one `python -m kdlab.train -m ...` call; with --launcher slurm the calls run in
# parallel (each waits on its own job array), otherwise one after the other.
set -euo pipefail

PYTHON=${PYTHON:-python}
LAUNCHER=basic
DRY_RUN=0
EXTRA=()
TOTAL_JOBS=0
PIDS=()

parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --launcher) LAUNCHER=${2:?--launcher needs basic, local or slurm}; shift 2 ;;
      --launcher=*) LAUNCHER=${1#*=}; shift ;;
      --dry-run) DRY_RUN=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) EXTRA+=("$1"); shift ;;
    esac
  done
  case "$LAUNCHER" in
    basic|local|slurm) ;;
    *) echo "error: --launcher must be basic, local or slurm, got '$LAUNCHER'" >&2; exit 2 ;;
  esac
}

# Number of jobs of one sweep: the product of the sizes of comma lists (key=a,b,c) in its args;
# bracketed values (teacher.seeds=[0,1,2]) are single values, not sweeps.
count_jobs() {
  local n=1 arg value items
  for arg in "$@"; do
    [[ "$arg" == *=* ]] || continue
    value=${arg#*=}
    [[ "$value" == *,* && "$value" != \[* && "$value" != \(* && "$value" != \{* ]] || continue
    IFS=, read -r -a items <<<"$value"
    n=$((n * ${#items[@]}))
  done
  echo "$n"
}

# sweep ARGS...: one Hydra multirun (ARGS are Hydra overrides: +experiment=…, distill.alpha=…, seed=…).
sweep() {
  local args=("$@")
  if [[ "$LAUNCHER" != basic ]]; then args+=("hydra/launcher=$LAUNCHER"); fi
  if [[ ${#EXTRA[@]} -gt 0 ]]; then args+=("${EXTRA[@]}"); fi
  local n
  n=$(count_jobs "${args[@]}")
  TOTAL_JOBS=$((TOTAL_JOBS + n))
  local cmd=("$PYTHON" -m kdlab.train -m "${args[@]}")
  if [[ $DRY_RUN -eq 1 ]]; then
    printf '%s ' "[$n jobs]"
    show_cmd "${cmd[@]}"
  elif [[ "$LAUNCHER" == slurm ]]; then
    "${cmd[@]}" &
    PIDS+=($!)
  else
    "${cmd[@]}" || FAILED=$((${FAILED:-0} + 1))
  fi
}

# show_cmd CMD...: the command as one shell line (words that need it quoted)
show_cmd() {
  local a out=()
  for a in "$@"; do
    if [[ "$a" =~ ^[][A-Za-z0-9_.,/=+:@%-]*$ ]]; then out+=("$a"); else out+=("$(printf '%q' "$a")"); fi
  done
  echo "${out[*]}"
}

# step CMD...: one command that is not a sweep (an analysis after the runs): shown under
# --dry-run, else run, a failure counted like a failed sweep
step() {
  if [[ $DRY_RUN -eq 1 ]]; then show_cmd "$@"; else "$@" || FAILED=$((${FAILED:-0} + 1)); fi
}

# finish: wait for background sweeps, print the total, exit non-zero when a sweep had failures.
finish() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    wait "$pid" || FAILED=$((${FAILED:-0} + 1))
  done
  echo "total: $TOTAL_JOBS jobs"
  if [[ ${FAILED:-0} -gt 0 ]]; then
    echo "error: ${FAILED} sweep(s) had failed jobs (see each sweep's sweep_summary.json)" >&2
    exit 1
  fi
}
