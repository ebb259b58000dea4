#!/usr/bin/env bash
# End-to-end demo on built-in synthetic data, through nnU-Net's real commands (2 CPU cores: see README for its time).
# Inference steps use both cores: the baseline fit runs in two parts at once (-num_parts), and the
# in-distribution and OOD sets are scored side by side.
# Everything lands in demo_output/ (nnUNet_raw, nnUNet_preprocessed, nnUNet_results, predictions).
set -euo pipefail
OUT=${DEMO_OUTPUT:-$PWD/demo_output}
# the CPU-sized recipe with dropout after every convolution, so MC dropout (the paper's uncertainty
# baseline) can run on the same model as the spectral method; capped at 12 epochs (480 iterations) so the
# demo stays within 15 minutes on 2 cores (DEMO_TRAINER=nnUNetTrainerMultiTaskCPU_dropout: the recipe's 25)
TRAINER=${DEMO_TRAINER:-nnUNetTrainerMultiTaskCPU_dropout_12epochs}
MC=${DEMO_MC_SAMPLES:-3}
export nnUNet_raw=$OUT/nnUNet_raw nnUNet_preprocessed=$OUT/nnUNet_preprocessed nnUNet_results=$OUT/nnUNet_results
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-1}
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"

step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }

step "1/9 demo datasets (Dataset011-013 in-distribution, 014-015 held out as OOD)"
nnunet_mt demo-data --seed 0

step "2/9 merge 011, 012, 013 (prostate zones 1+2 = foreground) into Dataset500_MultiTask"
nnunet_mt merge -d 11 12 13:1,2 -o 500 --overwrite

step "3/9 nnUNetv2_plan_and_preprocess"
nnUNetv2_plan_and_preprocess -d 500 -c 3d_fullres -np 1 -npfp 1  # one process each (nnU-Net starts 8 for fingerprints by default)

step "4/9 nnUNetv2_train 500 3d_fullres 0 -tr $TRAINER --npz (CPU budget; the validation's probabilities kept for calibrate)"
nnUNet_n_proc_DA=0 nnUNetv2_train 500 3d_fullres 0 -tr "$TRAINER" -device cpu --npz

step "5/9 nnunet_mt_ood fit: baseline OOD detectors on the training images (spectral was fitted by training), in two parts at once (one per core)"
FIT=(nnunet_mt_ood fit -d 500 -c 3d_fullres -f 0 -tr "$TRAINER" -device cpu --method mcdropout mahalanobis knn msp entropy
  --mc_samples "$MC" --disable_tta -num_parts 2)
# one thread each: two processes with torch's default of one thread per core would fight over both cores
OMP_NUM_THREADS=1 "${FIT[@]}" -part_id 0 & part0=$!
OMP_NUM_THREADS=1 "${FIT[@]}" -part_id 1
wait "$part0"
"${FIT[@]}" --collect

step "6/9 nnunet_mt calibrate: a temperature fitted on fold 0's validation cases (nnU-Net's --npz outputs; stored with the model)"
nnunet_mt calibrate -d 500 -c 3d_fullres -f 0 -tr "$TRAINER" -device cpu --disable_tta

step "7/9 nnunet_mt_ood score (= nnUNetv2_predict + OOD scores): in-distribution test cases (one core), held-out OOD datasets (the other)"
score() {  # raw dataset, output name: the score command's report goes to predictions/<name>.log, printed after
  OMP_NUM_THREADS=1 nnunet_mt_ood score -i "$nnUNet_raw/$1/imagesTs" -o "$OUT/predictions/$2" -d 500 -c 3d_fullres -f 0 \
    -tr "$TRAINER" -npp 0 -nps 0 -device cpu --disable_tta --save_probabilities --no_calibration --plot \
    --method spectral mcdropout mahalanobis knn msp entropy --mc_samples "$MC" > "$OUT/predictions/$2.log" 2>&1
}
mkdir -p "$OUT/predictions"
score Dataset500_MultiTask id & in_distribution=$!
score Dataset014_HippocampusMR ood_hippocampus && score Dataset015_PancreasCT ood_pancreas ||
  { cat "$OUT"/predictions/ood_*.log; kill "$in_distribution"; exit 1; }
