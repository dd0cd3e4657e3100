# Shared by the sweep scripts (sourced, not run): one run per directory, resumable.
#   DISTILL     the distill executable            [distill]
#   TRAIN_ARGS  extra arguments for every `distill train`, e.g. "--no-progress"
#   EVAL        comma-separated .bin sets → --set data.eval=[...]  [the recipe's]
# A run whose directory is complete (`distill run-status`) is skipped, one with a
# checkpoint is resumed, any other is trained from its recipe. A failed run does not stop
# the sweep; the script exits 1 at the end if any failed.

DISTILL=${DISTILL:-distill}
SWEEP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FAILED=()

eval_overrides() {
    if [[ -n "${EVAL:-}" ]]; then
        printf -- '--set\ndata.eval=[%s]\n' "$EVAL"
    fi
}

# run_one DIR RECIPE [--set key=value ...]
run_one() {
    local dir=$1 recipe=$2
    shift 2
    local state
    state=$("$DISTILL" run-status "$dir" | cut -f1) || true
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of words
    case "$state" in
        complete)
            echo "== $dir: complete, skipped" ;;
        resume)
            echo "== $dir: resuming"
            "$DISTILL" train --resume "$dir" ${TRAIN_ARGS:-} || FAILED+=("$dir") ;;
        new)
            echo "== $dir: training"
            mkdir -p "$(dirname "$dir")"
            local extra=()
            mapfile -t extra < <(eval_overrides)
            "$DISTILL" train --recipe "$recipe" "$@" "${extra[@]}" --run-dir "$dir" ${TRAIN_ARGS:-} \
                || FAILED+=("$dir") ;;
        *)
            echo "== $dir: cannot read its state (see the error above)" >&2
            FAILED+=("$dir") ;;
    esac
}

# finish OUTDIR: the comparison table of every run directory in OUTDIR; exit 1 on failures.
finish() {
    local outdir=$1 runs=() dir
    for dir in "$outdir"/*/; do
        [[ -f "$dir/recipe.yaml" ]] && runs+=("${dir%/}")
    done
    echo
    echo "\$ distill report $outdir/*"
    if ((${#runs[@]})); then
        "$DISTILL" report "${runs[@]}"
    else
        echo "(no runs)"
    fi
    if ((${#FAILED[@]})); then
        echo "failed runs: ${FAILED[*]}" >&2
        exit 1
    fi
}
