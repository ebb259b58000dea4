"""Same plans and same cases for every model of a comparison (issue 12).

A dedicated model's dataset gets the joint dataset's nnU-Net plans (target spacing, patch, normalization)
through nnU-Net's own ``move_plans_between_datasets``, and per fold exactly the joint fold's training and
validation cases of its source (nnU-Net's folds file, which nnU-Net's trainer reads instead of drawing
its own split). Merged datasets share case ids (``D<source id>_<case>``), so the filter is exact.

The joint folds are stratified by source (each source's cases split into 5 folds on their own), unlike
nnU-Net's default split of all cases at once, which can leave a small source without a validation case
in some fold; a joint split that already exists (e.g. from an earlier training) is kept.

With configurations given (``share-plans -c 3d_fullres``), each target also gets the source's preprocessed
arrays of its cases, copied: the same plans applied to the same images (a one-source merge holds the same
case files and labels as the joint merge) give the arrays nnUNetv2_preprocess would write again, which
``tests/e2e/test_experiments.py`` checks against a real nnUNetv2_preprocess run; a copy takes seconds where
preprocessing full-resolution CT takes minutes per case.
"""
import json
import os
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

from nnunet_mt import layout
from nnunet_mt.atomic import written_atomically, write_text_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.merge import PROVENANCE_KEY, load_dataset_json
from nnunet_mt.splits import merged_dataset_splits, refuse_leaking_splits, restrict_splits, untrainable_folds
from nnunet_mt.splits import training_cases_by_source as cases_by_source

def training_cases_by_source(raw_folder: str) -> Dict[str, List[str]]:
    """Training case ids of a merged dataset per source dataset, from its provenance, sorted."""
    dataset_json = load_dataset_json(raw_folder)
    if not dataset_json.get(PROVENANCE_KEY, {}).get("cases"):
        raise InputError(f"{os.path.join(raw_folder, 'dataset.json')}: not a dataset made by nnunet_mt merge")
    return cases_by_source(dataset_json)


def _case_of(file_name: str) -> str:
    """The case id of a file in nnU-Net's preprocessed folders: CASE.<ext> or CASE_seg.<ext>."""
    stem = file_name.split(".", 1)[0]
    return stem[:-len("_seg")] if stem.endswith("_seg") else stem


def case_files(source_dir: str, cases: Sequence[str], what: str) -> List[str]:
    """The names of the files of these cases in source_dir, sorted; InputError naming the first case it lacks."""
    wanted = set(cases)
    names = sorted(f for f in os.listdir(source_dir) if _case_of(f) in wanted) if os.path.isdir(source_dir) else []
    missing = sorted(wanted - {_case_of(f) for f in names})
    if missing:
        raise InputError(f"{source_dir}: no {what} of case {missing[0]} ({len(missing)} of {len(wanted)} missing); "
                         "preprocess the source dataset first")
    return names


def copy_files(source_dir: str, names: Sequence[str], target_dir: str) -> None:
    """A new target_dir holding copies of these files of source_dir (written under its partial name, then
    renamed over any previous one)."""
    with written_atomically(target_dir) as tmp:
        os.makedirs(tmp)
        for name in names:
            shutil.copyfile(os.path.join(source_dir, name), os.path.join(tmp, name))
        if os.path.isdir(target_dir):
            shutil.rmtree(target_dir)


def preprocessed_copies(source: str, target: str, plans: str, configurations: Sequence[str],
                        cases: Sequence[str]) -> List[Tuple[str, List[str], str]]:
    """(source folder, file names, target folder) for every folder share-plans -c copies: the reference
    segmentations (``layout.GT_SEGMENTATIONS``), then each configuration's arrays (nnU-Net's trainer reads those, so they
    come last); source, target: preprocessed dataset folders. Checks that every case is there, writes nothing."""
    from nnunet_mt.nnunet_glue import data_identifier
    folders = [(layout.GT_SEGMENTATIONS, "reference segmentation")] if configurations else []
    folders += [(data_identifier(layout.plans_file(source, plans), c), f"preprocessed {c} array")
                for c in configurations]
    return [(os.path.join(source, sub), case_files(os.path.join(source, sub), cases, what), os.path.join(target, sub))
            for sub, what in folders]


