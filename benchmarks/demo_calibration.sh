#!/usr/bin/env bash
# Temperature scaling on the demo data (issue 14), rows (a)-(d) of documentation/calibration.md: the joint model
# on demo 011 + 012 + 013 (prostate zones 1+2 = foreground) without T, with a global T, with one T per source,
# and one dedicated model per source without and with its T, trained with the same plans, folds and cap:
#   make install && PATH=$PWD/.venv/bin:$PATH bash benchmarks/demo_calibration.sh
# (2 CPU cores: about 30 minutes; resumable). WORK=scratch folder (default /tmp/demo_calibration), BUDGET=cap in
# epochs (default 25, the CPU recipe's), SEED. Writes $WORK/calibration_paper_seed<N>_cap<BUDGET>/calibration.md.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export WORK="${WORK:-/tmp/demo_calibration}" BUDGET="${BUDGET:-25}" SEED="${SEED:-0}" ID=950 NORMALIZATION=paper
export nnUNet_raw="$WORK/nnUNet_raw" nnUNet_preprocessed="$WORK/nnUNet_preprocessed" nnUNet_results="$WORK/nnUNet_results"
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-1}" nnUNet_n_proc_DA="${nnUNet_n_proc_DA:-0}"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
[ -f "$nnUNet_raw/Dataset013_ProstateMR/dataset.json" ] || nnunet_mt demo-data -d 11 12 13 --seed 0
nnunet_mt experiment joint-vs-dedicated -d 11 12 13:1,2 -tr nnUNetTrainerMultiTaskCPU --budget "$BUDGET" \
  --seed "$SEED" --id "$ID" -device cpu -np 1 -npp 0 -nps 0 --disable_tta -o "$WORK/joint_vs_dedicated"
bash "$HERE/realdata/calibration.sh"
