#!/usr/bin/env bash
# The real-faces distillation table (README "Results on real faces"), end to end:
#   data (recipes/lfw/prepare.sh) → dlib teacher store → own teacher (trained, then embedded)
#   → students (plain and distilled, 3 seeds for the headline pair) → teacher evals →
#   `distill report --final` (final models, seeds merged) and `distill plot`.
# Every step is resumable: complete runs and stores are skipped, interrupted ones continued.
#
# Usage: recipes/sweeps/lfw_distill.sh LFW GLINT OUT
#   LFW    the LFW folder (images/, peopleDevTrain.txt, pairsDevTest.txt, pairs.txt)
#   GLINT  the glint24 folder (112×112 ArcFace crops, one folder per person)
#   OUT    everything goes here: data/, stores/, runs/, evals/, table.md, curves.png
# Environment: SEEDS (default "0 1 2") for the headline runs; ONLY_HEADLINE=1 skips the
#   single-seed ablations; DISTILL, TRAIN_ARGS: see _common.sh. Needs the [dlib] extra.
#   Y1=PATH/model-0000.params (InsightFace's MobileFaceNet y1, an ArcFace teacher; never
#   shipped here) adds its store and students: L2 at weights 7, 64 and auto, AdaDistill, EKD,
#   AdaDistill + L2.
# Time on 2 CPU cores: data ~45 min (MTCNN), dlib store ~40 min, own teacher ~70 min, each
# student 15–25 min.
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 LFW GLINT OUT" >&2; exit 2; }
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
LFW=$1 GLINT=$2 OUT=$3
RECIPES=$SWEEP_ROOT/recipes/lfw
DATA=$OUT/data STORES=$OUT/stores RUNS=$OUT/runs EVALS=$OUT/evals
mkdir -p "$STORES" "$RUNS" "$EVALS"

DISTILL=$DISTILL bash "$RECIPES/prepare.sh" "$LFW" "$GLINT" "$DATA"
COMMON=(--set "data.train=$DATA/train.csv" --set "data.eval=[$DATA/view1_test.bin]")

# --- teachers ---------------------------------------------------------------------------
# dlib: one process per core (dlib runs one core each); the store is centred when complete.
for worker in 0 1; do
    "$DISTILL" embed --recipe "$RECIPES/embed_dlib.yaml" --data "$DATA/train.csv" --out "$STORES/dlib" \
        --num-workers 2 --worker-index "$worker" --no-progress &
done
wait
"$DISTILL" embed --recipe "$RECIPES/embed_dlib.yaml" --data "$DATA/train.csv" --out "$STORES/dlib" --no-progress
if [[ ! -f $STORES/dlib_raw/manifest.json ]]; then       # the same targets, as stored (no centring)
    rm -rf "$STORES/dlib_raw.tmp" && cp -r "$STORES/dlib" "$STORES/dlib_raw.tmp"
    "$DISTILL" store condition "$STORES/dlib_raw.tmp" --mode none && mv "$STORES/dlib_raw.tmp" "$STORES/dlib_raw"
fi
"$DISTILL" store info "$STORES/dlib"

run_one "$RUNS/teacher_own" "$RECIPES/teacher_mobilenet.yaml" "${COMMON[@]}"
"$DISTILL" embed --teacher "$RUNS/teacher_own/model.keras" --data "$DATA/train.csv" --out "$STORES/own" \
    --flip --condition center --batch-size 128 --shard-size 2000 --no-progress
"$DISTILL" store info "$STORES/own"

# --- students ---------------------------------------------------------------------------
# Relation terms are weighted so that their gradient on the embeddings at the start equals
# the L2 term's at weight 7 (measured on this data: L2 0.0233, RKD distance 0.00017,
# similarity 0.00051, critical_rank_kl (then named ekd) 0.369 per unit weight; classification 0.198), i.e. a fair contest.
DLIB=(--set "data.store=$STORES/dlib")
for seed in ${SEEDS:-0 1 2}; do
    run_one "$RUNS/plain_s$seed" "$RECIPES/student.yaml" "${COMMON[@]}" --set "seed=$seed"
    run_one "$RUNS/dlib_l2_w7_s$seed" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" "${DLIB[@]}" --set "seed=$seed"