def share_plans_and_splits(source: str, targets: Sequence[str], plans: str = layout.DEFAULT_PLANS,
                           configurations: Sequence[str] = (), folds: Optional[Sequence[int]] = None,
                           log=print) -> None:
    """source, targets: dataset ids or names. Writes each target's plans (the source's) and folds file
    (the source's folds restricted to the target's cases), and the target's own dataset fingerprint with
    nnU-Net's extractor if it has none (nnUNetv2_train copies it); writes the source's folds first
    (stratified by source dataset) if it has none yet. configurations: also copies the source's preprocessed
    arrays of each target's cases instead of nnUNetv2_preprocess. folds: those each target must be able to train
    (a training and a validation case in each; default all), where a target with fewer subjects than folds
    cannot fill every fold. Every check comes before the first write."""
    from nnunet_mt.nnunet_glue import dataset_name, extract_fingerprint, move_plans, required_folder
    nnUNet_raw, nnUNet_preprocessed = required_folder("nnUNet_raw"), required_folder("nnUNet_preprocessed")
    source_name = dataset_name(source)
    source_folder = os.path.join(nnUNet_preprocessed, source_name)
    splits_file = layout.splits_file(source_folder)
    source_plans = layout.plans_file(source_folder, plans)
    if not os.path.isfile(source_plans):
        raise InputError(f"{source_plans}: missing; run nnUNetv2_plan_and_preprocess for the source dataset first")
    raw_folder = os.path.join(nnUNet_raw, source_name)
    training_cases_by_source(raw_folder)  # refuses a dataset that nnunet_mt merge did not make
    write_splits = not os.path.isfile(splits_file)
    if write_splits:
        splits = merged_dataset_splits(load_dataset_json(raw_folder))
    else:
        with open(splits_file) as f:
            splits = json.load(f)
        refuse_leaking_splits(splits_file, splits, load_dataset_json(raw_folder))
    planned = []
    for target in targets:
        target_name = dataset_name(target)
        folder = os.path.join(nnUNet_preprocessed, target_name)
        try:
            cases = [c for cs in training_cases_by_source(os.path.join(nnUNet_raw, target_name)).values() for c in cs]
            restricted = restrict_splits(splits, cases, folds)
        except InputError as e:
            raise InputError(f"{splits_file}: {e} ({target_name})")
        planned.append((target_name, folder, restricted, preprocessed_copies(source_folder, folder, plans,
                                                                             configurations, cases)))
    if write_splits:
        write_text_atomic(splits_file, json.dumps(splits, indent=1))
    for target_name, folder, restricted, copies in planned:
        os.makedirs(folder, exist_ok=True)
        if not os.path.isfile(os.path.join(folder, layout.FINGERPRINT_FILE)):
            extract_fingerprint(target_name)
        # nnUNetv2_preprocess reads dataset.json from here (nnUNetv2_plan_and_preprocess would have copied it)
        shutil.copyfile(os.path.join(nnUNet_raw, target_name, layout.DATASET_JSON), os.path.join(folder, layout.DATASET_JSON))
        move_plans(source_name, target_name, plans)
        write_text_atomic(layout.splits_file(folder), json.dumps(restricted, indent=1))
        log(f"{target_name}: plans '{plans}' of {source_name}, {len(restricted)} folds restricted to its "
            f"{len(restricted[0]['train']) + len(restricted[0]['val'])} cases")
        empty = untrainable_folds(restricted)
        if empty:
            log(f"{target_name}: fold(s) {' '.join(map(str, empty))} hold no validation case of it (fewer subjects "
                f"than folds) and cannot be trained")
        for source_dir, names, target_dir in copies:
            copy_files(source_dir, names, target_dir)
            log(f"{target_name}: {os.path.basename(target_dir)} of {source_name} copied ({len(names)} files)")
