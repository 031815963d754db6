#!/usr/bin/env bash
# What only a GPU can show, in one command of at most 8 minutes on one H100/H200, offline:
# kdlab.bench rows of the CIFAR-100 benchmark's small-student pairs (resnet56 → resnet20,
# resnet32x4 → resnet8x4: baseline, logit KD from the view cache, DKD, CRD, ReviewKD) in bf16
# and fp32 with peak GPU memory, the teacher's fast path, torch.compile on/off, the cost of
# deterministic algorithms, a determinism check (two 50-step kdlab.train runs with
# trainer.deterministic=true → identical weights?) and bf16-mixed vs fp32 loss agreement.
#
#   bash scripts/device_check.sh [OUT] [--dry-run] [--smoke-cpu] [--data-root DIR] [--only STEPS]
#
# OUT (default ./device_check) receives device_check.json, device_check.md (the tables for
# docs/benchmarks.md) and logs/; both files are rewritten after every step, so a stopped run
# still returns what finished. --dry-run prints the steps and their time budgets. Without CUDA
# it stops with one line (exit 2). --smoke-cpu runs every step at toy sizes on the CPU: a
# development check of the chain, not a measurement. --data-root: a CIFAR-10 copy for the
# determinism runs (default: synthetic images). Steps: kdlab/bench/device_check.py.
#
# kdlab runs from this checkout (PYTHONPATH), not installed. Packages the machine lacks
# (hydra-core, omegaconf, antlr4-python3-runtime) travel as wheels in .whl/ (git-ignored) and
# are installed into /tmp/site when they do not import. Env: PYTHON (default python3).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
if [ -d .whl ] && ! "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl \
      || for w in .whl/*.whl; do "$PYTHON" -m zipfile -e "$w" /tmp/site; done  # pure-python wheels
    export PYTHONPATH=/tmp/site:$REPO
else
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
exec "$PYTHON" -m kdlab.bench.device_check "$@"