wait "$in_distribution" || { cat "$OUT/predictions/id.log"; exit 1; }
for name in id ood_hippocampus ood_pancreas; do echo "--- $name"; cat "$OUT/predictions/$name.log"; done

step "8/9 nnunet_mt evaluate: DSC, HD95, ASSD, ECE, MCE, NLL, Brier per source, without and with the temperature"
nnunet_mt evaluate -ref "$nnUNet_raw/Dataset500_MultiTask/labelsTs" -pred "$OUT/predictions/id" \
  -prob "$OUT/predictions/id" --plots "$OUT/predictions/id/plots"
rm -rf "$OUT/predictions/id_calibrated"
nnunet_mt calibrate -d 500 -c 3d_fullres -f 0 -tr "$TRAINER" --apply "$OUT/predictions/id" -o "$OUT/predictions/id_calibrated"
nnunet_mt evaluate -ref "$nnUNet_raw/Dataset500_MultiTask/labelsTs" -pred "$OUT/predictions/id_calibrated" \
  -prob "$OUT/predictions/id_calibrated" --plots "$OUT/predictions/id_calibrated/plots"

step "9/9 nnunet_mt_ood evaluate: spectral OOD vs MC-dropout uncertainty and the other baselines; failure detection"
nnunet_mt_ood evaluate "$OUT"/predictions/{id,ood_hippocampus,ood_pancreas}/ood_scores.json \
  --ood 'hippocampus*' 'pancreas*' -o "$OUT/predictions/ood_evaluation" \
  -ref "$nnUNet_raw"/{Dataset500_MultiTask,Dataset014_HippocampusMR,Dataset015_PancreasCT}/labelsTs

step "summary"
model="$nnUNet_results/Dataset500_MultiTask/${TRAINER}__nnUNetPlans__3d_fullres"
grep -h "Sampling shares" "$model"/fold_0/training_log_*.txt | tail -n 1
grep -h "Paper schedule\|Converged after\|Stopped at the cap" "$model"/fold_0/training_log_*.txt | tail -n 2
grep -h "Spectral OOD" "$model"/fold_0/training_log_*.txt | tail -n 2
echo "Segmentation (in-distribution test cases; ECE/MCE/NLL/Brier over the box of reference and prediction + 5 voxels, the same with and without T):"
cat "$OUT/predictions/id/metrics.md"
echo "Calibration on fold 0's validation cases: $(python -c "import json,sys; f = json.load(open(sys.argv[1]))['fit']['all']
print((f.get('selection') or {}).get('reason') or f'T = {f[\"temperature\"]:.3f}')" "$model/fold_0/temperature.json")"
echo "With that temperature:"
cat "$OUT/predictions/id_calibrated/metrics.md"
echo "Nearest training source and decision (spectral) per scored set:"
for name in id ood_hippocampus ood_pancreas; do
  python -c "import collections, json, sys; rows = json.load(open(sys.argv[1]))['cases']
print(f'  {sys.argv[2]}:', dict(collections.Counter((r['nearest_source'], r['decision']) for r in rows)))" \
    "$OUT/predictions/$name/ood_scores.json" "$name"
done
echo "OOD detection (14 in-distribution test cases vs 8 held-out OOD cases), then failure detection:"
cat "$OUT/predictions/ood_evaluation.md"
echo "Training curves:      $model/fold_0/progress.png"
echo "Reliability diagrams: $OUT/predictions/id/plots/ (without T), $OUT/predictions/id_calibrated/plots/ (with T)"
echo "OOD figures:          $OUT/predictions/ood_evaluation.png, $OUT/predictions/*/ood_histogram.png, ood_signatures.png"
echo "Risk-coverage:        $OUT/predictions/ood_evaluation_risk_coverage.png"
