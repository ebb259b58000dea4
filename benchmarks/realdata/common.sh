# Settings shared by the real-data scripts (sourced; HERE = this folder): the scratch folder, normalization
# and seed of the run, the merged dataset's id, and nnU-Net's folders under the scratch folder.
WORK="${WORK:-$HERE/work}"
NORMALIZATION="${NORMALIZATION:-paper}"  # paper | nnunet (nnunet_mt merge --normalization)
SEED="${SEED:-0}"
ID="${ID:-$([ "$NORMALIZATION" = paper ] && echo 910 || echo 930)}"  # each normalization has its own merged datasets
export nnUNet_raw="$WORK/nnUNet_raw" nnUNet_preprocessed="$WORK/nnUNet_preprocessed" nnUNet_results="$WORK/nnUNet_results"
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-1}"
# The OOD experiment of run_experiments.sh (TABLES=IV) with the same SUBJECTS, BUDGET, SEED and OOD_METHODS:
# its joint dataset id (ID), trainer (OOD_TR), methods (OOD_METHOD_LIST) and experiment folder (OOD_RUN).
[ -z "${SUBJECTS:-}" ] || ID=$((ID + 40))
OOD_METHOD_LIST=(${OOD_METHODS:-spectral entropy msp mahalanobis knn})
OOD_TR="nnUNetTrainerMultiTaskCPU$([[ " ${OOD_METHOD_LIST[*]} " != *" mcdropout "* ]] || echo _dropout)"
JOINT_CAP="${JOINT_BUDGET:-${BUDGET:-}}"  # the joint model's cap (JOINT_BUDGET=N: --joint_budget N)
OOD_TR+="${SUBJECTS:+_persource}${JOINT_CAP:+_${JOINT_CAP}epochs}_seed${SEED}"
RUN="${NORMALIZATION}_seed${SEED}${BUDGET:+_cap$BUDGET}${JOINT_BUDGET:+_joint$JOINT_BUDGET}${SUBJECTS:+_subjects}"  # e.g. paper_seed0_cap15: run folders end in it
OOD_RUN="$WORK/ood_$RUN"
