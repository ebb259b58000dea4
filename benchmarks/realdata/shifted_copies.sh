#!/usr/bin/env bash
# Harmless copies of the real in-distribution test images (cropped, padded, intensities x 1.2; see
# benchmarks/shifted_images.py), scored by every method of an OOD experiment's model and evaluated against the
# originals: the share of copies each detector flags (ideal 0) and the AUC of copies vs originals (ideal 0.5).
# Run after the OOD experiment of run_experiments.sh, with its settings:
#   SUBJECTS=1 BUDGET=40 SEED=0 TABLES=IV OOD_METHODS="..." bash benchmarks/realdata/run_experiments.sh
#   SUBJECTS=1 BUDGET=40 SEED=0 OOD_METHODS="..." bash benchmarks/realdata/shifted_copies.sh
# SHIFTED_METHODS="..." scores the copies with fewer methods (mcdropout's passes cost most).
# Writes $WORK/ood_<run>/shifted_{crop,pad,scale}.md/.json. A copy is the same subject as its original, and
# so are a mirror ('<id>m') and the crops of one patient (liver CT, liver MR).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/common.sh"
DATASET=$(basename "$(ls -d "$nnUNet_raw"/Dataset"$ID"_*)")
[ -d "$OOD_RUN/shifted_images" ] || python "$HERE/../shifted_images.py" -i "$nnUNet_raw/$DATASET/imagesTs" -o "$OOD_RUN/shifted_images"
[ -f "$OOD_RUN/scores/shifted/ood_scores.json" ] ||
  nnunet_mt_ood score -i "$OOD_RUN/shifted_images" -o "$OOD_RUN/scores/shifted" -d "$ID" -c 3d_fullres -f 0 -tr "$OOD_TR" \
      -device cpu --disable_tta -npp 0 -nps 0 --mc_samples 5 --method ${SHIFTED_METHODS:-${OOD_METHOD_LIST[*]}}
# subject: the case id without a copy suffix, a mirror's 'm' or a crop number of the one liver patient
SUBJECT='^(D90[23]_[a-z]+[A-Z]?|.*?)(_crop[0-9]+)?m?(_crop|_pad|_scale)?$'
for kind in crop pad scale; do
  nnunet_mt_ood evaluate "$OOD_RUN/scores/in_distribution/ood_scores.json" "$OOD_RUN/scores/shifted/ood_scores.json" \
      --ood "*_$kind" --id '*[0-9mB]' --subject_pattern "$SUBJECT" -o "$OOD_RUN/shifted_$kind"
  echo "harmless copies: $kind (sensitivity = the share of copies flagged)"; cat "$OOD_RUN/shifted_$kind.md"
done
