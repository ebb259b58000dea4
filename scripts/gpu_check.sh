#!/usr/bin/env bash
# The GPU path, checked in one go (about 8 minutes on one H100-class GPU; installs nothing):
#   make install && PATH=$PWD/.venv/bin:$PATH bash scripts/gpu_check.sh
# On the demo data (made here, Dataset500 = demo 011 + 012 + 013 merged):
#   1. training iterations/s and peak GPU memory, ours (nnUNetTrainerMultiTask: 96^3, the paper's network)
#      vs nnU-Net's nnUNetTrainer on the same merged dataset, timed after warm-up;
#   2. a model trained for one epoch (${GPU_CHECK_MODEL}), then nnUNetv2_predict vs nnunet_mt_ood score
#      (spectral, then mahalanobis) on the test images: wall time and peak GPU memory;
#   3. the same on one CT-sized synthetic volume (512 x 512 x 300 voxels at the model's spacing, no mirroring);
#   4. spectral signatures on the GPU (float16 autocast) vs the CPU (float32), judged by what a user acts on:
#      the accept/flag decision against the fitted tau on every image, and each distance within 5 % of tau;
#      segmentations voxel for voxel (GPU predict vs GPU score, GPU score vs CPU score);
#   6. on a machine with 2 or more GPUs: nnUNetv2_train -num_gpus N (N = min(GPUs, 4); 2 patches per GPU).
# writes benchmarks/results/gpu.json and gpu.md (the table for documentation/benchmarks.md) and exits non-zero
# when a check fails. GPU_CHECK_DEVICE=cpu is the dry run the test suite runs to keep this script working
# (small sizes, our CPU trainer alone, spectral alone; results in gpu_check_cpu.json/.md). Other knobs: GPU_CHECK_WORK (scratch folder, reused: finished steps are
# skipped), GPU_CHECK_OUT (result folder), nnUNet_compile (on the GPU on by default, as nnU-Net trains and as
# users predict with nnUNet_compile=t: the model is trained, fitted and scored compiled; the dry run: off).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXX)}
OUT=${GPU_CHECK_OUT:-$ROOT/benchmarks/results}
PY=${PYTHON:-python}
CHECK=("$PY" "$ROOT/benchmarks/gpu_check.py")
if [ "$DEVICE" = cuda ]; then
  export nnUNet_compile=${nnUNet_compile:-t}
  OURS=nnUNetTrainerMultiTask; MODEL=${GPU_CHECK_MODEL:-nnUNetTrainerMultiTask_1epochs}
  ITERATIONS=20; WARMUP=5; LARGE=(300 512 512); CASES=0; NAME=gpu; TTA=()
  TRAINERS=("$OURS" nnUNetTrainer); METHODS=(spectral mahalanobis)
else  # dry run: the CPU recipe, a 2-epoch smoke model, a small "large" volume, 2 test images, no mirroring;
  # the plumbing only: no nnUNetTrainer to compare with and no mahalanobis (the same steps with other names)
  OURS=nnUNetTrainerMultiTaskCPU; MODEL=${GPU_CHECK_MODEL:-nnUNetTrainerMultiTaskSmoke}
  ITERATIONS=1; WARMUP=0; LARGE=(40 64 64); CASES=2; NAME=gpu_check_cpu; TTA=(--disable_tta)
  TRAINERS=("$OURS"); METHODS=(spectral)
  export nnUNet_compile=${nnUNet_compile:-f}
  export nnUNet_def_n_proc=${nnUNet_def_n_proc:-1} nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-0}
fi
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
RECORD=$WORK/record.jsonl; rm -f "$RECORD"
DS=Dataset500_MultiTask
MODEL_DIR=$nnUNet_results/$DS/${MODEL}__nnUNetPlans__3d_fullres
PRED=$WORK/predictions
step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }
report() {
  code=$?
  if [ -f "$RECORD" ]; then
    "${CHECK[@]}" report --record "$RECORD" --json "$OUT/$NAME.json" --markdown "$OUT/$NAME.md" || { [ "$code" != 0 ] || code=1; }
  fi
  exit "$code"
}
trap report EXIT

step "0/5 demo data, merged and preprocessed ($WORK)"
if [ ! -f "$nnUNet_preprocessed/$DS/nnUNetPlans.json" ]; then
  nnunet_mt demo-data -d 11 12 13 --seed 0
  nnunet_mt merge -d 11 12 13:1,2 -o 500 --overwrite
  # planning reads nnUNet_n_proc_DA as a thread count: 0 (the CPU setting for training) would break it
  env -u nnUNet_n_proc_DA nnUNetv2_plan_and_preprocess -d 500 -c 3d_fullres ${GPU_CHECK_NP:+-np "$GPU_CHECK_NP"}
