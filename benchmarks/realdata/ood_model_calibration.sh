#!/usr/bin/env bash
# calibrate's rule (issue 32) on the real-data joint model of the OOD experiment: `nnunet_mt calibrate` fits T on
# the model's fold-0 validation cases and keeps the NLL fit, the ECE fit or T = 1 by held-out ECE (it prints
# validation ECE and NLL before and after); the test images' probabilities (saved by the experiment's scoring,
# T = 1) are then rescaled with the kept T and both are evaluated per source over the same voxels (reference
# box + 5 voxels). Run after the OOD experiment, with its settings:
#   SUBJECTS=1 BUDGET=40 SEED=0 OOD_METHODS="..." bash benchmarks/realdata/ood_model_calibration.sh
# Writes $OOD_RUN/calibration/{T1,calibrated}/metrics.json/.md.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/common.sh"
DATASET=$(basename "$(ls -d "$nnUNet_raw"/Dataset"$ID"_*)")
OUT="$OOD_RUN/calibration"
nnunet_mt calibrate -d "$ID" -c 3d_fullres -f 0 -tr "$OOD_TR" -device cpu --disable_tta
rm -rf "$OUT/calibrated"
nnunet_mt calibrate -d "$ID" -c 3d_fullres -f 0 -tr "$OOD_TR" --apply "$OOD_RUN/scores/in_distribution" -o "$OUT/calibrated"
mkdir -p "$OUT/T1"
nnunet_mt evaluate -ref "$nnUNet_raw/$DATASET/labelsTs" -pred "$OOD_RUN/scores/in_distribution" -d "$ID" --roi reference \
    -prob "$OOD_RUN/scores/in_distribution" -o "$OUT/T1/metrics.json" > /dev/null
nnunet_mt evaluate -ref "$nnUNet_raw/$DATASET/labelsTs" -pred "$OUT/calibrated" -prob "$OUT/calibrated" -d "$ID" \
    --roi reference -o "$OUT/calibrated/metrics.json" > /dev/null
for variant in T1 calibrated; do echo "== $variant"; cat "$OUT/$variant/metrics.md"; done
