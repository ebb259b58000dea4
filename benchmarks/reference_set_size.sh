#!/usr/bin/env bash
# What a small reference set costs the OOD detectors (issue 31): on the demo data, the OOD AUCs of spectral and
# knn fitted on all training images of fold 0 (as training leaves them) beside `nnunet_mt_ood fit -i` on
# reference folders of 5 and of 10 training images per source (never a test image), each scored on the same
# test images (in-distribution: Dataset500's 14 test images; OOD: the 8 of Dataset014 and Dataset015).
#   bash benchmarks/reference_set_size.sh       (WORK=folder, TRAINER=nnUNetTrainerMultiTaskCPU, SIZES="5 10")
# About 20 min on 2 cores, most of it training the demo recipe. Resumable: finished steps are skipped.
# Prints one table row per (reference set, method): AUC with its 95 % interval, tau, false positives.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="${WORK:-$HERE/work_reference_size}"
TRAINER="${TRAINER:-nnUNetTrainerMultiTaskCPU}"
SIZES="${SIZES:-5 10}"
export nnUNet_raw="$WORK/nnUNet_raw" nnUNet_preprocessed="$WORK/nnUNet_preprocessed" nnUNet_results="$WORK/nnUNet_results"
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-1}"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
MODEL="$TRAINER"__nnUNetPlans__3d_fullres
DS=Dataset500_MultiTask
step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }

if [ ! -f "$nnUNet_preprocessed/$DS/nnUNetPlans.json" ]; then
  step "demo data, merged and preprocessed"
  nnunet_mt demo-data --seed 0
  nnunet_mt merge -d 11 12 13:1,2 -o 500 --overwrite
  nnUNetv2_plan_and_preprocess -d 500 -c 3d_fullres -np 1
fi
if [ ! -f "$nnUNet_results/$DS/$MODEL/fold_0/checkpoint_final.pth" ]; then
  step "nnUNetv2_train 500 3d_fullres 0 -tr $TRAINER (the spectral fit on all training images runs at its end)"
  nnUNet_n_proc_DA=0 nnUNetv2_train 500 3d_fullres 0 -tr "$TRAINER" -device cpu
fi
COMMON=(-d 500 -c 3d_fullres -f 0 -tr "$TRAINER" -device cpu --disable_tta)
[ -f "$nnUNet_results/$DS/$MODEL/fold_0/ood_fit_knn_bottleneck.json" ] || nnunet_mt_ood fit "${COMMON[@]}" --method knn

score_and_evaluate() {  # name, results folder
  local name=$1 results=$2 out="$WORK/scores_$1"
  for pair in "$DS:id" "Dataset014_HippocampusMR:ood14" "Dataset015_PancreasCT:ood15"; do
    [ -f "$out/${pair##*:}/ood_scores.json" ] || nnUNet_results="$results" nnunet_mt_ood score \
      -i "$nnUNet_raw/${pair%%:*}/imagesTs" -o "$out/${pair##*:}" "${COMMON[@]}" --method spectral knn -npp 0 -nps 0
  done
  nnunet_mt_ood evaluate "$out/id/ood_scores.json" "$out/ood14/ood_scores.json" "$out/ood15/ood_scores.json" \
    --ood "hippocampus*" "pancreas*" -o "$WORK/evaluation_$name" > /dev/null
}

step "all training images of fold 0"
score_and_evaluate all "$nnUNet_results"
for n in $SIZES; do
  step "reference folder of $n training images per source (fit -i)"
  results="$WORK/results_ref$n" reference="$WORK/reference_$n"
  if [ ! -f "$results/$DS/$MODEL/fold_0/ood_fit_knn_bottleneck.json" ]; then
    rm -rf "$results" "$reference"; mkdir -p "$results/$DS" "$reference"
    cp -r "$nnUNet_results/$DS/$MODEL" "$results/$DS/"
    rm -f "$results/$DS/$MODEL"/fold_0/{spectral_signatures_,ood_fit_}*
    # the first n training images of each source (the ids sort by source: D011_, D012_, D013_)
    for prefix in D011 D012 D013; do
      ls "$nnUNet_raw/$DS/imagesTr" | grep "^${prefix}_" | head -n "$n" | \
        while read -r f; do ln "$nnUNet_raw/$DS/imagesTr/$f" "$reference/$f"; done
    done
    nnUNet_results="$results" nnunet_mt_ood fit "${COMMON[@]}" -i "$reference" --method spectral knn
  fi
  score_and_evaluate "ref$n" "$results"
done

python - "$WORK" $SIZES <<'EOF'
import json, sys
work, sizes = sys.argv[1], sys.argv[2:]
print("| reference set | method | images | AUC | AUC 95 % interval | tau | false positives (of 14) | missed OOD (of 8) |")
print("|---|---|---|---|---|---|---|---|")
for name, label in [("all", "all training images of fold 0")] + [(f"ref{n}", f"{n} per source (fit -i)") for n in sizes]:
    e = json.load(open(f"{work}/evaluation_{name}.json"))
    for method in ("spectral", "knn"):
        m = e["methods"][method]
        fit = json.load(open(f"{work}/scores_{name}/id/ood_scores.json"))["methods"][method]
        low, high = m["auc_interval"]
        print(f"| {label} | {method} | {len(fit['train_case_ids'])} | {m['auc']:.3f} | [{low:.3f}, {high:.3f}] | "
              f"{m['tau']:.4f} | {m['fp']} | {m['fn']} |")
EOF
