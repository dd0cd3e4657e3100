#!/usr/bin/env bash
# The same student distilled from each teacher store: one run per store, in
# OUTDIR/teacher_<store folder name>, dropout 0.4 and distill weight 64 (the reference
# students, recipes/student_mobilenet_distill_*.yaml); complete runs are skipped,
# interrupted ones resumed. At the end prints `distill report OUTDIR/*` (its data.store
# column names each store's teacher).
#
# Usage: recipes/sweeps/teacher_grid.sh DATA OUTDIR STORE [STORE ...]
# Environment: WEIGHT [64], DROPOUT [0.4]; PROFILE=tiny uses recipes/orl/student_tiny.yaml
#   (a quick check on ORL); RECIPE overrides the recipe; DISTILL, TRAIN_ARGS, EVAL: see _common.sh.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: $0 DATA OUTDIR STORE [STORE ...]" >&2
    exit 2
fi
DATA=$1 OUTDIR=$2
shift 2
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

case "${PROFILE:-full}" in
    full) RECIPE=${RECIPE:-$SWEEP_ROOT/recipes/student_mobilenet_baseline.yaml} ;;
    tiny) RECIPE=${RECIPE:-$SWEEP_ROOT/recipes/orl/student_tiny.yaml} ;;
    *) echo "PROFILE must be full or tiny, got '$PROFILE'" >&2; exit 2 ;;
esac

for store in "$@"; do
    run_one "$OUTDIR/teacher_$(basename "${store%/}")" "$RECIPE" \
        --set "data.train=$DATA" --set "data.store=$store" \
        --set "model.dropout=${DROPOUT:-0.4}" --set "distill.weight=${WEIGHT:-64}"
done
finish "$OUTDIR"
