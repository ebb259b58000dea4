#!/usr/bin/env bash
# The paper's three experiments on ../shared/realdata at a CPU budget (2 cores): see documentation/results.md.
#   bash benchmarks/realdata/run_experiments.sh            (WORK=folder to use another scratch folder)
#   NORMALIZATION=nnunet SEED=1 TABLES="II" bash benchmarks/realdata/run_experiments.sh
#   SUBJECTS=1 BUDGET=60 SEED=0 TABLES="II" bash benchmarks/realdata/run_experiments.sh   (mirrors as subjects, per-source stop)
#   SUBJECTS=1 BUDGET=20 JOINT_BUDGET=80 TABLES="II" bash ...   (the joint model capped at 80 epochs, the dedicated ones at 20)
# Every model trains until the paper's convergence rule stops it (CPU window: 200 iterations), capped at the
# CPU trainer's 25 epochs (BUDGET=N for another cap; the output folders then end in _capN). Resumable: rerun after an interruption and finished
# steps are skipped.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REALDATA="${REALDATA:-$HERE/../../../shared/realdata}"
if [ ! -d "$REALDATA" ]; then echo "$REALDATA: real data not found; skipping"; exit 0; fi
TABLES="${TABLES:-II III IV}"
source "$HERE/common.sh"  # WORK, NORMALIZATION, SEED, ID (+40 with SUBJECTS), nnU-Net's folders, RUN, the OOD run's names
export nnUNet_n_proc_DA="${nnUNet_n_proc_DA:-0}"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
[ -f "$nnUNet_raw/Dataset906_LungTumourCT/dataset.json" ] || python "$HERE/convert.py" --realdata "$REALDATA" -o "$nnUNet_raw"
# SUBJECTS=1 (issue 30): a mirror ('<id>m') is one subject with its original, the joint model stops only when no
# source's validation loss decreases; crops of the one liver CT / liver MR patient cannot be split by subject
# (one training patient each), so they stay separate cases and those rows rest on one subject
SUBJECT_PATTERN='^(.*?)m?$'
CPU=(-tr nnUNetTrainerMultiTaskCPU -device cpu -npp 0 -nps 0 -np 1 --disable_tta --id "$ID"
     --normalization "$NORMALIZATION" --seed "$SEED")
[ -z "${BUDGET:-}" ] || CPU+=(--budget "$BUDGET")
[ -z "${JOINT_BUDGET:-}" ] || CPU+=(--joint_budget "$JOINT_BUDGET")  # e.g. 4 x BUDGET: each of the 4 sources a dedicated model's iterations
[ -z "${SUBJECTS:-}" ] || CPU+=(--subject_pattern "$SUBJECT_PATTERN" --convergence per_source)
SOURCES=(901 902 903 906)  # brain tumour MR, liver CT, liver MR, lung tumour CT
# table II: joint model on all sources vs one model each (shared plans, folds and calibration region)
[[ " $TABLES " != *" II "* ]] || nnunet_mt experiment joint-vs-dedicated -d "${SOURCES[@]}" "${CPU[@]}" -o "$WORK/joint_vs_dedicated_$RUN"
# table III: liver CT -> liver MR and liver MR -> liver CT fine-tuning vs the joint model (reuses the models above)
[[ " $TABLES " != *" III "* ]] || nnunet_mt experiment transfer -d "${SOURCES[@]}" --chains 902,903 903,902 "${CPU[@]}" -o "$WORK/transfer_$RUN"
# tables IV-V: OOD detection on the joint model above; brain MR of another source and breast MR are OOD.
# (with mcdropout in OOD_METHODS every method runs on the _dropout variant of the joint model, which it trains)
[[ " $TABLES " != *" IV "* ]] || nnunet_mt experiment ood --train "${SOURCES[@]}" --ood 904 905 \
    --method "${OOD_METHOD_LIST[@]}" --mc_samples 5 "${CPU[@]}" -o "$OOD_RUN" \
    ${ENSEMBLE_FOLDS:+--ensemble_folds $ENSEMBLE_FOLDS} \
    ${ENSEMBLE_SEEDS:+--ensemble_seeds $ENSEMBLE_SEEDS}  # ENSEMBLE_FOLDS=1 / ENSEMBLE_SEEDS=1: + fold / seed ensemble
