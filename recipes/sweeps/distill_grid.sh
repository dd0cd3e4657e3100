#!/usr/bin/env bash
# Distillation grid of MobileNet students (recipes/student_mobilenet_baseline.yaml):
#   dropout {0, 0.4} × distill weight {0, 7, 64, 128} × optimizer {sgd, adamw}, 16 runs,
# each in OUTDIR/do<dropout>_dw<weight>_<optimizer>; complete runs are skipped, interrupted
# ones resumed. At the end prints `distill report OUTDIR/*`.
#
# Usage: recipes/sweeps/distill_grid.sh DATA STORE OUTDIR
#   DATA   training images (class folders, file list or train.rec folder)
#   STORE  teacher embedding store of DATA made by `distill embed`
# Environment: PROFILE=tiny — a quick check on a few ORL people: recipes/orl/student_tiny.yaml
#   (MobileNet alpha 0.25, 1 epoch, batch 30), dropout 0 × weight {0, 64} × sgd.
#   RECIPE overrides the recipe; DISTILL, TRAIN_ARGS, EVAL: see _common.sh.
set -euo pipefail
if [[ $# -ne 3 ]]; then
    echo "usage: $0 DATA STORE OUTDIR" >&2
    exit 2
fi
DATA=$1 STORE=$2 OUTDIR=$3
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

case "${PROFILE:-full}" in
    full)
        RECIPE=${RECIPE:-$SWEEP_ROOT/recipes/student_mobilenet_baseline.yaml}
        DROPOUTS=(0 0.4) WEIGHTS=(0 7 64 128) OPTIMIZERS=(sgd adamw) ;;
    tiny)
        RECIPE=${RECIPE:-$SWEEP_ROOT/recipes/orl/student_tiny.yaml}
        DROPOUTS=(0) WEIGHTS=(0 64) OPTIMIZERS=(sgd) ;;
    *)
        echo "PROFILE must be full or tiny, got '$PROFILE'" >&2
        exit 2 ;;
esac

for dropout in "${DROPOUTS[@]}"; do
    for weight in "${WEIGHTS[@]}"; do
        for optimizer in "${OPTIMIZERS[@]}"; do
            # AdamW wants far smaller steps than SGD: lr 1e-3 → 1e-4 → 1e-5, decoupled wd 0.05.
            opt_args=()
            if [[ $optimizer == adamw && ${PROFILE:-full} == full ]]; then
                opt_args=(--set stages.0.lr=0.001 --set stages.1.lr=0.0001 --set stages.2.lr=0.00001
                          --set optimizer.weight_decay=0.05)
            fi
            run_one "$OUTDIR/do${dropout}_dw${weight}_${optimizer}" "$RECIPE" \
                --set "data.train=$DATA" --set "data.store=$STORE" \
                --set "model.dropout=$dropout" --set "distill.weight=$weight" \
                --set "optimizer.name=$optimizer" "${opt_args[@]}"
        done
    done
done
finish "$OUTDIR"
