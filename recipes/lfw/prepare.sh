#!/usr/bin/env bash
# Real faces for the distillation experiments: LFW (deep-funneled) + the glint24 sample.
#
#   recipes/lfw/prepare.sh LFW GLINT OUT
#     LFW    LFW folder: images/<Name>/<Name>_NNNN.jpg, peopleDevTrain.txt, pairsDevTest.txt, pairs.txt
#     GLINT  112×112 ArcFace-aligned class folders (glint24; 10 of its people are View 1
#            training people spelled as in LFW, merged into one class each)
#     OUT    writes:
#       aligned/        every LFW photo, MTCNN 5-point warp onto the ArcFace template (the face
#                       nearest the photo centre; photos without a face: centre crop, listed in
#                       aligned/align_report.json)
#       center/         every LFW photo as a plain centre crop (128 of 250 px → 112), for comparison
#       train.csv       View 1 training people (aligned) + glint24; people with one photo are
#                       kept — recipes unlabel them with data.min_class_images: 2
#       view1_test.bin  View 1 test pairs (pairsDevTest.txt, 500 + 500, laid out fold by fold)
#       view2.bin       View 2 (pairs.txt, 10 folds × 600) — only for models that saw none of its
#                       people (LFW View 1 training and glint24 people appear in View 2)
#       center_train.csv, center_view1_test.bin   the same from the centre crops
# Resumable: alignment skips photos already done; the lists and .bin files are rewritten.
set -euo pipefail
if [[ $# -ne 3 ]]; then
    echo "usage: $0 LFW GLINT OUT" >&2
    exit 2
fi
LFW=$1 GLINT=$2 OUT=$3
DISTILL=${DISTILL:-distill}
mkdir -p "$OUT"

"$DISTILL" align "$LFW/images" "$OUT/aligned" --pick center --fallback center --center-crop 0.512 --no-progress
"$DISTILL" align "$LFW/images" "$OUT/center" --detector center --center-crop 0.512 --no-progress

for variant in aligned center; do
    prefix=""
    [[ $variant == center ]] && prefix="center_"
    "$DISTILL" convert folders2list "$OUT/${prefix}train.csv" \
        --from "$OUT/$variant:$LFW/peopleDevTrain.txt" --from "$GLINT"
    "$DISTILL" make-bin --pairs-file "$LFW/pairsDevTest.txt" --images "$OUT/$variant" \
        --out "$OUT/${prefix}view1_test.bin"
done
"$DISTILL" make-bin --pairs-file "$LFW/pairs.txt" --images "$OUT/aligned" --out "$OUT/view2.bin"
