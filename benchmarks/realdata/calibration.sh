#!/usr/bin/env bash
# Temperature scaling on the real-data models of table II (issue 14): the joint model without T, with a
# global T and with one T per source; each dedicated model without and with its T. Test cases only, ECE,
# MCE, NLL and Brier over the reference's box + 5 voxels (the same voxels for every row). Run after
#   BUDGET=15 TABLES=II bash benchmarks/realdata/run_experiments.sh      (same WORK, NORMALIZATION, SEED, SUBJECTS)
# Writes $WORK/calibration_<normalization>_seed<N>_cap<BUDGET>[_joint<JOINT_BUDGET>][_subjects]/calibration.md (and a metrics.json per
# row); each calibrate prints its held-out rule (the temperature it keeps, or T = 1 and why).
# ID=<joint dataset id>, TR=<dedicated trainer> and JOINT_TR=<joint trainer, default TR (with SUBJECTS its _persource
# variant)> select other models (benchmarks/demo_calibration.sh: the demo data).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BUDGET="${BUDGET:-15}"
source "$HERE/common.sh"
TR="${TR:-nnUNetTrainerMultiTaskCPU_${BUDGET}epochs_seed${SEED}}"  # the dedicated models'
JOINT_DEFAULT="${TR/nnUNetTrainerMultiTaskCPU/nnUNetTrainerMultiTaskCPU${SUBJECTS:+_persource}}"  # per-source stop
JOINT_TR="${JOINT_TR:-${JOINT_DEFAULT/_${BUDGET}epochs/_${JOINT_CAP}epochs}}"  # JOINT_BUDGET: the joint model's own cap
trainer_of() { [ "$1" = "$ID" ] && echo "$JOINT_TR" || echo "$TR"; }
OUT="$WORK/calibration_$RUN"
CPU=(-device cpu --disable_tta)
score() {  # model id, test dataset folder, output folder, extra score options
  local model=$1 data=$2 out=$3; shift 3
  [ -f "$out/metrics.json" ] && return 0
  nnunet_mt_ood score -i "$data/imagesTs" -o "$out" -d "$model" -c 3d_fullres -f 0 -tr "$(trainer_of "$model")" "${CPU[@]}" \
      -npp 0 -nps 0 --save_probabilities "$@" > /dev/null
  nnunet_mt evaluate -ref "$data/labelsTs" -pred "$out" -prob "$out" -o "$out/metrics.json" --roi reference > /dev/null
}
fit_spectral() {  # model id: score needs the spectral signatures (per-source T picks each image's source by its
  # nearest one); the experiments train with nnUNet_mt_fit_after_training=0, so fit them here when missing
  local model_dir
  model_dir=$(ls -d "$nnUNet_results"/Dataset"$1"_*/"$(trainer_of "$1")__nnUNetPlans__3d_fullres")
  [ -f "$model_dir/fold_0/spectral_signatures_last.json" ] || \
    nnunet_mt_ood fit -d "$1" -c 3d_fullres -f 0 -tr "$(trainer_of "$1")" "${CPU[@]}" --method spectral > /dev/null
}
fit_spectral "$ID"
start=$(date +%s)
nnunet_mt calibrate -d "$ID" -f 0 -tr "$JOINT_TR" "${CPU[@]}" --per_source
echo "joint model calibrated in $(( $(date +%s) - start )) s"
for dedicated in "$nnUNet_raw"/Dataset$((ID / 10))[1-9]_*; do
  name=$(basename "$dedicated"); name=${name#Dataset???_}; id=$(basename "$dedicated" | cut -c8-10)
  score "$ID" "$dedicated" "$OUT/joint/$name" --no_calibration
  score "$ID" "$dedicated" "$OUT/joint_global_T/$name" --global_temperature
  score "$ID" "$dedicated" "$OUT/joint_per_source_T/$name"
  start=$(date +%s)
  nnunet_mt calibrate -d "$id" -f 0 -tr "$TR" "${CPU[@]}"
  echo "$name calibrated in $(( $(date +%s) - start )) s"
  fit_spectral "$id"
  score "$id" "$dedicated" "$OUT/dedicated/$name" --no_calibration
  score "$id" "$dedicated" "$OUT/dedicated_T/$name"
done
python - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
lines = ["| model | test data | n | DSC | ECE | MCE | NLL | Brier |", "|---|---|---|---|---|---|---|---|"]
for variant in ("dedicated", "dedicated_T", "joint", "joint_global_T", "joint_per_source_T"):
    for path in sorted(glob.glob(os.path.join(out, variant, "*", "metrics.json"))):
        s = json.load(open(path))["per_source"]
        s = s.get("all", next(iter(s.values())))
        cells = " | ".join(f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in ("dice", "ece", "mce", "nll", "brier"))
        lines.append(f"| {variant} | {os.path.basename(os.path.dirname(path))} | {s['dice']['n']} | {cells} |")
text = "\n".join(lines) + "\n\nECE/MCE/NLL/Brier over the reference's bounding box + 5 voxels; test cases only.\n"
open(os.path.join(out, "calibration.md"), "w").write(text)
print(text)
PY
