#!/usr/bin/env bash
# Every OOD method on the demo model (issue 32, point 5, demo half): OOD AUC with subject-bootstrap intervals and
# failure detection (in-distribution test images vs the held-out hippocampus MR and pancreas CT datasets), then
# the same in-distribution images cropped, padded and intensity-scaled (benchmarks/shifted_images.py), which no
# detector should flag, as a comparison of its own. Needs the model of `make demo` (its spectral, mcdropout,
# mahalanobis, knn, msp and entropy fits); fits the rest. Then the fold ensemble (folds 0 + ENSEMBLE_FOLDS, default
# 1) and the seed ensemble (seed 0 + ENSEMBLE_SEEDS, default 1) of the same recipe on the same images, training
# their other members (set either to "" to leave it out). About 6 minutes on 2 cores, 16 more with the ensembles.
#   make demo && PATH=$PWD/.venv/bin:$PATH bash benchmarks/ood_comparison.sh   (DEMO_OUTPUT=... another demo folder)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT=${DEMO_OUTPUT:-$ROOT/demo_output}
WORK=${WORK:-$OUT/ood_comparison}
TRAINER=${DEMO_TRAINER:-nnUNetTrainerMultiTaskCPU_dropout_12epochs}  # the demo's model (scripts/demo.sh)
MC=${DEMO_MC_SAMPLES:-3}
ENSEMBLE_FOLDS=${ENSEMBLE_FOLDS-1} ENSEMBLE_SEEDS=${ENSEMBLE_SEEDS-1}
export nnUNet_raw=$OUT/nnUNet_raw nnUNet_preprocessed=$OUT/nnUNet_preprocessed nnUNet_results=$OUT/nnUNet_results
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-1} nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-0}
METHODS=(spectral spectral_centred spectral_multilayer mahalanobis knn ihf msp entropy mcdropout)
MODEL=(-d 500 -c 3d_fullres -f 0 -tr "$TRAINER" -device cpu --disable_tta --mc_samples "$MC")
step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }
mkdir -p "$WORK"

step "1/6 fit the methods make demo did not fit"
nnunet_mt_ood fit "${MODEL[@]}" --method spectral_centred spectral_multilayer ihf

step "2/6 harmless copies of the in-distribution test images"
rm -rf "$WORK/shifted_images"
python "$ROOT/benchmarks/shifted_images.py" -i "$nnUNet_raw/Dataset500_MultiTask/imagesTs" -o "$WORK/shifted_images"

step "3/6 score every method on each set"
SETS=("$nnUNet_raw/Dataset500_MultiTask/imagesTs:id" "$nnUNet_raw/Dataset014_HippocampusMR/imagesTs:ood_hippocampus"
      "$nnUNet_raw/Dataset015_PancreasCT/imagesTs:ood_pancreas" "$WORK/shifted_images:shifted")
score_sets() {  # scores folder, then the model selection and --method: every set scored the same way
  local out=$1; shift
  for pair in "${SETS[@]}"; do
    nnunet_mt_ood score -i "${pair%%:*}" -o "$out/${pair##*:}" "$@" -npp 0 -nps 0
  done
}
score_sets "$WORK/scores" "${MODEL[@]}" --method "${METHODS[@]}"

step "4/6 evaluate: held-out datasets (with failure detection), then the harmless copies"
evaluate_sets() {  # scores folder, suffix of the outputs ("" or _<ensemble>): $WORK/ood$2, $WORK/shifted_<kind>$2
  nnunet_mt_ood evaluate "$1"/{id,ood_hippocampus,ood_pancreas}/ood_scores.json --ood 'hippocampus*' 'pancreas*' \
    -o "$WORK/ood$2" -ref "$nnUNet_raw"/{Dataset500_MultiTask,Dataset014_HippocampusMR,Dataset015_PancreasCT}/labelsTs
  # each kind of copy against the originals (ids ending in a digit); a copy is the same subject as its original
  for kind in crop pad scale; do
    nnunet_mt_ood evaluate "$1"/{id,shifted}/ood_scores.json --ood "*_$kind" --id '*[0-9]' \
      --subject_pattern '^(D[0-9]+_[a-z]+_[0-9]+)' -o "$WORK/shifted_$kind$2"
  done
}
evaluate_sets "$WORK/scores" ""

# the ensembles: members trained without the end-of-training fit and validation (the ensembles fit their own)
train() {  # fold, trainer: skipped when trained already
  [ -f "$nnUNet_results/Dataset500_MultiTask/$2__nnUNetPlans__3d_fullres/fold_$1/checkpoint_final.pth" ] ||
    nnUNet_n_proc_DA=0 nnUNet_mt_fit_after_training=0 nnUNet_mt_final_validation=0 \
      nnUNetv2_train 500 3d_fullres "$1" -tr "$2" -device cpu
}
ensemble() {  # name (ensemble | seed_ensemble), the members' selection: fit, then score and evaluate as above
  local name=$1; shift
  local selection=(-d 500 -c 3d_fullres -tr "$TRAINER" -device cpu --disable_tta "$@" --method "$name")
  nnunet_mt_ood fit "${selection[@]}"
  score_sets "$WORK/scores_$name" "${selection[@]}"
  evaluate_sets "$WORK/scores_$name" "_$name"
}
if [ -n "$ENSEMBLE_FOLDS" ]; then
  step "5/6 the fold ensemble (folds 0 $ENSEMBLE_FOLDS): train, fit on the images its folds trained on, score, evaluate"
  for fold in $ENSEMBLE_FOLDS; do train "$fold" "$TRAINER"; done
  ensemble ensemble -f 0 $ENSEMBLE_FOLDS
fi
if [ -n "$ENSEMBLE_SEEDS" ]; then
  step "6/6 the seed ensemble (seeds 0 $ENSEMBLE_SEEDS on fold 0): train, fit on the fold's training images, score, evaluate"
  for seed in $ENSEMBLE_SEEDS; do train 0 "${TRAINER}_seed$seed"; done
  ensemble seed_ensemble -f 0 --seeds $ENSEMBLE_SEEDS
fi
echo; cat "$WORK/ood.md"
for name in ensemble seed_ensemble; do [ ! -f "$WORK/ood_$name.md" ] || { echo; echo "$name:"; cat "$WORK/ood_$name.md"; }; done
for kind in crop pad scale; do
  echo; echo "harmless copies: $kind (sensitivity = the share of copies flagged)"; cat "$WORK/shifted_$kind.md"
  for name in ensemble seed_ensemble; do [ ! -f "$WORK/shifted_${kind}_$name.md" ] || tail -n 1 "$WORK/shifted_${kind}_$name.md"; done
done