fi

step "1/5 training throughput on $DEVICE: ${TRAINERS[*]} ($ITERATIONS iterations after $WARMUP)"
"${CHECK[@]}" train --record "$RECORD" --device "$DEVICE" --dataset "$DS" --trainers "${TRAINERS[@]}" \
  --iterations "$ITERATIONS" --warmup "$WARMUP"

step "2/5 nnUNetv2_train 500 3d_fullres 0 -tr $MODEL -device $DEVICE (spectral fitted at its end), fits of ${METHODS[*]}"
[ -f "$MODEL_DIR/fold_0/checkpoint_final.pth" ] || nnUNetv2_train 500 3d_fullres 0 -tr "$MODEL" -device "$DEVICE"
"${CHECK[@]}" file --record "$RECORD" --label "spectral fit after training" "$MODEL_DIR/fold_0/spectral_signatures_last.npz"
for method in "${METHODS[@]:1}"; do
  nnunet_mt_ood fit -d 500 -c 3d_fullres -f 0 -tr "$MODEL" -device "$DEVICE" --method "$method"
done

TEST=$WORK/test_images; LARGE_IN=$WORK/large_image; FEW=$WORK/compare_images
rm -rf "$TEST" "$LARGE_IN" "$FEW" "$PRED"; mkdir -p "$TEST" "$FEW"
mapfile -t IMAGES < <(ls "$nnUNet_raw/$DS/imagesTs"/*_0000.nii.gz)
[ "$CASES" = 0 ] || IMAGES=("${IMAGES[@]:0:$CASES}")
cp "${IMAGES[@]}" "$TEST"; cp "${IMAGES[@]:0:3}" "$FEW"
"${CHECK[@]}" volume -o "$LARGE_IN/large_0000.nii.gz" --shape "${LARGE[@]}" --like "${IMAGES[0]}" \
  --plans "$MODEL_DIR/plans.json"

predict() {  # label, input folder, output name, extra options
  local label=$1 in=$2 out=$3; shift 3
  "${CHECK[@]}" run --record "$RECORD" --label "$label" -- "$@" -i "$in" -o "$PRED/$out" -d 500 -c 3d_fullres -f 0 \
    -tr "$MODEL" -npp 0 -nps 0
}
step "3/5 nnUNetv2_predict vs nnunet_mt_ood score on the test images (${#IMAGES[@]}, ${TTA[*]:-mirroring on})"
predict "nnUNetv2_predict, test images" "$TEST" predict nnUNetv2_predict -device "$DEVICE" "${TTA[@]}"
for method in "${METHODS[@]}"; do
  predict "score $method, test images" "$TEST" "$method" nnunet_mt_ood score --method "$method" -device "$DEVICE" \
    "${TTA[@]}"
done

step "4/5 the same on a ${LARGE[*]} (z y x) volume (no mirroring)"
predict "nnUNetv2_predict, large volume" "$LARGE_IN" large_predict nnUNetv2_predict -device "$DEVICE" --disable_tta
for method in "${METHODS[@]}"; do
  predict "score $method, large volume" "$LARGE_IN" "large_$method" nnunet_mt_ood score --method "$method" \
    -device "$DEVICE" --disable_tta
done

step "5/5 $DEVICE vs the CPU: signatures and segmentations (3 test images)"
predict "score spectral on the CPU, 3 test images" "$FEW" spectral_cpu nnunet_mt_ood score --method spectral -device cpu \
  "${TTA[@]}"
"${CHECK[@]}" compare --record "$RECORD" --model "$MODEL_DIR" --images "$FEW" --device "$DEVICE" \
  --segmentations "$PRED/predict" "$PRED/spectral" --segmentations "$PRED/large_predict" "$PRED/large_spectral" \
  --segmentations "$PRED/spectral_cpu" "$PRED/spectral"

GPUS=0
[ "$DEVICE" != cuda ] || GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -ge 2 ]; then
  N=$(( GPUS < 4 ? GPUS : 4 ))
  step "6/6 nnUNetv2_train -num_gpus $N (2 patches per GPU, ranks seeded apart)"
  "${CHECK[@]}" run --record "$RECORD" --label "nnUNetv2_train -num_gpus $N" -- nnUNetv2_train 500 3d_fullres 0 \
    -tr "${MODEL}_seed1" -num_gpus "$N"
fi
