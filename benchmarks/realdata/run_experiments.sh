#!/usr/bin/env bash
# The paper's three experiments on ../shared/realdata at a CPU budget (2 cores): see documentation/results.md.
#   bash benchmarks/realdata/run_experiments.sh            (WORK=folder to use another scratch folder)
# Resumable: rerun after an interruption and finished steps are skipped.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REALDATA="${REALDATA:-$HERE/../../../shared/realdata}"
if [ ! -d "$REALDATA" ]; then echo "$REALDATA: real data not found; skipping"; exit 0; fi
WORK="${WORK:-$HERE/work}"
BUDGET="${BUDGET:-12}"  # epochs of 40 iterations (32^3 patches, batch 2)
export nnUNet_raw="$WORK/nnUNet_raw" nnUNet_preprocessed="$WORK/nnUNet_preprocessed" nnUNet_results="$WORK/nnUNet_results"
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-1}" nnUNet_n_proc_DA="${nnUNet_n_proc_DA:-0}"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
[ -f "$nnUNet_raw/Dataset905_BreastMR/dataset.json" ] || python "$HERE/convert.py" --realdata "$REALDATA" -o "$nnUNet_raw"
CPU=(-tr nnUNetTrainerMultiTaskCPU --budget "$BUDGET" -device cpu -npp 0 -nps 0 -np 1 --disable_tta --id 910)
# table II: joint model on brain tumour MR + liver CT + liver MR vs one model each
nnunet_mt experiment joint-vs-dedicated -d 901 902 903 "${CPU[@]}" -o "$WORK/joint_vs_dedicated"
# table III: liver CT -> liver MR and liver MR -> liver CT fine-tuning vs the joint model (reuses the models above)
nnunet_mt experiment transfer -d 901 902 903 --chains 902,903 903,902 "${CPU[@]}" -o "$WORK/transfer"
# tables IV-V: OOD detection on the joint model above; brain MR of another source and breast MR are OOD.
# (MC dropout needs a second, dropout-trained model: add mcdropout to --methods when the budget allows;
#  make demo runs it on the demo data.)
nnunet_mt experiment ood --train 901 902 903 --ood 904 905 --methods ${OOD_METHODS:-spectral entropy msp mahalanobis} \
    --mc_samples 5 "${CPU[@]}" -o "$WORK/ood"