done
if [[ -z ${ONLY_HEADLINE:-} ]]; then       # one seed each: what each ingredient adds
    run_one "$RUNS/dlib_l2_w64" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" "${DLIB[@]}" --set distill.weight=64
    run_one "$RUNS/dlib_l2_w7_uncentred" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" --set "data.store=$STORES/dlib_raw"
    run_one "$RUNS/dlib_l2_w7_labelled_only" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" "${DLIB[@]}" \
        --set data.use_unlabeled=false
    run_one "$RUNS/dlib_rkd" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" "${DLIB[@]}" \
        --set distill.weight=0 --set terms.rkd.name=rkd_distance --set terms.rkd.weight=960
    run_one "$RUNS/dlib_sp" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" "${DLIB[@]}" \
        --set distill.weight=0 --set terms.sp.name=similarity --set terms.sp.weight=320
    run_one "$RUNS/dlib_critical_rank_kl" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" "${DLIB[@]}" \
        --set distill.weight=0 --set terms.crkl.name=critical_rank_kl --set terms.crkl.weight=0.44
    run_one "$RUNS/dlib_ekd_published" "$RECIPES/student_dlib_ekd.yaml" "${COMMON[@]}" "${DLIB[@]}"
    run_one "$RUNS/plain_pk" "$RECIPES/student.yaml" "${COMMON[@]}" \
        --set data.sampler=identity_balanced --set data.images_per_identity=4   # EKD's sampler alone
    run_one "$RUNS/dlib_distill_only" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" "${DLIB[@]}" --set loss.weight=0
    run_one "$RUNS/own_l2_w7" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" --set "data.store=$STORES/own"
fi

# --- the ArcFace teacher (InsightFace MobileFaceNet y1), and auto / AdaDistill / EKD ---------
EVAL_JSONS=(--evals "$EVALS/dlib.json" --evals "$EVALS/own.json")
run_one "$RUNS/dlib_l2_auto" "$RECIPES/student_dlib.yaml" "${COMMON[@]}" "${DLIB[@]}" --set distill.weight=auto
run_one "$RUNS/dlib_adadistill" "$RECIPES/student_dlib_adadistill.yaml" "${COMMON[@]}" "${DLIB[@]}"
if [[ -n ${Y1:-} ]]; then
    "$DISTILL" embed --recipe "$RECIPES/embed_y1.yaml" --teacher "$Y1" --data "$DATA/train.csv" \
        --out "$STORES/y1" --no-progress
    "$DISTILL" store info "$STORES/y1"
    Y1S=(--set "data.store=$STORES/y1")
    for seed in ${SEEDS:-0 1 2}; do
        run_one "$RUNS/y1_l2_auto_s$seed" "$RECIPES/student_y1.yaml" "${COMMON[@]}" "${Y1S[@]}" --set "seed=$seed"
        run_one "$RUNS/y1_l2_w7_s$seed" "$RECIPES/student_y1.yaml" "${COMMON[@]}" "${Y1S[@]}" \
            --set distill.weight=7 --set "seed=$seed"
    done
    run_one "$RUNS/y1_l2_w64" "$RECIPES/student_y1.yaml" "${COMMON[@]}" "${Y1S[@]}" --set distill.weight=64
    run_one "$RUNS/y1_adadistill_s0" "$RECIPES/student_y1_adadistill.yaml" "${COMMON[@]}" "${Y1S[@]}"
    run_one "$RUNS/y1_ekd" "$RECIPES/student_y1_ekd.yaml" "${COMMON[@]}" "${Y1S[@]}"
    run_one "$RUNS/y1_adadistill_l2" "$RECIPES/student_y1_adadistill_l2.yaml" "${COMMON[@]}" "${Y1S[@]}"
    [[ -f $EVALS/y1.json ]] || "$DISTILL" eval --model "$Y1" --bin "$DATA/view1_test.bin" \
        --bin "$DATA/center_view1_test.bin" --json "$EVALS/y1.json"
    EVAL_JSONS+=(--evals "$EVALS/y1.json")
fi

# --- teacher evaluations and the table ----------------------------------------------------
[[ -f $EVALS/dlib.json ]] || "$DISTILL" eval --model teachers.dlib_resnet:embed \
    --bin "$DATA/view1_test.bin" --bin "$DATA/view2.bin" --bin "$DATA/center_view1_test.bin" --json "$EVALS/dlib.json"
[[ -f $EVALS/own.json ]] || "$DISTILL" eval --model "$RUNS/teacher_own/model.keras" \
    --bin "$DATA/view1_test.bin" --json "$EVALS/own.json"
students=()
for dir in "$RUNS"/*/; do
    [[ $(basename "$dir") == teacher_* ]] || students+=("${dir%/}")
done
"$DISTILL" report "${students[@]}" --final "${EVAL_JSONS[@]}" \
    --out "$OUT/table.md"
cat "$OUT/table.md"
"$DISTILL" plot "$RUNS"/plain_s0 "$RUNS"/dlib_l2_w7_s0 "$RUNS"/dlib_l2_w64 --metrics view1_test,loss.classification,loss.distill \
    --out "$OUT/curves.png"
finish_failures() { if ((${#FAILED[@]})); then echo "failed runs: ${FAILED[*]}" >&2; exit 1; fi; }
finish_failures
