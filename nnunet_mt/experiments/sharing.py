"""Same plans and same cases for every model of a comparison (issue 12).

A dedicated model's dataset gets the joint dataset's nnU-Net plans (target spacing, patch, normalization)
through nnU-Net's own ``move_plans_between_datasets``, and per fold exactly the joint fold's training and
validation cases of its source (nnU-Net's folds file, which nnU-Net's trainer reads instead of drawing
its own split). Merged datasets share case ids (``D<source id>_<case>``), so the filter is exact.

The joint folds are stratified by source (each source's cases split into 5 folds on their own), unlike
nnU-Net's default split of all cases at once, which can leave a small source without a validation case
in some fold; a joint split that already exists (e.g. from an earlier training) is kept.
"""
import json
import os
import shutil
from typing import Dict, List, Sequence

from nnunet_mt import layout
from nnunet_mt.atomic import write_text_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.merge import PROVENANCE_KEY, load_dataset_json
from nnunet_mt.splits import merged_dataset_splits, refuse_leaking_splits, restrict_splits
from nnunet_mt.splits import training_cases_by_source as cases_by_source

def training_cases_by_source(raw_folder: str) -> Dict[str, List[str]]:
    """Training case ids of a merged dataset per source dataset, from its provenance, sorted."""
    dataset_json = load_dataset_json(raw_folder)
    if not dataset_json.get(PROVENANCE_KEY, {}).get("cases"):
        raise InputError(f"{os.path.join(raw_folder, 'dataset.json')}: not a dataset made by nnunet_mt merge")
    return cases_by_source(dataset_json)


def share_plans_and_splits(source: str, targets: Sequence[str], plans: str = "nnUNetPlans", log=print) -> None:
    """source, targets: dataset ids or names. Writes each target's plans (the source's) and folds file
    (the source's folds restricted to the target's cases), and the target's own dataset fingerprint with
    nnU-Net's extractor if it has none (nnUNetv2_train copies it); writes the source's folds first
    (stratified by source dataset) if it has none yet."""
    from nnunet_mt.nnunet_glue import dataset_name, extract_fingerprint, move_plans, required_folder
    nnUNet_raw, nnUNet_preprocessed = required_folder("nnUNet_raw"), required_folder("nnUNet_preprocessed")
    source_name = dataset_name(source)
    splits_file = layout.splits_file(os.path.join(nnUNet_preprocessed, source_name))
    source_plans = layout.plans_file(os.path.join(nnUNet_preprocessed, source_name), plans)
    if not os.path.isfile(source_plans):
        raise InputError(f"{source_plans}: missing; run nnUNetv2_plan_and_preprocess for the source dataset first")
    raw_folder = os.path.join(nnUNet_raw, source_name)
    training_cases_by_source(raw_folder)  # refuses a dataset that nnunet_mt merge did not make
    if os.path.isfile(splits_file):
        with open(splits_file) as f:
            splits = json.load(f)
        refuse_leaking_splits(splits_file, splits, load_dataset_json(raw_folder))
    else:
        splits = merged_dataset_splits(load_dataset_json(raw_folder))
        write_text_atomic(splits_file, json.dumps(splits, indent=1))
    for target in targets:
        target_name = dataset_name(target)
        folder = os.path.join(nnUNet_preprocessed, target_name)
        try:
            cases = [c for cs in training_cases_by_source(os.path.join(nnUNet_raw, target_name)).values() for c in cs]
            restricted = restrict_splits(splits, cases)
        except InputError as e:
            raise InputError(f"{splits_file}: {e} ({target_name})")
        os.makedirs(folder, exist_ok=True)
        if not os.path.isfile(os.path.join(folder, layout.FINGERPRINT_FILE)):
            extract_fingerprint(target_name)
        # nnUNetv2_preprocess reads dataset.json from here (nnUNetv2_plan_and_preprocess would have copied it)
        shutil.copyfile(os.path.join(nnUNet_raw, target_name, layout.DATASET_JSON), os.path.join(folder, layout.DATASET_JSON))
        move_plans(source_name, target_name, plans)
        write_text_atomic(layout.splits_file(folder), json.dumps(restricted, indent=1))
        log(f"{target_name}: plans '{plans}' of {source_name}, {len(restricted)} folds restricted to its "
            f"{len(restricted[0]['train']) + len(restricted[0]['val'])} cases")
