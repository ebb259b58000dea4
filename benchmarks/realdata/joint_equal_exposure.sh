#!/usr/bin/env bash
# The joint model of table II trained until each source has had as many iterations as its dedicated model:
# with S sources sampled in equal shares, S x BUDGET epochs (4 x 15 = 60 here). Run after
#   BUDGET=15 TABLES=II bash benchmarks/realdata/run_experiments.sh
# (same WORK, NORMALIZATION, SEED); predicts each source's test set and evaluates it over the same region.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/common.sh"
EPOCHS="${EPOCHS:-60}"
TR="nnUNetTrainerMultiTaskCPU_${EPOCHS}epochs_seed${SEED}"
JOINT=$(basename "$nnUNet_raw"/Dataset${ID}_*)
nnUNet_n_proc_DA=0 nnUNetv2_train "$ID" 3d_fullres 0 -tr "$TR" -device cpu --c  # --c: resumes, or starts afresh
OUT="$WORK/joint_${EPOCHS}epochs_${NORMALIZATION}_seed${SEED}"
for dedicated in "$nnUNet_raw"/Dataset$((ID / 10))[1-9]_*; do  # the dedicated datasets: ids ID+1...
  name=$(basename "$dedicated"); name=${name#Dataset???_}
  nnUNetv2_predict -i "$dedicated/imagesTs" -o "$OUT/$name" -d "$JOINT" -c 3d_fullres -f 0 -tr "$TR" -p nnUNetPlans \
      -device cpu --save_probabilities --continue_prediction -npp 0 -nps 0 --disable_tta
  nnunet_mt evaluate -ref "$dedicated/labelsTs" -pred "$OUT/$name" -prob "$OUT/$name" -o "$OUT/$name/metrics.json" \
      --roi reference
done
